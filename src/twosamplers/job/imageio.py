"""PNG images and masks in and out (Pillow), atomic writes, settings in PNG text chunks.

Conventions follow ComfyUI's LoadImage / LoadImageMask / SaveImage:
- IMAGE tensors are (B, H, W, 3) float32 in [0, 1]; loading divides 8-bit values by 255 (EXIF orientation
  applied); saving writes clip(255 * x, 0, 255) truncated to uint8.
- MASK tensors are (H, W) float32 in [0, 1], read from one channel: "gray" (the luminance, Pillow's "L"),
  "red", "green", "blue", "alpha", or "auto" (alpha where the image has a transparent pixel, else gray: what a
  painted or uploaded mask means). As in ComfyUI's LoadImageMask, the alpha channel is inverted
  (mask = 1 - alpha: transparent pixels are the ones to repaint); `invert=True` inverts any channel.
  `mask_from_image` is the one reader of masks: files (`load_mask`), uploads and arrays (the web page) go through
  it. ComfyUI's `LoadImageMask` node (`nodes/image.py`) is its deliberate twin: it decodes as ComfyUI does, for
  workflows, and is kept apart on purpose.
- Masks of any size are resized like ComfyUI (bilinear, align_corners False, no antialias, no rounding).
- Writes go to a temporary file in the target folder, then `os.replace`: an existing file is replaced
  atomically, and an interrupted write (Ctrl-C included) leaves no partial file.
- A PNG written with settings carries an origin tag (`_origin`: an HMAC under this user's key), so that
  `read_settings(..., with_origin=True)` can tell a PNG this user rendered (its file paths may be used again)
  from someone else's (untrusted: it does not choose the files that are read).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .. import _origin
from .._checks import ASPECT_TOLERANCE, same_aspect
from .._files import atomic_write
from .._paths import regular_file
from ..engine.noise_mask import fit_mask

MASK_CHANNELS = ("gray", "alpha", "red", "green", "blue", "auto")
SETTINGS_KEY = "twosamplers"
MASK_KEY = "twosamplers-mask"


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} is not a file: {path}")
    regular_file(path, what)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too, before decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{what} {path} is too large to read safely (a possible decompression bomb): {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(f"{what} {path} is not a readable image: {e}") from e
    return im


def _is_16bit_gray(im: Image.Image) -> bool:
    return im.mode == "I" or im.mode.startswith("I;16")


def _gray16(im: Image.Image, label: str) -> np.ndarray:
    """A 16-bit greyscale image (Pillow mode I / I;16) as float32 in [0, 1] at full precision."""
    arr = np.asarray(im, dtype=np.float32)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError(f"{label} has integer values outside 0 .. 65535 (mode {im.mode})")
    return arr / np.float32(65535.0)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file -> IMAGE (1, H, W, 3) float32 in [0, 1] (alpha dropped, EXIF orientation applied)."""
    with _open(path, "image") as im:
        im = ImageOps.exif_transpose(im)
        if _is_16bit_gray(im):
            arr = np.repeat(_gray16(im, f"image {path}")[..., None], 3, axis=-1)
        else:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


def load_mask(path: str | os.PathLike, channel: str = "gray", invert: bool = False) -> torch.Tensor:
    """A mask file -> MASK (H, W) float32 in [0, 1] from one channel (see the module doc)."""
    if channel not in MASK_CHANNELS:
        raise ValueError(f"mask channel {channel!r} is not known; valid: {', '.join(MASK_CHANNELS)}")
    return read_mask_file(path, channel, invert)


def read_mask_file(path: str | os.PathLike, channel: str, invert: bool) -> torch.Tensor:
    """`load_mask` for callers that checked `channel` at their entrance (a Job)."""
    with _open(path, "mask") as im:
        return mask_from_image(ImageOps.exif_transpose(im), channel, invert, what=f"mask {path}")


def mask_from_image(image, channel: str = "gray", invert: bool = False, what: str = "mask") -> torch.Tensor:
    """THE mask reader: a PIL image, a uint8 array ((H, W), (H, W, 2|3|4): an upload, a canvas picture) or a
    float MASK ((H, W) tensor or array in [0, 1], used as it is) -> MASK (H, W) float32 in [0, 1], from `channel`
    (see the module doc), inverted when `invert`. Contract: `channel` is one of MASK_CHANNELS."""
    if isinstance(image, torch.Tensor) or (isinstance(image, np.ndarray) and image.dtype.kind == "f"):
        from .._checks import check_mask_values

        mask = check_mask_values(what, torch.as_tensor(image).float())
        if mask.ndim != 2:
            raise ValueError(f"{what} must be (H, W), got shape {tuple(mask.shape)}")
        return (1.0 - mask if invert else mask.clone()).contiguous()
    im = image if isinstance(image, Image.Image) else _array_image(image, what)
    if channel == "auto":
        channel = "alpha" if _has_transparency(im) else "gray"
    if _is_16bit_gray(im) and channel != "alpha":
        # 16-bit greyscale: every colour channel is the grey value; Pillow's "L" would clip it to 255
        mask = torch.from_numpy(_gray16(im, what))
    else:
        if channel == "gray":
            band = im.convert("L")
        elif channel == "alpha":
            if "A" not in im.getbands() and "transparency" not in im.info:
                raise ValueError(f"{what} has no alpha channel (mode {im.mode}); use --mask-channel gray")
            band = im.convert("RGBA").getchannel("A")
        else:
            band = im.convert("RGB").getchannel(channel[0].upper())
        mask = torch.from_numpy(np.asarray(band, dtype=np.float32) / np.float32(255.0))
    if channel == "alpha":
        mask = 1.0 - mask
    if invert:
        mask = 1.0 - mask
    return mask.contiguous()


def _array_image(a, what: str) -> Image.Image:
    a = np.asarray(a)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (2, 3, 4))):
        raise ValueError(f"{what} must be an 8-bit image (H, W) or (H, W, 2|3|4), got {a.dtype} {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a))  # L, LA, RGB or RGBA


def _has_transparency(im: Image.Image) -> bool:
    if "A" not in im.getbands() and "transparency" not in im.info:
        return False
    lo, _ = im.convert("RGBA").getchannel("A").getextrema()
    return lo < 255


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a MASK ([H, W] or [B, H, W]) like ComfyUI (the engine's resize: bilinear, no antialias)."""
    shape = mask.shape
    n = mask.reshape(-1, shape[-2], shape[-1]).shape[0]
    m = fit_mask(mask.float(), (n, 1, height, width))
    return m.reshape(*shape[:-2], height, width)


def check_aspect(mask_hw: tuple[int, int], image_hw: tuple[int, int], tolerance: float = ASPECT_TOLERANCE) -> None:
    """Raise ValueError when a mask's aspect ratio differs from the image's (`_checks.same_aspect`, the one rule)."""
    (mh, mw), (h, w) = mask_hw, image_hw
    if not same_aspect((mh, mw), (h, w), tolerance):
        raise ValueError(f"the mask is {mw}x{mh} but the image is {w}x{h}: their aspect ratios differ "
                         f"({mw / mh:.4g} vs {w / h:.4g}); resize or crop the mask to the image's shape")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """IMAGE (H, W, C) or (1, H, W, C) in [0, 1] -> uint8 array, as ComfyUI's SaveImage (truncation)."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    arr = image.detach().cpu().float().numpy()
    return np.clip(255.0 * arr, 0, 255).astype(np.uint8)


def mask_to_uint8(mask: torch.Tensor) -> np.ndarray:
    """MASK (H, W) in [0, 1] -> uint8, rounded (so an 8-bit mask round-trips exactly)."""
    return np.clip(np.rint(mask.detach().cpu().float().numpy() * 255.0), 0, 255).astype(np.uint8)


def encode_mask_png(mask: torch.Tensor) -> str:
    """A MASK as an 8-bit grayscale PNG, hex-encoded (to embed in a text chunk)."""
    buf = io.BytesIO()
    Image.fromarray(mask_to_uint8(mask)).save(buf, format="PNG", optimize=True)
    return buf.getvalue().hex()


def decode_mask_png(text: str) -> torch.Tensor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes.fromhex(text))) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)
    except (ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise ValueError(f"the embedded mask is not readable: {e}") from e
    return torch.from_numpy(arr)


def save_png(path: str | os.PathLike, image: torch.Tensor | np.ndarray, settings: dict | None = None,
             mask: torch.Tensor | None = None, text: dict[str, str] | None = None, masks=None) -> Path:
    """Write an IMAGE (or a uint8 array) as PNG, atomically. `settings` goes into the "twosamplers" text chunk
    as JSON, `mask` (optional) into a compressed "twosamplers-mask" chunk (`masks`: one per region, region k > 1
    into "twosamplers-mask-k"), `text` as further text chunks."""
    return atomic_write(path, png_writer(image, settings, mask, text, masks))


def region_mask_key(i: int) -> str:
    """The text chunk of region i's (0-based) embedded mask: "twosamplers-mask", then "twosamplers-mask-2", ..."""
    return MASK_KEY if i == 0 else f"{MASK_KEY}-{i + 1}"


def png_writer(image: torch.Tensor | np.ndarray, settings: dict | None = None, mask: torch.Tensor | None = None,
               text: dict[str, str] | None = None, masks=None):
    """`save_png`'s encoding as a function of the file path (for writing several outputs together)."""
    arr = image if isinstance(image, np.ndarray) else to_uint8(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W[, C]) uint8 or an IMAGE tensor, got {arr.dtype} {arr.shape}")
    info = PngImagePlugin.PngInfo()
    settings_text = ""
    if settings is not None:
        settings_text = json.dumps(settings, sort_keys=True)
        info.add_text(SETTINGS_KEY, settings_text)
    others = {}
    for i, m in enumerate([mask] if masks is None else masks):
        if m is not None:
            others[region_mask_key(i)] = encode_mask_png(m)
            info.add_text(region_mask_key(i), others[region_mask_key(i)], zip=True)
    extra = {str(k): str(v) for k, v in (text or {}).items()}
    if settings is not None:
        origin = _origin.tag(*_origin_parts(settings_text, {**others, **extra}))
        if origin is not None:
            info.add_text(_origin.ORIGIN_KEY, origin)
    for k, v in extra.items():
        info.add_text(k, v)
    pil = Image.fromarray(arr)
    return lambda tmp: pil.save(tmp, format="PNG", pnginfo=info)


def _origin_parts(settings_text: str, others: dict[str, str]) -> list[str]:
    """What a PNG's origin tag covers: its settings, then every other text chunk (each region's embedded mask, the
    page's regions chunk, ...) as key and value in key order, so that no chunk of a PNG this user wrote can be
    changed, removed or added by someone else without losing the tag."""
    return [settings_text, *(part for k in sorted(others) for part in (k, others[k]))]


def read_settings(path: str | os.PathLike, with_origin: bool = False):
    """The settings (and region 1's embedded mask, if any) that `save_png` wrote into a PNG; with `with_origin`,
    also whether this user wrote it (its origin tag checks out under this user's key: `png_is_ours`)."""
    settings, masks, chunks = read_png_job(path)
    mask = masks[0] if masks else None
    if not with_origin:
        return settings, mask
    return settings, mask, png_is_ours(chunks)


def png_is_ours(chunks: dict[str, str]) -> bool:
    """Whether the text chunks of a PNG (`read_png_job`'s third value) carry this user's origin tag over all of
    them: a PNG this user rendered on this machine, unchanged since."""
    if SETTINGS_KEY not in chunks:
        return False
    others = {k: v for k, v in chunks.items() if k not in (SETTINGS_KEY, _origin.ORIGIN_KEY)}
    return _origin.is_ours(chunks.get(_origin.ORIGIN_KEY), *_origin_parts(chunks[SETTINGS_KEY], others))


def read_png_job(path: str | os.PathLike) -> tuple[dict, list[torch.Tensor], dict[str, str]]:
    """(the settings, every embedded region mask in order, all text chunks) of a PNG that `save_png` wrote."""
    with _open(path, "settings image") as im:
        chunks = dict(getattr(im, "text", {}) or {})
    if SETTINGS_KEY not in chunks:
        raise ValueError(f"{path} carries no twosamplers settings (no '{SETTINGS_KEY}' text chunk)")
    try:
        settings = json.loads(chunks[SETTINGS_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the '{SETTINGS_KEY}' text chunk is not valid JSON: {e}") from e
    except RecursionError:
        raise ValueError(f"{path}: the '{SETTINGS_KEY}' text chunk is nested too deeply to be settings") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: the '{SETTINGS_KEY}' text chunk is not a JSON object")
    masks = []
    while region_mask_key(len(masks)) in chunks:
        masks.append(decode_mask_png(chunks[region_mask_key(len(masks))]))
    return settings, masks, chunks


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Tiles (H, W, 3) uint8 images left to right (heights must match), separated by white gaps."""
    h = images[0].shape[0]
    parts = []
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        if im.shape[0] != h:
            raise ValueError("side_by_side needs images of one height")
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)
