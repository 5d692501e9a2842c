"""The UI's one way to render: `render(settings, masks, ...)`, the single adapter between the page and the
library. The settings are a job dict (see handlers.fields_to_settings); one region runs through the job layer
exactly as `twosamplers generate` does (`prepare_job` -> `render` -> `write_outputs`, so the PNG carries the
CLI's metadata); several regions (regional mode) use the same prepared job and `front.regional_sample`.

Models are loaded once per process (the job layer's `ModelCache`); one lock per model, and a run holds the locks of
every model it uses (base, mask, regions), so runs sharing a model wait for each other (two tabs share the
machine), while runs on different models can overlap. The step
callback raises `Cancelled` once the cancel flag is set, which stops the sampler between two steps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..job import Job, ModelCache, Outputs, check_outputs, metadata, prepare_job, write_outputs
from ..job import render as render_job
from ..models.registry import DEFAULT_MODEL
from .handlers import own_model
from .regions import joint_note, region_settings


class Cancelled(Exception):
    """Raised from the step callback when the user pressed Cancel; the sampler stops between two steps."""


class ModelLocks:
    """One lock per model name: runs on one model take turns."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(str(name), threading.Lock())

    @contextlib.contextmanager
    def hold(self, names) -> Iterator[None]:
        """Every named model's lock, taken in sorted order (two runs sharing models cannot deadlock)."""
        with contextlib.ExitStack() as stack:
            for name in sorted({str(n) for n in names}):
                stack.enter_context(self.lock(name))
            yield


def models_used(settings: dict) -> list[str]:
    """Every model a render of `settings` samples or decodes with: the job's, its passes' and its regions'."""
    names = [settings.get("model") or DEFAULT_MODEL, settings.get("base_model"), settings.get("mask_model"),
             *(r.get("model") for r in settings.get("regions") or [])]
    return list(dict.fromkeys(m for m in map(own_model, names) if m is not None))


MODELS = ModelCache()
LOCKS = ModelLocks()
StepFn = Callable[[int, int, torch.Tensor, object], None]


def render(settings: dict, masks: list[torch.Tensor], *, output: str | Path, preview: str | Path | None = None,
           on_step: StepFn | None = None, cancel: threading.Event | None = None, cache: ModelCache = MODELS,
           locks: ModelLocks = LOCKS) -> dict:
    """Render one picture; returns {"image": path, "preview": path or None, "seconds": float, "settings": dict,
    "note": a line for the page or None (e.g. why mode "joint" fell back to interleaving)}.

    settings: a job dict, plus "regions" (regions 2.., regional mode) with one mask per region in `masks`.
    on_step(step, total, x0, model) is called after every sampler step; `cancel.set()` stops the run at the
    next step with Cancelled (nothing is written then). Bad input raises ValueError (JobError) before sampling."""
    s = dict(settings)
    regions = s.pop("regions", None) or []
    if len(masks) != 1 + len(regions):
        raise ValueError(f"{len(masks)} masks for {1 + len(regions)} regions")
    # the page is not the local user: its job never downloads a model, and LoRA entries are names in lora_dir
    job = Job.from_dict(s, mask_tensor=masks[0], trusted=frozenset())
    outputs = Outputs(image=str(output), preview=None if preview is None else str(preview))
    check_outputs(outputs, job)
    with locks.hold(models_used(settings)):
        prep = prepare_job(job, cache)
        model = prep.model

        def callback(step, x0, x, total):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if on_step is not None:
                on_step(step, total, x0, model)

        if regions:
            result, note = _render_regions(prep, regions, masks, callback, cache)
        else:
            note = None
            result = render_job(prep, callback=callback, disable_pbar=True, want_base_preview=preview is not None)
    if regions:
        _write_regions(result, regions, masks, outputs)
    else:
        write_outputs(result, outputs)
    stored = metadata(result.job)
    if regions:
        stored["regions"] = regions
    return {"image": str(output), "preview": outputs.preview, "seconds": round(result.seconds, 3),
            "settings": stored, "note": note}


def _render_regions(prep, regions: list[dict], masks: list[torch.Tensor], callback, cache: ModelCache):
    """Regional mode with several regions: the job's base pass, its mask pass as region 1, then `regions`.
    Returns (the result, a note for the page or None)."""
    from ..front import regional_sample
    from ..imageio import check_aspect
    from ..job import JobResult
    from ..job.run import pass_settings
    from ..latent import empty_latent

    t0 = time.perf_counter()
    job, model = prep.job, prep.model
    fmt = model.latent_format
    for i, m in enumerate(masks[1:], start=2):
        try:
            check_aspect(tuple(m.shape[-2:]), (job.height, job.width))
        except ValueError as e:
            raise ValueError(f"region {i}: {e}") from None

    # the job's passes exactly as `twosamplers generate` makes them (LoRAs, ControlNets, embeddings); regions 2..
    base = pass_settings(prep, "base")
    passes = [pass_settings(prep, "mask")] + [region_settings(prep, r, i, cache)
                                              for i, r in enumerate(regions, start=2)]
    mode = "joint" if job.mode == "joint" else "interleaved"
    note = joint_note(base, passes) if mode == "joint" else None
    if prep.pixels is not None:
        latent = {"samples": model.encode_image(prep.pixels)}
    else:
        latent = empty_latent(job.width, job.height, channels=fmt.channels, downscale=int(fmt.downscale))
    out = regional_sample(latent, base, list(zip(masks, passes, strict=True)), mode=mode, grow=job.grow,
                          feather=job.feather, overlap_factor=job.overlap_factor,
                          base_only_steps=job.base_only_steps, callback=callback, disable_pbar=True)
    image = model.decode_latent(out["samples"])
    return JobResult(job, masks[0], image, out["samples"], None, time.perf_counter() - t0), note


def _write_regions(result, regions: list[dict], masks: list[torch.Tensor], outputs: Outputs) -> None:
    """The job's PNG (its metadata and region 1's mask, as the CLI writes them) plus the regions chunk, and a
    preview strip mask 1 | mask 2 | ... | result; written together, atomically."""
    from .._files import atomic_write_all
    from ..imageio import png_writer, resize_mask, side_by_side, to_uint8
    from .handlers import REGIONS_KEY, regions_chunk

    text = {REGIONS_KEY: regions_chunk(regions, masks[1:])}
    writers = [(outputs.image, png_writer(result.image[:1], settings=metadata(result.job), mask=masks[0],
                                          text=text))]
    if outputs.preview is not None:
        h, w = result.image.shape[1:3]
        tiles = [to_uint8(resize_mask(m, h, w)[..., None].expand(h, w, 3).clamp(0, 1)) for m in masks]
        tiles.append(to_uint8(result.image[0]))
        writers.append((outputs.preview, png_writer(side_by_side(tiles), text={"twosamplers-preview":
                                                                               "masks | result"})))
    atomic_write_all(writers)
