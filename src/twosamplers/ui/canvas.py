"""The canvas and the mask upload -> one mask per region; masks -> the editor's layers and the tinted overlay.

Every mask goes through the one mask reader, `imageio.mask_from_image`: an uploaded mask with the rule of mask
files ("auto": its grey level, white = inside, or 1 - alpha where it has transparency, as ComfyUI's alpha
masks); a canvas layer is the canvas's own rule, its alpha plane read as a grey mask (the brush paints opaque,
the eraser clears: opaque = inside). A mask of another size than the canvas is resized as ComfyUI resizes masks
(same aspect ratio required). The page's masks are 8-bit, what its PNG embeds, so a picture made in the page
renders bit for bit again from the PNG (`twosamplers generate --from`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .._checks import MAX_IMAGE_SIDE
from ..job.imageio import check_aspect, mask_from_image, mask_to_uint8, resize_mask
from .values import UIError, number

REGION_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 220, 96))  # overlay colour of regions 1, 2, 3


def _as_array(x) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, (str, os.PathLike)):
        from PIL import Image
        with Image.open(x) as im:
            return np.asarray(im.convert("RGBA"))
    return np.asarray(x)


def eight_bit(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as the PNG stores it (rounded to k/255): what the page renders is what its PNG brings back."""
    return mask_from_image(mask_to_uint8(mask))


def layer_mask(layer) -> torch.Tensor:
    """One canvas layer (H, W, 4) uint8 RGBA -> MASK (H, W) float32 in [0, 1]: its alpha (opaque = painted)."""
    a = _as_array(layer)
    if a.ndim != 3 or a.shape[2] not in (2, 4) or a.dtype != np.uint8:
        raise UIError(f"a canvas layer must be an 8-bit RGBA image, got an array of {a.dtype} {a.shape}")
    return mask_from_image(a[..., -1], "gray", what="canvas layer")


def uploaded_mask(image) -> torch.Tensor:
    """An uploaded mask image -> MASK, read as a mask file is ("auto": grey level, or 1 - alpha where it has
    transparency)."""
    a = _as_array(image)
    if a is None:
        raise UIError("no mask image was uploaded")
    try:
        return mask_from_image(a, "auto", what="the uploaded mask")
    except ValueError as e:
        raise UIError(str(e)) from None


def mask_image(mask: torch.Tensor) -> np.ndarray:
    """A MASK as the mask upload shows it (white = inside, uint8 RGB); `uploaded_mask` reads it back exactly
    for 8-bit masks."""
    return np.repeat(mask_to_uint8(mask)[..., None], 3, axis=-1)


def fit_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """A mask resized to the canvas (h, w) as ComfyUI resizes masks, then 8-bit; the aspect ratio must match."""
    if tuple(mask.shape) == tuple(size):
        return mask
    try:
        check_aspect(tuple(mask.shape), tuple(size))
    except ValueError as e:
        raise UIError(str(e)) from None
    return eight_bit(resize_mask(mask, *size))


def canvas_masks(editor_value, mask_upload=None, loaded: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The editor's layers (and an optional uploaded mask, which replaces region 1) -> one MASK per region.

    `loaded`: the masks of a PNG loaded with "Load settings from PNG", used instead of the layers when no layer
    has a painted pixel (Gradio's editor can drop the layers a load sets; a stroke means the user repaints, and
    then the layers win). Trailing empty layers are dropped; an empty layer between painted ones stays (the
    region numbers are the layer numbers). Raises UIError when nothing is painted."""
    value = editor_value if isinstance(editor_value, dict) else {}
    masks = [layer_mask(x) for x in (value.get("layers") or []) if x is not None]
    bg = _as_array(value.get("background"))
    size = bg.shape[:2] if bg is not None else None
    if loaded and not any(float(m.max()) > 0.0 for m in masks):
        masks = [m if size is None else fit_mask(m, size) for m in loaded]
    size = size or (tuple(masks[0].shape) if masks else None)
    if mask_upload is not None:
        up = uploaded_mask(mask_upload)
        masks = [up if size is None else fit_mask(up, size)] + masks[1:]
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
    w, h = number("width", width, True), number("height", height, True)
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
        layer = np.zeros((h, w, 4), np.uint8)
        layer[..., :3] = REGION_COLOURS[i % len(REGION_COLOURS)]
        layer[..., 3] = mask_to_uint8(m if tuple(m.shape) == (h, w) else resize_mask(m, h, w))
        layers.append(layer)
    return {"background": bg, "layers": layers, "composite": None}


def overlay(background: np.ndarray | None, masks: list[torch.Tensor], alpha: float = 0.55) -> np.ndarray:
    """Each region's mask tinted in its colour over the background (grey when there is none), uint8 (H, W, 3)."""
    h, w = masks[0].shape[-2:] if masks else background.shape[:2]
    base = np.full((h, w, 3), 128, np.float32) if background is None else background[..., :3].astype(np.float32)
    if base.shape[:2] != (h, w):
        raise UIError(f"the mask is {w}x{h} but the image is {base.shape[1]}x{base.shape[0]}")
    out = base
    for i, m in enumerate(masks):
        a = (m.reshape(h, w).numpy().astype(np.float32) * alpha)[..., None]
        out = out * (1 - a) + np.asarray(REGION_COLOURS[i % len(REGION_COLOURS)], np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


__all__ = ["REGION_COLOURS", "blank_canvas", "canvas_masks", "editor_background", "editor_value", "eight_bit",
           "fit_mask", "layer_mask", "mask_image", "overlay", "uploaded_mask"]
