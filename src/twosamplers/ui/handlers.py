"""The web UI's logic as plain functions (no Gradio here), so that it can be unit-tested.

The page's fields form a flat dict (`FIELDS`, the names the layout in app.py uses). `fields_to_settings` turns
it into the CLI's settings dict (the keys `twosamplers generate` stores in a PNG and reads with `--from`), and
`settings_to_fields` goes back, so "Load settings from PNG" restores every field. Regions beyond the first
(regional mode) are kept under the settings key "regions" (each with its own mask as an embedded PNG); the
CLI reads the first region (the mask_* keys and the mask chunk) and ignores that key.

Masks come from the canvas's layers: layer i's alpha is region i (painting makes it opaque, the eraser makes
it transparent again). An uploaded mask replaces region 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cli import DEFAULT_CFG, DEFAULTS, GLOBAL_KEYS, PASS_KEYS
from ..imageio import decode_mask_png, encode_mask_png, read_settings
from ..mask_tools import feather, grow

MAX_REGIONS = 3
MODES = ("two-pass", "interleaved", "regional")
REGION_KEYS = ("prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "denoise")
PASS_FIELDS = tuple(f"{which}_{k}" for which in ("base", "mask") for k in ("prompt",) + PASS_KEYS)
GLOBAL_FIELDS = ("model", "mode", "grow", "feather", "crop_to_mask", "differential", "width", "height",
                 "use_image")
EXTRA_FIELDS = tuple(f"r{i}_{k}" for i in range(2, MAX_REGIONS + 1) for k in REGION_KEYS)
FIELDS = GLOBAL_FIELDS + PASS_FIELDS + EXTRA_FIELDS
MAX_SEED = 2**64 - 1
REGION_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 220, 96))  # overlay colour of regions 1, 2, 3


class UIError(Exception):
    """A problem with what the user gave; shown in the page as one sentence."""


def default_fields(model: str = "textures") -> dict:
    """The page's starting values: the demo's settings (grass outside, brick inside, feather 2, crop)."""
    f = {"model": model, "mode": "two-pass", "grow": 0, "feather": 2.0, "crop_to_mask": True,
         "differential": False, "width": 256, "height": 256, "use_image": False}
    cfg = DEFAULT_CFG.get(model, 8.0)
    for which, prompt in (("base", "grass"), ("mask", "brick")):
        f[f"{which}_prompt"] = prompt
        for k in PASS_KEYS:
            f[f"{which}_{k}"] = DEFAULTS[k] if k != "cfg" else cfg
    for i in range(2, MAX_REGIONS + 1):
        f[f"r{i}_prompt"] = ("water", "sand")[i - 2] if model in DEFAULT_CFG else ""
        for k in PASS_KEYS:
            f[f"r{i}_{k}"] = DEFAULTS[k] if k != "cfg" else cfg
        f[f"r{i}_seed"] = i - 1
    return f


# ------------------------------------------------------------------------------------------ fields <-> settings
def _int(name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    if v is None or (isinstance(v, str) and not v.strip()):
        raise UIError(f"{name} is empty")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UIError(f"{name} must be a whole number, got {v!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise UIError(f"{name} must be a whole number, got {v!r}")
    i = int(v) if isinstance(v, int) else int(f)
    if (lo is not None and i < lo) or (hi is not None and i > hi):
        raise UIError(f"{name} = {i} is out of range ({lo} .. {hi})" if hi is not None else
                      f"{name} = {i} must be at least {lo}")
    return i


def _float(name: str, v, lo: float | None = None, hi: float | None = None) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UIError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f) or (lo is not None and f < lo) or (hi is not None and f > hi):
        raise UIError(f"{name} = {v} is out of range ({lo} .. {hi})")
    return f


def _pass(fields: dict, prefix: str, label: str) -> dict:
    return {"prompt": str(fields.get(f"{prefix}_prompt") or ""),
            "negative": str(fields.get(f"{prefix}_negative") or ""),
            "seed": _int(f"{label} seed", fields.get(f"{prefix}_seed"), 0, MAX_SEED),
            "steps": _int(f"{label} steps", fields.get(f"{prefix}_steps"), 1, 10000),
            "cfg": _float(f"{label} cfg", fields.get(f"{prefix}_cfg"), 0.0, 100.0),
            "sampler": str(fields.get(f"{prefix}_sampler")),
            "scheduler": str(fields.get(f"{prefix}_scheduler")),
            "denoise": _float(f"{label} denoise", fields.get(f"{prefix}_denoise"), 0.0, 1.0)}


def fields_to_settings(fields: dict, n_regions: int = 1) -> dict:
    """The page's fields -> the CLI's settings dict (keys of cli.GLOBAL_KEYS and base_/mask_ PASS_KEYS).

    `n_regions` > 1 (regional mode) adds settings["regions"]: the settings of regions 2..n."""
    mode = fields.get("mode")
    if mode not in MODES:
        raise UIError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    s = {k: DEFAULTS.get(k) for k in GLOBAL_KEYS}
    s["model"] = str(fields.get("model") or DEFAULTS["model"])
    s["mode"] = mode
    s["grow"] = _int("grow", fields.get("grow"), -1024, 1024)
    s["feather"] = _float("feather", fields.get("feather"), 0.0, 1024.0)
    two_pass = mode == "two-pass"
    s["crop_to_mask"] = bool(fields.get("crop_to_mask")) and two_pass
    s["differential"] = bool(fields.get("differential")) and two_pass
    s["width"] = _int("width", fields.get("width"), 8, 4096)
    s["height"] = _int("height", fields.get("height"), 8, 4096)
    s["mask"] = "ui-canvas"
    for which, label in (("base", "base"), ("mask", "region 1" if n_regions > 1 else "mask")):
        p = _pass(fields, which, label)
        s[f"{which}_prompt"] = p.pop("prompt")
        for k, v in p.items():
            s[f"{which}_{k}"] = v
    if n_regions > 1:
        if mode != "regional":
            raise UIError(f"{n_regions} regions are painted, but several regions need mode 'regional' "
                          f"(mode is {mode!r}); switch the mode or clear the extra layers")
        if n_regions > MAX_REGIONS:
            raise UIError(f"at most {MAX_REGIONS} regions (canvas layers) are supported, got {n_regions}")
        s["regions"] = [_pass(fields, f"r{i}", f"region {i}") for i in range(2, n_regions + 1)]
    return s


def settings_to_fields(settings: dict, current: dict | None = None) -> dict:
    """The CLI's (or the UI's) settings -> the page's fields. Keys the settings lack keep `current`'s values."""
    f = dict(current or default_fields(str(settings.get("model") or "textures")))
    for k in ("model", "mode", "grow", "feather", "crop_to_mask", "differential", "width", "height"):
        if settings.get(k) is not None:
            f[k] = settings[k]
    for which in ("base", "mask"):
        for k in ("prompt",) + PASS_KEYS:
            if settings.get(f"{which}_{k}") is not None:
                f[f"{which}_{k}"] = settings[f"{which}_{k}"]
    for i, region in enumerate(settings.get("regions") or [], start=2):
        if i > MAX_REGIONS:
            break
        for k in REGION_KEYS:
            if k in region:
                f[f"r{i}_{k}"] = region[k]
    f["use_image"] = bool(settings.get("image"))
    return f


def regions_for_png(settings: dict, masks: list[torch.Tensor]) -> dict:
    """The settings to store: regions 2.. carry their mask as an embedded 8-bit PNG (hex), like the mask chunk."""
    out = dict(settings)
    if len(masks) > 1:
        out["regions"] = [dict(r, mask_png=encode_mask_png(m)) for r, m in zip(settings["regions"], masks[1:],
                                                                                strict=True)]
    return out


def load_png_settings(path: str | os.PathLike) -> tuple[dict, list[torch.Tensor]]:
    """A PNG written by the CLI or the UI -> (settings, masks of every region). Raises UIError when unreadable."""
    try:
        settings, mask = read_settings(path)
    except (ValueError, FileNotFoundError) as e:
        raise UIError(f"cannot load settings from {Path(path).name}: {e}") from None
    masks = [mask] if mask is not None else []
    for j, region in enumerate(settings.get("regions") or []):
        if not isinstance(region, dict) or "mask_png" not in region:
            raise UIError(f"{Path(path).name}: region {j + 2} of its settings has no mask")
        try:
            masks.append(decode_mask_png(region["mask_png"]))
        except ValueError as e:
            raise UIError(f"{Path(path).name}: region {j + 2}: {e}") from None
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


@dataclass
class Canvas:
    """What the page's canvas holds: the background (None for a blank canvas) and the region masks."""

    background: np.ndarray | None
    masks: list[torch.Tensor] = field(default_factory=list)


def canvas_masks(editor_value, mask_upload=None) -> list[torch.Tensor]:
    """The editor's layers (and an optional uploaded mask, which replaces region 1) -> one MASK per region.

    Trailing empty layers are dropped; an empty layer between painted ones stays (the region numbers are the
    layer numbers). Raises UIError when nothing is painted."""
    layers = []
    if isinstance(editor_value, dict):
        layers = [x for x in (editor_value.get("layers") or []) if x is not None]
    masks = [layer_mask(x) for x in layers]
    size = None
    bg = _as_array(editor_value.get("background")) if isinstance(editor_value, dict) else None
    if bg is not None:
        size = bg.shape[:2]
    elif masks:
        size = tuple(masks[0].shape)
    if mask_upload is not None:
        up = uploaded_mask(mask_upload)
        if size is not None and tuple(up.shape) != tuple(size):
            from ..imageio import check_aspect, resize_mask
            try:
                check_aspect(tuple(up.shape), tuple(size))
            except ValueError as e:
                raise UIError(str(e)) from None
            up = resize_mask(up, *size)
        masks = [up] + masks[1:]
    while masks and float(masks[-1].max()) == 0.0:
        masks.pop()
    if not masks:
        raise UIError("no mask: paint the region to change on the canvas (brush tool) or upload a mask")
    return masks


def editor_background(editor_value) -> np.ndarray | None:
    if not isinstance(editor_value, dict):
        return None
    bg = _as_array(editor_value.get("background"))
    return None if bg is None else bg[..., :3] if bg.ndim == 3 else np.repeat(bg[..., None], 3, axis=-1)


def blank_canvas(width: int, height: int) -> dict:
    """A new editor value: a mid-grey background of the chosen size, no layers."""
    w, h = _int("width", width, 8, 4096), _int("height", height, 8, 4096)
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
    return {"background": bg, "layers": layers, "composite": overlay(bg[..., :3], masks)}


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


def mask_preview(editor_value, mask_upload, grow_px, feather_px) -> np.ndarray:
    """The grown/feathered regions over the canvas: what the "Preview mask" panel shows."""
    masks = canvas_masks(editor_value, mask_upload)
    g, f = _int("grow", grow_px, -1024, 1024), _float("feather", feather_px, 0.0, 1024.0)
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


def model_choices(models_dir, found: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(label, value) pairs for the model dropdown: the built-in models, then the checkpoints found."""
    choices = [("textures (built-in)", "textures"), ("ideal (built-in)", "ideal")]
    for rel in found.get("checkpoints", []):
        choices.append((rel, str(Path(models_dir).expanduser().resolve() / "checkpoints" / rel)))
    return choices


def error_message(e: BaseException) -> str:
    """One line for the page: the message of a user error, the type and message of anything else."""
    msg = " ".join(str(e).split())
    if isinstance(e, (UIError, ValueError, FileNotFoundError, TypeError, NotImplementedError)):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
