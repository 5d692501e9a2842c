"""The web UI's logic as plain functions (no Gradio here), so that it can be unit-tested.

The page's fields form a flat dict (`FIELDS`, the names the layout in app.py uses). `fields_to_settings` turns
it into a job dict (`twosamplers.job.Job`'s flat format: what the CLI's flags and the PNG metadata are),
validated by the job layer, and `settings_to_fields` goes back, so "Load settings from PNG" restores every field
of a PNG made by the CLI or the UI. Regions beyond the first (regional mode) go under the key "regions" here and
into their own PNG text chunk ("twosamplers-regions", each with its mask as an embedded PNG); the job layer reads
that chunk as the job's regions 2.., so `twosamplers generate --from` renders every region (issue 24; the page
itself moves to building a Job with regions in a later step).

Masks come from the canvas's layers: layer i's alpha is region i (painting makes it opaque, the eraser makes
it transparent again). An uploaded mask replaces region 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .._checks import MAX_IMAGE_SIDE
from ..imageio import encode_mask_png
from ..job import PASS_KEYS, Job, JobError, PassSpec, Region, job_keys
from ..mask_ops import feather, grow
from ..models.registry import defaults_for

MAX_REGIONS = 3
MODES = ("two-pass", "interleaved", "regional")
REGIONAL_ALGORITHMS = ("interleaved", "joint")  # mode "regional": a sampler per region, or one joint pass
REGIONS_KEY = "twosamplers-regions"  # PNG text chunk of regions 2.. (regional mode with several regions)
# the per-pass number/choice fields; a pass's LoRAs and ControlNets are text fields of one line per entry
UI_PASS_KEYS = tuple(k for k in PASS_KEYS if k not in ("controlnets", "loras", "model"))
LIST_KEYS = ("loras", "controlnets")
REGION_KEYS = ("prompt",) + UI_PASS_KEYS + LIST_KEYS
PASS_FIELDS = tuple(f"{which}_{k}" for which in ("base", "mask") for k in REGION_KEYS)
# "model" is the base panel's model (the job's model: also the VAE); "mask_model", "r2_model", ... the others'
GLOBAL_FIELDS = ("model", "mask_model", "mode", "regional_algorithm", "grow", "feather", "crop_to_mask",
                 "differential", "width", "height", "use_image")
EXTRA_FIELDS = tuple(f"r{i}_{k}" for i in range(2, MAX_REGIONS + 1) for k in ("model",) + REGION_KEYS)
FIELDS = GLOBAL_FIELDS + PASS_FIELDS + EXTRA_FIELDS
INT_KEYS = ("seed", "steps")
FLOAT_KEYS = ("cfg", "denoise")
REGION_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 220, 96))  # overlay colour of regions 1, 2, 3
UI_MASK_NAME = "ui-canvas"  # the job's `mask` field: the mask itself is embedded in the PNG
# a mask/region model dropdown's "same as base" choice (the job's mask_model None); not empty, which Gradio's
# dropdown would show as a blank box
SAME_MODEL = "same as base"
# job keys the page sets from a widget (or from the models folder: lora_dir, embeddings); the others are "kept":
# carried over from a loaded PNG (clip_skip, comfyui_version, base_model, ...) so that it renders again the same
# (mask_channel and invert_mask describe how a mask file is read: the page's mask is the mask as used)
PAGE_KEYS = frozenset({"model", "mask", "mask_channel", "invert_mask", "mode", "grow", "feather", "crop_to_mask",
                       "differential", "width", "height", "image", "mask_model"}
                      | {f"{w}_{k}" for w in ("base", "mask") for k in ("prompt",) + REGION_KEYS})
FOLDER_KEYS = ("lora_dir", "embeddings")  # kept only when the page's models folder gives none
KEPT_KEYS = tuple(k for k in job_keys() if k not in PAGE_KEYS)
LORA_LINE = "FILE:STRENGTH[:CLIP_STRENGTH]"
CONTROLNET_LINE = "FILE:HINT_IMAGE:STRENGTH:START:END"


class UIError(Exception):
    """A problem with what the user gave; shown in the page as one sentence."""


def default_fields(model: str = "textures") -> dict:
    """The page's starting values: the demo's settings (grass outside, brick inside, feather 2, crop)."""
    f = {"model": model, "mode": "two-pass", "regional_algorithm": "interleaved", "grow": 0,
         "feather": 2.0, "crop_to_mask": True, "differential": False, "width": 256, "height": 256,
         "use_image": False}
    spec = PassSpec()
    cfg = defaults_for(model).cfg
    prompts = {"base": "grass", "mask": "brick", "r2": "water", "r3": "sand"}
    for i, prefix in enumerate(("base", "mask", "r2", "r3")):
        f[f"{prefix}_prompt"] = prompts[prefix] if model in ("textures", "ideal") else ""
        for k in UI_PASS_KEYS:
            f[f"{prefix}_{k}"] = getattr(spec, k) if k != "cfg" else cfg
        f[f"{prefix}_seed"] = max(0, i - 1)
        f[f"{prefix}_loras"] = f[f"{prefix}_controlnets"] = ""
        if prefix.startswith("r"):
            f[f"{prefix}_model"] = SAME_MODEL
    f["mask_model"] = SAME_MODEL
    return f


# ------------------------------------------------------------------------------------------ fields <-> settings
def _label(field: str) -> str:
    """A job field name as the page names it: "mask_steps" -> "mask steps", "region2_cfg" -> "region 2 cfg"."""
    if field.startswith("regions["):  # the job's regions[i] (0-based) is the page's region i + 1
        index, _, rest = field[len("regions["):].partition("]")
        return f"region {int(index) + 1} {rest.lstrip('.')}".strip() if index.isdigit() else field
    return field.replace("region", "region ").replace("_", " ")


def _number(name: str, v, integer: bool):
    """A page value (Gradio gives floats, strings or None) as the int/float the job expects; ranges are the
    job layer's business."""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise UIError(f"{name} is empty")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UIError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise UIError(f"{name} must be a finite number, got {v!r}")
    if not integer:
        return f
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if f != int(f):
        raise UIError(f"{name} must be a whole number, got {v!r}")
    return int(f)


def _pass(fields: dict, prefix: str, label: str, folders: dict) -> dict:
    out = {"prompt": str(fields.get(f"{prefix}_prompt") or ""), "negative": str(fields.get(f"{prefix}_negative")
                                                                                 or "")}
    for k in INT_KEYS + FLOAT_KEYS:
        out[k] = _number(f"{label} {k}", fields.get(f"{prefix}_{k}"), k in INT_KEYS)
    out["sampler"], out["scheduler"] = fields.get(f"{prefix}_sampler"), fields.get(f"{prefix}_scheduler")
    out["loras"] = lora_entries(fields.get(f"{prefix}_loras"))
    out["controlnets"] = controlnet_entries(fields.get(f"{prefix}_controlnets"), folders.get("controlnet"))
    return out


def fields_to_settings(fields: dict, n_regions: int = 1, models_dir: str | os.PathLike | None = None,
                       kept: dict | None = None) -> dict:
    """The page's fields -> a normalised job dict (`Job.to_dict()`), validated by the job layer; errors name the
    field as the page does. `n_regions` > 1 (regional mode) adds "regions": the validated passes of regions 2..n
    (prompt, model, negative, seed, steps, cfg, sampler, scheduler, denoise, loras, controlnets). `models_dir`
    (the page's --models) gives the job its LoRA folder, its embeddings folder (when a prompt names an
    embedding) and the ControlNet folder that short ControlNet names are in. `kept`: job fields the page has no
    widget for, carried from a loaded PNG (see `kept_settings`); they are validated with the rest."""
    mode = fields.get("mode")
    if mode not in MODES:
        raise UIError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    algorithm = fields.get("regional_algorithm") or "interleaved"
    if algorithm not in REGIONAL_ALGORITHMS:
        raise UIError(f"regions sampled must be one of {', '.join(REGIONAL_ALGORITHMS)}, got {algorithm!r}")
    folders = model_folders(models_dir)
    two_pass = mode == "two-pass"
    d = {"model": str(fields.get("model") or "textures"), "mask": UI_MASK_NAME,
         "mode": "joint" if mode == "regional" and algorithm == "joint" else mode,
         "grow": _number("grow", fields.get("grow"), True), "feather": _number("feather", fields.get("feather"), False),
         "crop_to_mask": bool(fields.get("crop_to_mask")) and two_pass,
         "differential": bool(fields.get("differential")) and two_pass,
         "width": _number("width", fields.get("width"), True), "height": _number("height", fields.get("height"), True)}
    passes = {which: _pass(fields, which, which, folders) for which in ("base", "mask")}
    for which, p in passes.items():
        d[f"{which}_prompt"] = p.pop("prompt")
        d.update({f"{which}_{k}": v for k, v in p.items()})
    if own_model(fields.get("mask_model")):  # the job's mask_model (the base panel's model is the job's model)
        d["mask_model"] = str(fields["mask_model"])
    regions = []
    if n_regions > 1:
        if mode != "regional":
            raise UIError(f"{n_regions} regions are painted, but several regions need mode 'regional' "
                          f"(mode is {mode!r}); switch the mode or clear the extra layers")
        if n_regions > MAX_REGIONS:
            raise UIError(f"at most {MAX_REGIONS} regions (canvas layers) are supported, got {n_regions}")
        regions = [_pass(fields, f"r{i}", f"region {i}", folders) for i in range(2, n_regions + 1)]
    _set_folders(d, folders, [d["base_prompt"], d["mask_prompt"], d["base_negative"], d["mask_negative"]]
                 + [r["prompt"] + r["negative"] for r in regions])
    _merge_kept(d, kept)
    try:
        out = Job.from_dict(d, mask_tensor=torch.zeros(1, 1)).to_dict()
    except JobError as e:
        raise UIError(f"{_label(e.field)}: {e.message}") from None
    if regions:
        out["regions"] = [validate_region(dict(r, model=str(fields.get(f"r{i}_model") or SAME_MODEL)), i,
                                          out["model"]) for i, r in enumerate(regions, start=2)]
    return out


def _merge_kept(d: dict, kept: dict | None) -> None:
    for k, v in (kept or {}).items():
        if k not in KEPT_KEYS:
            raise UIError(f"{k!r} cannot be kept from a PNG: the page has a field for it (or it is no job field)")
        if k not in FOLDER_KEYS or d.get(k) is None:
            d[k] = v


def _job_defaults() -> dict:
    """The value each kept key has in a job the page makes without a loaded PNG."""
    return {k: v for k, v in Job(base_prompt="", regions=(Region("", UI_MASK_NAME),)).to_dict().items()
            if k in KEPT_KEYS}


def kept_settings(settings: dict) -> dict:
    """A loaded job dict's fields the page has no widget for and whose value differs from what the page gives
    (clip_skip, comfyui_version, inversion, base_model, ...): what the page keeps and adds at Generate."""
    defaults = _job_defaults()
    return {k: settings[k] for k in KEPT_KEYS if settings.get(k) is not None and settings[k] != defaults.get(k)}


def kept_line(kept: dict | None) -> str:
    """The page's one read-only line about the kept fields ("" when none)."""
    if not kept:
        return ""
    return "kept from the PNG (no field on this page): " + ", ".join(
        f"{k} {v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(kept.items()))


def own_model(name) -> str | None:
    """A mask/region model field's own model, or None for "same as base" (or empty)."""
    return None if name in (None, "", SAME_MODEL) else str(name)


def _set_folders(d: dict, folders: dict, texts: list[str]) -> None:
    """The job's LoRA folder, and its embeddings folder when a prompt names an embedding (a job with an
    embeddings folder needs a Stable Diffusion model, so it is not set for the built-in models' prompts)."""
    if folders.get("loras") is not None:
        d["lora_dir"] = str(folders["loras"])
    if folders.get("embeddings") is not None and any("embedding:" in t for t in texts):
        d["embeddings"] = str(folders["embeddings"])


def validate_region(region: dict, number: int, model: str) -> dict:
    """One extra region's pass, checked by the job layer's PassSpec (same limits as the base and mask passes).
    Its "model" is a checkpoint or SAME_MODEL (the base's)."""
    keys = UI_PASS_KEYS + LIST_KEYS
    try:
        spec = PassSpec(**{k: region[k] for k in keys if k in region}).validated(f"region{number}_",
                                                                                 defaults_for(model).cfg)
    except JobError as e:
        raise UIError(f"{_label(e.field)}: {e.message}") from None
    for k in ("prompt", "model"):
        if not isinstance(region.get(k, ""), str):
            raise UIError(f"region {number} {k} must be text")
    return {"prompt": region.get("prompt", ""), "model": own_model(region.get("model")) or SAME_MODEL,
            **{k: _plain(getattr(spec, k)) for k in keys}}


def _plain(v):
    return [dict(e) for e in v] if isinstance(v, tuple) else v


def settings_to_fields(settings: dict, current: dict | None = None,
                       models_dir: str | os.PathLike | None = None) -> dict:
    """A job dict (from the CLI or the UI) -> the page's fields. Keys the settings lack keep `current`'s values.
    LoRAs and ControlNets become one line each, files under the page's models folder by their short names."""
    folders = model_folders(models_dir)
    f = dict(current or default_fields(str(settings.get("model") or "textures")))
    for k in ("model", "mode", "grow", "feather", "crop_to_mask", "differential", "width", "height"):
        if settings.get(k) is not None:
            f[k] = settings[k]
    if f["mode"] == "joint":
        f["mode"], f["regional_algorithm"] = "regional", "joint"
    elif f["mode"] == "regional":
        f["regional_algorithm"] = "interleaved"
    f["mask_model"] = settings.get("mask_model") or SAME_MODEL
    passes = [(which, settings, f"{which}_") for which in ("base", "mask")]
    passes += [(f"r{i}", region, "") for i, region in enumerate(settings.get("regions") or [], start=2)
               if i <= MAX_REGIONS]
    for prefix, src, key in passes:
        for k in ("model",) + REGION_KEYS:
            v = src.get(key + k)
            if v is None or (k == "model" and not prefix.startswith("r")):
                continue
            if k == "loras":
                v = lora_lines(v, folders.get("loras"))
            elif k == "controlnets":
                v = controlnet_lines(v, folders.get("controlnet"))
            f[f"{prefix}_{k}"] = v
    f["use_image"] = bool(settings.get("image"))
    return f


# ------------------------------------------------------------------------------------------ LoRA / ControlNet lines
def _lines(text) -> list[str]:
    return [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]


def _num(x: float) -> str:
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _short(path: str, folder: Path | None) -> str:
    """A file under `folder` by its path relative to it (what the page's dropdowns list), others as given."""
    if folder is not None and Path(path).is_absolute():
        try:
            return str(Path(path).relative_to(folder))
        except ValueError:
            pass
    return path


def lora_entries(text) -> list[str]:
    """A LoRA text field (one "FILE:STRENGTH[:CLIP_STRENGTH]" per line; FILE a name in the models folder's
    loras/ or a path) -> the job's entries (the job layer checks them)."""
    return _lines(text)


def lora_lines(entries, folder: Path | None = None) -> str:
    """A job's LoRA entries (given or as recorded after a run) -> the text field. Recorded prompt tags
    (<lora:...> in the prompt) are left out: the prompt brings them back."""
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append(e)
            continue
        if e.get("source", "flag") == "tag":
            continue
        sm, sc = e.get("strength_model", 1.0), e.get("strength_clip", e.get("strength_model", 1.0))
        out.append(f"{_short(e['file'], folder)}:{_num(sm)}" + ("" if sc == sm else f":{_num(sc)}"))
    return "\n".join(out)


def controlnet_entries(text, folder: Path | None = None) -> list[str]:
    """A ControlNet text field (one "FILE:HINT_IMAGE:STRENGTH:START:END" per line; FILE a name in the models
    folder's controlnet/ or a path) -> the job's entries, FILE made absolute (the job layer checks the rest)."""
    out = []
    for line in _lines(text):
        name, sep, rest = line.partition(":")
        if folder is not None and not Path(name).is_absolute() and (folder / name).exists():
            name = str(folder / name)
        out.append(name + sep + rest)
    return out


def controlnet_lines(entries, folder: Path | None = None) -> str:
    """A job's ControlNets (normalised dicts) -> the text field."""
    return "\n".join(e if isinstance(e, str) else
                     f"{_short(e['file'], folder)}:{e['image']}:{_num(e['strength'])}:{_num(e['start_percent'])}:"
                     f"{_num(e['end_percent'])}" for e in entries or [])


def add_lora_line(text, name, strength, clip_strength) -> str:
    """The LoRA picker's "add": the text field with one more line (strengths checked as numbers here, ranges by
    the job layer when rendering)."""
    if not name:
        raise UIError("choose a LoRA to add")
    sm = _number("LoRA strength", strength, False)
    sc = sm if clip_strength is None or str(clip_strength).strip() == "" else _number("LoRA clip strength",
                                                                                       clip_strength, False)
    line = f"{name}:{_num(sm)}" + ("" if sc == sm else f":{_num(sc)}")
    return "\n".join(_lines(text) + [line])


def add_controlnet_line(text, name, hint_path, strength, start, end) -> str:
    """The ControlNet picker's "add": one more "FILE:HINT_IMAGE:STRENGTH:START:END" line."""
    if not name:
        raise UIError("choose a ControlNet to add")
    if not hint_path:
        raise UIError("upload a hint image for the ControlNet (e.g. an edge or depth map)")
    nums = [_number(n, v, False) for n, v in (("ControlNet strength", strength), ("ControlNet start", start),
                                             ("ControlNet end", end))]
    return "\n".join(_lines(text) + [f"{name}:{hint_path}:" + ":".join(_num(x) for x in nums)])


def regions_chunk(regions: list[dict], masks: list[torch.Tensor]) -> str:
    """The PNG text chunk of regions 2..: their passes, each with its mask as an embedded 8-bit PNG (hex)."""
    return json.dumps([dict(r, mask_png=encode_mask_png(m)) for r, m in zip(regions, masks, strict=True)],
                      sort_keys=True)


def load_png_settings(path: str | os.PathLike) -> tuple[dict, list[torch.Tensor]]:
    """A PNG written by the CLI or the UI -> (settings, masks of every region). Raises UIError when unreadable.

    The settings are the job's (validated by the job layer, as `twosamplers generate --from` reads them), plus
    "regions" when the PNG has the UI's regions chunk."""
    name = Path(path).name
    try:
        job = Job.from_png(path)
    except JobError as e:
        raise UIError(f"{name}: {_label(e.field)}: {e.message}") from None
    except (ValueError, FileNotFoundError) as e:
        raise UIError(f"cannot load settings from {name}: {e}") from None
    from dataclasses import replace

    if any(r.mask_tensor is None for r in job.regions):
        raise UIError(f"{name} carries settings but no embedded mask")
    # the page's format (until it builds Jobs itself): region 1 as the job's mask_* fields, regions 2.. apart
    settings = replace(job, regions=job.regions[:1]).to_dict()
    masks = [r.mask_tensor for r in job.regions]
    if len(job.regions) > 1:
        settings["regions"] = [validate_region({"prompt": r.prompt, "model": r.spec.model or SAME_MODEL,
                                                **{k: _plain(getattr(r.spec, k)) for k in UI_PASS_KEYS + LIST_KEYS}},
                                               j, settings["model"]) for j, r in enumerate(job.regions[1:], start=2)]
    return settings, masks


# ------------------------------------------------------------------------------------------ canvas -> masks
def _as_array(x) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, (str, os.PathLike)):
        from PIL import Image
        with Image.open(x) as im:
            return np.asarray(im.convert("RGBA"))
    return np.asarray(x)


def layer_mask(layer) -> torch.Tensor:
    """One canvas layer (H, W, 4) uint8 RGBA -> MASK (H, W) float32 in [0, 1]: its alpha (opaque = painted)."""
    a = _as_array(layer)
    if a.ndim != 3 or a.shape[2] not in (2, 4):
        raise UIError(f"a canvas layer must be an RGBA image, got an array of shape {a.shape}")
    return torch.from_numpy(a[..., -1].astype(np.float32) / np.float32(255.0))


def uploaded_mask(image) -> torch.Tensor:
    """An uploaded mask image -> MASK: its gray level (white = inside), or 1 - alpha where it has transparency."""
    a = _as_array(image)
    if a is None:
        raise UIError("no mask image was uploaded")
    if a.ndim == 2:
        gray = a.astype(np.float32)
    elif a.shape[2] == 4 and a[..., 3].min() < 255:  # transparency marks the area to repaint, as ComfyUI
        return torch.from_numpy(1.0 - a[..., 3].astype(np.float32) / np.float32(255.0))
    else:
        rgb = a[..., :3].astype(np.float32)
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # Pillow's "L"
    return torch.from_numpy(np.round(gray).astype(np.float32) / np.float32(255.0))


def mask_image(mask: torch.Tensor) -> np.ndarray:
    """A MASK as the mask upload shows it (white = inside, uint8 RGB); `uploaded_mask` reads it back exactly
    for 8-bit masks."""
    gray = np.clip(np.rint(mask.numpy().astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def canvas_masks(editor_value, mask_upload=None, loaded: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The editor's layers (and an optional uploaded mask, which replaces region 1) -> one MASK per region.

    `loaded`: the masks of a PNG loaded with "Load settings from PNG", used instead of the layers when no layer
    has a painted pixel (Gradio's editor can drop the layers a load sets; a stroke means the user repaints, and
    then the layers win). Trailing empty layers are dropped; an empty layer between painted ones stays (the
    region numbers are the layer numbers). Raises UIError when nothing is painted."""
    layers = []
    if isinstance(editor_value, dict):
        layers = [x for x in (editor_value.get("layers") or []) if x is not None]
    masks = [layer_mask(x) for x in layers]
    size = None
    bg = _as_array(editor_value.get("background")) if isinstance(editor_value, dict) else None
    if loaded and not any(float(m.max()) > 0.0 for m in masks):
        masks = [fit_mask(m, bg.shape[:2]) if bg is not None else m for m in loaded]
    if bg is not None:
        size = bg.shape[:2]
    elif masks:
        size = tuple(masks[0].shape)
    if mask_upload is not None:
        up = uploaded_mask(mask_upload)
        masks = [up if size is None else fit_mask(up, size)] + masks[1:]
    while masks and float(masks[-1].max()) == 0.0:
        masks.pop()
    if not masks:
        raise UIError("no mask: paint the region to change on the canvas (brush tool) or upload a mask")
    return masks


def fit_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """A mask resized to the canvas (h, w) as ComfyUI resizes masks; the aspect ratio must match."""
    if tuple(mask.shape) == tuple(size):
        return mask
    from ..imageio import check_aspect, resize_mask
    try:
        check_aspect(tuple(mask.shape), tuple(size))
    except ValueError as e:
        raise UIError(str(e)) from None
    return resize_mask(mask, *size)


def editor_background(editor_value) -> np.ndarray | None:
    if not isinstance(editor_value, dict):
        return None
    bg = _as_array(editor_value.get("background"))
    return None if bg is None else bg[..., :3] if bg.ndim == 3 else np.repeat(bg[..., None], 3, axis=-1)


def blank_canvas(width: int, height: int) -> dict:
    """A new editor value: a mid-grey background of the chosen size, no layers."""
    w, h = _number("width", width, True), _number("height", height, True)
    for name, v in (("width", w), ("height", h)):
        if not 8 <= v <= MAX_IMAGE_SIDE:
            raise UIError(f"{name} = {v} is out of range (8 .. {MAX_IMAGE_SIDE})")
    bg = np.full((h, w, 4), 255, np.uint8)
    bg[..., :3] = 128
    return {"background": bg, "layers": [], "composite": bg.copy()}


def editor_value(background: np.ndarray, masks: list[torch.Tensor]) -> dict:
    """An editor value with `background` (H, W, 3|4) and one layer per mask (alpha = mask, region colour)."""
    h, w = background.shape[:2]
    bg = np.full((h, w, 4), 255, np.uint8)
    bg[..., :3] = background[..., :3]
    layers = []
    for i, m in enumerate(masks):
        if tuple(m.shape) != (h, w):
            from ..imageio import resize_mask
            m = resize_mask(m, h, w)
        layer = np.zeros((h, w, 4), np.uint8)
        layer[..., :3] = REGION_COLOURS[i % len(REGION_COLOURS)]
        layer[..., 3] = np.clip(np.rint(m.numpy() * 255.0), 0, 255).astype(np.uint8)
        layers.append(layer)
    return {"background": bg, "layers": layers, "composite": None}


# ------------------------------------------------------------------------------------------ previews
def grown_feathered(mask: torch.Tensor, grow_px: int, feather_px: float) -> torch.Tensor:
    """The mask as the sampler sees it: grown (or shrunk) then feathered, in image pixels (the mask's own)."""
    m = mask
    if grow_px:
        m = grow(m, (int(grow_px), int(grow_px)))
    if feather_px > 0:
        m = feather(m, (float(feather_px), float(feather_px)))
    return m


def overlay(background: np.ndarray | None, masks: list[torch.Tensor], alpha: float = 0.55) -> np.ndarray:
    """Each region's mask tinted in its colour over the background (grey when there is none), uint8 (H, W, 3)."""
    h, w = masks[0].shape[-2:] if masks else background.shape[:2]
    base = np.full((h, w, 3), 128, np.float32) if background is None else background[..., :3].astype(np.float32)
    if base.shape[:2] != (h, w):
        raise UIError(f"the mask is {w}x{h} but the image is {base.shape[1]}x{base.shape[0]}")
    out = base
    for i, m in enumerate(masks):
        a = (m.numpy().astype(np.float32) * alpha)[..., None]
        out = out * (1 - a) + np.asarray(REGION_COLOURS[i % len(REGION_COLOURS)], np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_preview(editor_value, mask_upload, grow_px, feather_px, loaded=None) -> np.ndarray:
    """The grown/feathered regions over the canvas: what the "Preview mask" panel shows."""
    masks = canvas_masks(editor_value, mask_upload, loaded)
    g, f = _number("grow", grow_px, True), _number("feather", feather_px, False)
    if f < 0:
        raise UIError(f"feather = {f} must be at least 0")
    return overlay(editor_background(editor_value), [grown_feathered(m, g, f) for m in masks])


def cheap_preview(x0: torch.Tensor, latent_format, decode=None) -> np.ndarray:
    """The current x0 as a uint8 picture, cheaply: pixel-space models are decoded exactly (`decode`, a
    scale + shift); latent models show their first three latent channels, each stretched to 0..255 and
    upsampled by the model's downscale (a look at the layout, not the colours; no VAE call per step)."""
    x = x0[:1].detach().float().cpu()
    if int(latent_format.downscale) == 1 and decode is not None:
        img = decode(latent_format.process_out(x))[0]
        return np.clip(255.0 * img.numpy(), 0, 255).astype(np.uint8)
    c = x[0, :3]
    lo = c.amin(dim=(1, 2), keepdim=True)
    hi = c.amax(dim=(1, 2), keepdim=True)
    c = ((c - lo) / (hi - lo).clamp_min(1e-6)).permute(1, 2, 0)
    if c.shape[2] < 3:
        c = c[..., :1].expand(-1, -1, 3)
    k = int(latent_format.downscale)
    arr = np.clip(255.0 * c.numpy(), 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(arr, k, axis=0), k, axis=1)


def random_seed(rng=None) -> int:
    """The dice: a fresh seed (within JavaScript's exact integers, so the page shows it unchanged)."""
    import secrets
    return secrets.randbelow(2**53) if rng is None else int(rng.integers(0, 2**53))


# ------------------------------------------------------------------------------------------ models folder
MODEL_FOLDERS = {"checkpoints": ("checkpoints",), "loras": ("loras",), "controlnet": ("controlnet",),
                 "embeddings": ("embeddings",)}
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def scan_models(models_dir: str | os.PathLike | None) -> dict[str, list[str]]:
    """Files in a ComfyUI-style models folder: {"checkpoints": [...], "loras": [...], "controlnet": [...],
    "embeddings": [...]} as paths relative to their folder, sorted; diffusers folders (model_index.json) count
    as checkpoints. A missing folder gives empty lists."""
    out = {k: [] for k in MODEL_FOLDERS}
    if not models_dir:
        return out
    root = Path(models_dir).expanduser()
    if not root.is_dir():
        raise UIError(f"--models {models_dir}: not a folder")
    for kind, names in MODEL_FOLDERS.items():
        for name in names:
            folder = root / name
            if not folder.is_dir():
                continue
            for p in sorted(folder.rglob("*")):
                if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES:
                    out[kind].append(str(p.relative_to(folder)))
                elif kind == "checkpoints" and p.is_dir() and (p / "model_index.json").is_file():
                    out[kind].append(str(p.relative_to(folder)))
    return out


def home_short(path: str | os.PathLike, home: str | os.PathLike | None = None) -> str:
    """A path as the page shows it: under the home folder as "~/..." (shorter, and no user name on screen)."""
    p, h = Path(path).expanduser(), Path(home if home is not None else Path.home())
    try:
        rel = p.relative_to(h)
    except ValueError:
        return str(path)
    return "~" if str(rel) == "." else f"~/{rel.as_posix()}"


def model_folders(models_dir: str | os.PathLike | None) -> dict[str, Path | None]:
    """The models folder's subfolders that exist, as absolute paths: {"checkpoints", "loras", "controlnet",
    "embeddings"} -> Path or None."""
    out: dict[str, Path | None] = {k: None for k in MODEL_FOLDERS}
    if not models_dir:
        return out
    root = Path(models_dir).expanduser().resolve()
    for kind, names in MODEL_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                out[kind] = root / name
                break
    return out


def model_choices(models_dir, found: dict[str, list[str]], same_as_base: bool = False) -> list[tuple[str, str]]:
    """(label, value) pairs for a model dropdown: the built-in models, then the checkpoints found; the mask and
    region panels' dropdowns start with "same as base"."""
    choices = [(SAME_MODEL, SAME_MODEL)] if same_as_base else []
    choices += [("textures (built-in)", "textures"), ("ideal (built-in)", "ideal")]
    for rel in found.get("checkpoints", []):
        choices.append((rel, str(Path(models_dir).expanduser().resolve() / "checkpoints" / rel)))
    return choices


def save_input(image: np.ndarray, folder: str | os.PathLike) -> str:
    """An image the page uploaded (the img2img start, a ControlNet hint) saved as `folder`/inputs/<content
    hash>.png, so that the job (and the PNG metadata) can name it by path; the same pixels give the same path."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    arr = np.ascontiguousarray(arr[..., :3].astype(np.uint8))
    digest = hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]
    path = Path(folder) / "inputs" / f"{digest}.png"
    if not path.exists():
        from ..imageio import save_png
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, arr)
    return str(path.resolve())


# ------------------------------------------------------------------------------------------ what the server runs
def page_inputs(page_dir: str | os.PathLike) -> Path:
    """The folder of the images the page was given (uploads saved by `save_input`): start images, hints."""
    return Path(page_dir) / "inputs"


def confine_settings(settings: dict, models_dir: str | os.PathLike | None, page_dir: str | os.PathLike) -> dict:
    """The page's job dict as the server may run it. Whoever sends the fields (the page, a PNG loaded into it, any
    HTTP client) is not the local user, so every file the job names must be the page's own: models, LoRAs,
    ControlNets and embeddings under the models folder (`--models`), start images and hints among the page's
    inputs; the LoRA and embeddings folders are the models folder's. Raises UIError naming the field."""
    folders = model_folders(models_dir)
    s = dict(settings)
    s["lora_dir"] = str(folders["loras"]) if folders["loras"] is not None else None
    if s.get("embeddings") is not None:
        s["embeddings"] = str(folders["embeddings"]) if folders["embeddings"] is not None else None
    for key in ("model", "base_model", "mask_model"):
        if s.get(key) is not None:
            s[key] = _page_model(s[key], folders, _label(key))
    if s.get("image") is not None:
        s["image"] = _page_file(s["image"], [page_inputs(page_dir)], "start image", "the page's own uploads")
    for which in ("base", "mask"):
        s[f"{which}_loras"] = _page_loras(s.get(f"{which}_loras"), folders, f"{which} LoRAs")
        s[f"{which}_controlnets"] = _page_controlnets(s.get(f"{which}_controlnets"), folders, page_dir,
                                                      f"{which} ControlNets")
    regions = []
    for i, r in enumerate(s.get("regions") or [], start=2):
        r = dict(r)
        if own_model(r.get("model")) is not None:
            r["model"] = _page_model(r["model"], folders, f"region {i} model")
        r["loras"] = _page_loras(r.get("loras"), folders, f"region {i} LoRAs")
        r["controlnets"] = _page_controlnets(r.get("controlnets"), folders, page_dir, f"region {i} ControlNets")
        regions.append(r)
    if regions:
        s["regions"] = regions
    return s


def _page_file(path, roots: list, what: str, where: str) -> str:
    from .._paths import inside

    if not isinstance(path, str) or not path:
        raise UIError(f"{what} must be a file name, got {path!r}")
    try:
        return str(inside(path, [r for r in roots if r is not None], what))
    except ValueError:
        raise UIError(f"{what} {path!r} is not one of {where}; the page only opens files it was given") from None


def _page_model(name, folders: dict, label: str) -> str:
    from ..models.registry import REGISTRY

    if isinstance(name, str) and name in REGISTRY:
        return name
    where = "the checkpoints of the page's models folder (--models DIR)"
    path = _page_file(name, [folders["checkpoints"]], label, where)
    if not Path(path).exists():
        raise UIError(f"{label} {name!r} is not a file of {where}")
    return path


def _page_loras(entries, folders: dict, label: str) -> list:
    """LoRA entries (normalised dicts) as names inside the page's loras folder: an absolute path there becomes its
    relative name, anything else is refused; prompt-tag records stay (the prompt's tags resolve there too)."""
    from .._paths import name_in_folder

    out = []
    for e in entries or []:
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            raise UIError(f"{label}: malformed entry {e!r}")
        e = dict(e)
        if e.get("source", "flag") != "tag":
            root = folders["loras"]
            if root is None:
                raise UIError(f"{label}: LoRAs need a models folder with loras/ (start the page with --models DIR)")
            if Path(e["file"]).is_absolute():
                named = _page_file(e["file"], [root], label, "the page's LoRAs (--models DIR/loras)")
                e["file"] = _relative(named, root)
            try:
                name_in_folder(e["file"], root, "LoRA name")
            except ValueError as err:
                raise UIError(f"{label}: {err}") from None
            if not isinstance(e.get("name"), str) or Path(e["name"]).is_absolute() or ".." in e["name"]:
                e["name"] = e["file"]
        out.append(e)
    return out


def _relative(path: str, root: Path) -> str:
    """`path` (inside `root` by name or by its real location) relative to `root`."""
    for p, r in ((path, root), (path, os.path.realpath(root)), (os.path.realpath(path), os.path.realpath(root))):
        try:
            return Path(p).relative_to(r).as_posix()
        except ValueError:
            continue
    raise UIError(f"{path} is not inside {root}")


def _page_controlnets(entries, folders: dict, page_dir, label: str) -> list:
    """ControlNet entries (normalised dicts): the model under the page's controlnet folder, the hint among the
    page's own uploads."""
    out = []
    for c in entries or []:
        if not isinstance(c, dict):
            raise UIError(f"{label}: malformed entry {c!r}")
        c = dict(c)
        c["file"] = _page_file(c.get("file"), [folders["controlnet"]], f"{label} file",
                               "the ControlNets of the page's models folder (--models DIR)")
        c["image"] = _page_file(c.get("image"), [page_inputs(page_dir)], f"{label} hint image",
                                "the page's own uploads")
        out.append(c)
    return out


def error_message(e: BaseException) -> str:
    """One line for the page: the message of a user error, the type and message of anything else."""
    msg = " ".join(str(e).split())
    if isinstance(e, (UIError, ValueError, FileNotFoundError, TypeError, NotImplementedError)):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
