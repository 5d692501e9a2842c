"""The UI's one way to render: `render(settings, masks, ...)`, the single adapter between the page and the
library. It takes the CLI's settings dict (see handlers.fields_to_settings), samples with a per-step
callback that can stop the run between steps, and writes the PNG with the CLI's metadata.

Models are loaded once per process and kept (`ModelCache`); one lock per model makes runs on one model wait
for each other (two tabs share the machine), runs on different models can overlap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch


class Cancelled(Exception):
    """Raised from the step callback when the user pressed Cancel; the sampler stops between two steps."""


class ModelCache:
    """Loads each model once per process; `lock(name)` serialises runs on one model."""

    def __init__(self) -> None:
        self._models: dict[tuple, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(str(name), threading.Lock())

    def get(self, name: str, **options):
        from ..models import load

        key = (str(name), tuple(sorted(options.items())))
        with self._guard:
            model = self._models.get(key)
        if model is None:
            model = load(name, **options)
            with self._guard:
                self._models[key] = model
        return model


CACHE = ModelCache()
StepFn = Callable[[int, int, torch.Tensor, object], None]


def render(settings: dict, masks: list[torch.Tensor], *, output: str | Path, preview: str | Path | None = None,
           on_step: StepFn | None = None, cancel: threading.Event | None = None,
           cache: ModelCache = CACHE) -> dict:
    """Render one picture; returns {"image": path, "preview": path or None, "seconds": float, "settings": dict}.

    settings: the CLI's settings dict (+ "regions" for regions 2.. in regional mode, one mask per region).
    on_step(step, total, x0, model) is called after every sampler step; `cancel.set()` stops the run at the
    next step with Cancelled (nothing is written then)."""
    from ..cli import BadInput, validate_settings
    from ..front import SamplerSettings, regional_sample, two_samplers_for_mask
    from ..imageio import check_aspect, load_image, resize_mask, save_png, side_by_side, to_uint8
    from ..latent import empty_latent
    from .handlers import regions_for_png

    s = dict(settings)
    try:
        validate_settings(s)
    except BadInput as e:
        raise ValueError(str(e)) from None
    if len(masks) != 1 + len(s.get("regions") or []):
        raise ValueError(f"{len(masks)} masks for {1 + len(s.get('regions') or [])} regions")
    options = {k: s[k] for k in ("clip_skip", "prediction") if s.get(k) is not None}
    with cache.lock(s["model"]):
        t0 = time.perf_counter()
        model = cache.get(s["model"], **options)
        fmt = model.latent_format
        factor = int(fmt.downscale)
        w, h = s["width"], s["height"]
        pixels = None
        if s.get("image"):
            pixels = load_image(s["image"])
            if tuple(pixels.shape[1:3]) != (h, w):
                raise ValueError(f"the image is {pixels.shape[2]}x{pixels.shape[1]} but width x height is {w}x{h}")
        for key, v in (("width", w), ("height", h)):
            if v % factor:
                raise ValueError(f"{key} {v} is not a multiple of {factor}, which the model {s['model']!r} needs")
        for m in masks:
            check_aspect(tuple(m.shape[-2:]), (h, w))

        def settings_for(p: dict) -> SamplerSettings:
            return SamplerSettings(model=model, positive=model.encode_prompt(p["prompt"]),
                                   negative=model.encode_prompt(p["negative"]), seed=p["seed"], steps=p["steps"],
                                   cfg=float(p["cfg"]), sampler_name=p["sampler"], scheduler=p["scheduler"],
                                   denoise=float(p["denoise"]))

        def pass_of(which: str) -> dict:
            return {k: s[f"{which}_{k}"] for k in ("prompt", "negative", "seed", "steps", "cfg", "sampler",
                                                    "scheduler", "denoise")}

        base, inside = settings_for(pass_of("base")), settings_for(pass_of("mask"))
        extra = [settings_for(r) for r in s.get("regions") or []]
        latent = ({"samples": model.encode_image(pixels)} if pixels is not None
                  else empty_latent(w, h, channels=fmt.channels, downscale=factor))
        two_pass = s["mode"] == "two-pass" and not extra
        n_base = max(0, len(base.sigmas()) - 1) if two_pass else -1
        captured: dict = {}

        def callback(step, x0, x, total):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if step == n_base - 1:
                captured["base"] = x0.detach().clone()
            if on_step is not None:
                on_step(step, total, x0, model)

        common = dict(grow=s["grow"], feather=float(s["feather"]), overlap_factor=s["overlap_factor"],
                      base_only_steps=s["base_only_steps"], callback=callback, disable_pbar=True)
        if extra:
            result = regional_sample(latent, base, list(zip(masks, [inside] + extra, strict=True)), **common)
        else:
            result = two_samplers_for_mask(latent, masks[0], base, inside, mode=s["mode"], inversion=s["inversion"],
                                           base_covers_mask=s["base_covers_mask"], differential=s["differential"],
                                           crop_to_mask=s["crop_to_mask"], crop_context=s["crop_context"], **common)
        samples = result["samples"]
        image = model.decode_latent(samples)
        base_image = (model.decode_latent(fmt.process_out(captured["base"]))[0] if "base" in captured else None)
    seconds = time.perf_counter() - t0

    from .. import __version__
    stored = regions_for_png(s, masks)
    stored["twosamplers_version"] = __version__
    save_png(output, image[:1], settings=stored, mask=masks[0])
    out = {"image": str(output), "preview": None, "seconds": round(seconds, 3), "settings": stored}
    if preview is not None:
        tiles = []
        for m in masks:
            tiles.append(to_uint8(resize_mask(m, h, w)[..., None].expand(h, w, 3).clamp(0, 1)))
        if base_image is not None:
            tiles.append(to_uint8(base_image))
        tiles.append(to_uint8(image[0]))
        save_png(preview, side_by_side(tiles))
        out["preview"] = str(preview)
    return out
