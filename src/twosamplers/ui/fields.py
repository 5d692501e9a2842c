"""The page's fields <-> a job dict, both ways, validated by the job layer.

The page's fields form a flat dict (`FIELDS`, the names app.py's widgets use): global fields, then one panel per
pass, each a prefix: `base` (the base pass: outside every region), `mask` (region 1: the two-pass job's mask
pass), `r2`, `r3` (regions 2 and 3, mode regional). `fields_to_settings` makes the job dict (the CLI's flags, a
batch line and the PNG metadata are the same dict): its `regions` list holds every painted region, each with the
mask `UI_MASK_NAME` (the mask itself is a tensor: painted, uploaded or loaded, embedded in the PNG) and its
panel's pass; `Job.from_dict` checks it all, and the job layer's errors come back named as the page labels its
fields ("region 2 cfg: ..."). `settings_to_fields` goes back from any job dict (one region written flat, or
several in `regions`), so "Load settings from PNG" restores a PNG made by the CLI, a batch or the page.

Job fields the page has no widget for (clip_skip, comfyui_version, base_model, ...) are "kept": carried from a
loaded PNG into the job at Generate (`kept_settings`: the job layer's `kept_fields`; `fields_to_settings(...,
kept=...)` lays the page's fields over them with the job layer's `merge`, as `generate --from` does).
"""

from __future__ import annotations

import json
import os

import torch

from ..job import PASS_KEYS, Job, PassSpec, job_keys
from ..job.forms import merge, regions_form
from ..job.spec import kept_fields
from ..models.registry import defaults_for
from .lines import controlnet_entries, controlnet_lines, lora_entries, lora_lines
from .models import SAME_MODEL, model_folders, own_model
from .values import UIError, number, page_errors

MAX_REGIONS = 3  # the page's region panels: mask / region 1, region 2, region 3 (canvas layers 1..3)
MODES = ("two-pass", "interleaved", "regional")
REGIONAL_ALGORITHMS = ("interleaved", "joint")  # mode "regional": a sampler per region, or one joint pass
# the per-pass number/choice fields; a pass's LoRAs and ControlNets are text fields of one line per entry
UI_PASS_KEYS = tuple(k for k in PASS_KEYS if k not in ("controlnets", "loras", "model"))
LIST_KEYS = ("loras", "controlnets")
PANEL_KEYS = ("prompt",) + UI_PASS_KEYS + LIST_KEYS
REGION_PREFIXES = ("mask",) + tuple(f"r{i}" for i in range(2, MAX_REGIONS + 1))  # region i's panel
PASS_FIELDS = tuple(f"{which}_{k}" for which in ("base", "mask") for k in PANEL_KEYS)
# "model" is the base panel's model (the job's model: also the VAE); "mask_model", "r2_model", ... the regions'
GLOBAL_FIELDS = ("model", "mask_model", "mode", "regional_algorithm", "grow", "feather", "crop_to_mask",
                 "differential", "width", "height", "use_image")
EXTRA_FIELDS = tuple(f"{p}_{k}" for p in REGION_PREFIXES[1:] for k in ("model",) + PANEL_KEYS)
FIELDS = GLOBAL_FIELDS + PASS_FIELDS + EXTRA_FIELDS
INT_KEYS = ("seed", "steps")
FLOAT_KEYS = ("cfg", "denoise")
UI_MASK_NAME = "ui-canvas"  # every region's `mask` field: the mask itself is a tensor, embedded in the PNG
# job keys the page sets from a widget (or from the models folder: lora_dir, embeddings); the others are "kept":
# carried over from a loaded PNG (clip_skip, comfyui_version, base_model, ...) so that it renders again the same
# (mask_channel and invert_mask describe how a mask file is read: the page's masks are the masks as used)
PAGE_KEYS = frozenset({"model", "mask", "mask_channel", "invert_mask", "mode", "grow", "feather", "crop_to_mask",
                       "differential", "width", "height", "image", "mask_model"}
                      | {f"{w}_{k}" for w in ("base", "mask") for k in PANEL_KEYS})
KEPT_KEYS = tuple(k for k in job_keys() if k not in PAGE_KEYS)


def default_fields(model: str = "textures") -> dict:
    """The page's starting values: the demo's settings (grass outside, brick inside, feather 2, crop)."""
    f = {"model": model, "mode": "two-pass", "regional_algorithm": "interleaved", "grow": 0,
         "feather": 2.0, "crop_to_mask": True, "differential": False, "width": 256, "height": 256,
         "use_image": False}
    spec = PassSpec()
    cfg = defaults_for(model).cfg
    prompts = {"base": "grass", "mask": "brick", "r2": "water", "r3": "sand"}
    for i, prefix in enumerate(("base",) + REGION_PREFIXES):
        f[f"{prefix}_prompt"] = prompts[prefix] if model in ("textures", "ideal") else ""
        for k in UI_PASS_KEYS:
            f[f"{prefix}_{k}"] = getattr(spec, k) if k != "cfg" else cfg
        f[f"{prefix}_seed"] = max(0, i - 1)
        f[f"{prefix}_loras"] = f[f"{prefix}_controlnets"] = ""
        if prefix != "base":
            f[model_field(prefix)] = SAME_MODEL
    return f


def model_field(prefix: str) -> str:
    """The model field of a panel: the base's is the job's `model`, region 1's `mask_model`, others `rN_model`."""
    return "model" if prefix == "base" else f"{prefix}_model"


def random_seed(rng=None) -> int:
    """The dice: a fresh seed (within JavaScript's exact integers, so the page shows it unchanged)."""
    import secrets
    return secrets.randbelow(2**53) if rng is None else int(rng.integers(0, 2**53))


# ------------------------------------------------------------------------------------------ fields -> job dict
def _panel(fields: dict, prefix: str, name: str, folders: dict) -> dict:
    """One panel's pass as job keys (prompt, negative, numbers, sampler, scheduler, LoRA and ControlNet entries,
    and the region's own model); `name` is the panel as errors name it."""
    out = {"prompt": str(fields.get(f"{prefix}_prompt") or ""),
           "negative": str(fields.get(f"{prefix}_negative") or "")}
    for k in INT_KEYS + FLOAT_KEYS:
        out[k] = number(f"{name} {k}", fields.get(f"{prefix}_{k}"), k in INT_KEYS)
    out["sampler"], out["scheduler"] = fields.get(f"{prefix}_sampler"), fields.get(f"{prefix}_scheduler")
    out["loras"] = lora_entries(fields.get(f"{prefix}_loras"))
    out["controlnets"] = controlnet_entries(fields.get(f"{prefix}_controlnets"), folders.get("controlnet"))
    if prefix != "base" and own_model(fields.get(model_field(prefix))) is not None:
        out["model"] = str(fields[model_field(prefix)])
    return out


def _mode(fields: dict, n_regions: int) -> str:
    """The job's mode: the page's mode, "joint" for regional + joint; several regions need mode regional."""
    mode = fields.get("mode")
    if mode not in MODES:
        raise UIError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    algorithm = fields.get("regional_algorithm") or "interleaved"
    if algorithm not in REGIONAL_ALGORITHMS:
        raise UIError(f"regions sampled must be one of {', '.join(REGIONAL_ALGORITHMS)}, got {algorithm!r}")
    if n_regions > 1 and mode != "regional":
        raise UIError(f"{n_regions} regions are painted, but several regions need mode 'regional' "
                      f"(mode is {mode!r}); switch the mode or clear the extra layers")
    if not 1 <= n_regions <= MAX_REGIONS:
        raise UIError(f"1 to {MAX_REGIONS} regions (canvas layers) are supported, got {n_regions}")
    return "joint" if mode == "regional" and algorithm == "joint" else mode


def fields_to_settings(fields: dict, n_regions: int = 1, models_dir: str | os.PathLike | None = None,
                       kept: dict | None = None) -> dict:
    """The page's fields with `n_regions` painted regions -> the normalised job dict (`Job.to_dict()`: one region
    flat, several in `regions`), validated by the job layer; errors name the field as the page does.
    `models_dir` (the page's --models) gives the job its LoRA folder, its embeddings folder (when a prompt names
    an embedding) and the ControlNet folder that short ControlNet names are in. `kept`: job fields the page has
    no widget for, carried from a loaded PNG (see `kept_settings`); they are validated with the rest."""
    mode = _mode(fields, n_regions)
    two_pass = mode == "two-pass"
    folders = model_folders(models_dir)
    d = {"model": str(fields.get("model") or "textures"), "mode": mode,
         "grow": number("grow", fields.get("grow"), True), "feather": number("feather", fields.get("feather"), False),
         "crop_to_mask": bool(fields.get("crop_to_mask")) and two_pass,
         "differential": bool(fields.get("differential")) and two_pass,
         "width": number("width", fields.get("width"), True), "height": number("height", fields.get("height"), True)}
    base = _panel(fields, "base", "base", folders)
    d["base_prompt"] = base.pop("prompt")
    d.update({f"base_{k}": v for k, v in base.items()})
    d["regions"] = [{"mask": UI_MASK_NAME, **_panel(fields, prefix, "mask" if n_regions == 1 else f"region {i}",
                                                     folders)}
                    for i, prefix in enumerate(REGION_PREFIXES[:n_regions], start=1)]
    _set_folders(d, folders, [d["base_prompt"], d["base_negative"]]
                 + [r[k] for r in d["regions"] for k in ("prompt", "negative")])
    unknown = sorted(set(kept or {}) - set(KEPT_KEYS))
    if unknown:
        raise UIError(f"{unknown[0]!r} cannot be kept from a PNG: the page has a field for it (or it is no job field)")
    with page_errors():  # the page's fields over the kept ones (a folder the page gives wins), as --from merges
        d = merge(kept or {}, d)[0]  # the masks are the page's tensors; only their number matters here
        return Job.from_dict(d, mask_tensors=[torch.zeros(1, 1)] * n_regions).to_dict()


def _set_folders(d: dict, folders: dict, texts: list[str]) -> None:
    """The job's LoRA folder, and its embeddings folder when a prompt names an embedding (a job with an
    embeddings folder needs a Stable Diffusion model, so it is not set for the built-in models' prompts)."""
    if folders.get("loras") is not None:
        d["lora_dir"] = str(folders["loras"])
    if folders.get("embeddings") is not None and any("embedding:" in t for t in texts):
        d["embeddings"] = str(folders["embeddings"])


# ------------------------------------------------------------------------------------------ job dict -> fields
def settings_to_fields(settings: dict, current: dict | None = None,
                       models_dir: str | os.PathLike | None = None) -> dict:
    """A job dict (from the CLI, a batch or the page; one region flat or several in `regions`) -> the page's
    fields, regions 1..3 into their panels. Keys the settings lack keep `current`'s values. LoRAs and
    ControlNets become one line each, files under the page's models folder by their short names."""
    folders = model_folders(models_dir)
    f = dict(current or default_fields(str(settings.get("model") or "textures")))
    for k in ("model", "mode", "grow", "feather", "crop_to_mask", "differential", "width", "height"):
        if settings.get(k) is not None:
            f[k] = settings[k]
    if f["mode"] == "joint":
        f["mode"], f["regional_algorithm"] = "regional", "joint"
    elif f["mode"] == "regional":
        f["regional_algorithm"] = "interleaved"
    d = regions_form(settings)
    _fill_panel(f, "base", {k[len("base_"):]: v for k, v in d.items() if k.startswith("base_")}, folders)
    for prefix, region in zip(REGION_PREFIXES, d["regions"], strict=False):
        _fill_panel(f, prefix, region, folders)
        f[model_field(prefix)] = region.get("model") or SAME_MODEL
    f["use_image"] = bool(settings.get("image"))
    return f


def _fill_panel(f: dict, prefix: str, values: dict, folders: dict) -> None:
    """One pass's job keys (`values`: prompt, seed, ..., loras, controlnets) into panel `prefix`'s fields."""
    for k in PANEL_KEYS:
        v = values.get(k)
        if v is None:
            continue
        if k == "loras":
            v = lora_lines(v, folders.get("loras"))
        elif k == "controlnets":
            v = controlnet_lines(v, folders.get("controlnet"))
        f[f"{prefix}_{k}"] = v


# ------------------------------------------------------------------------------------------ kept fields
def kept_settings(settings: dict) -> dict:
    """A loaded job dict's fields the page has no widget for and whose value differs from what the page gives
    (clip_skip, comfyui_version, inversion, base_model, ...): what the page keeps and adds at Generate."""
    return kept_fields(settings, PAGE_KEYS)


def kept_line(kept: dict | None) -> str:
    """The page's one read-only line about the kept fields ("" when none)."""
    if not kept:
        return ""
    return "kept from the PNG (no field on this page): " + ", ".join(
        f"{k} {v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(kept.items()))


__all__ = ["FIELDS", "KEPT_KEYS", "MAX_REGIONS", "MODES", "REGIONAL_ALGORITHMS", "UI_MASK_NAME", "default_fields",
           "fields_to_settings", "kept_line", "kept_settings", "model_field", "random_seed", "settings_to_fields"]
