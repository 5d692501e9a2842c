"""Live previews as ComfyUI's binary websocket frames (only with `--preview-method auto`; off by default,
because some clients take any binary frame for a finished image).

The picture is the web page's cheap preview of the current x0 (`latent.latent_preview`: exact for the
pixel-space models, the first latent channels for latent models), at most PREVIEW_SIDE pixels a side, as JPEG.
Frame payloads (after the 4-byte event number the hub adds): event 1 = 4-byte image type (1 = JPEG) + the
JPEG; event 4 = 4-byte length + JSON metadata (node, prompt, "image_type") + the JPEG.
"""

from __future__ import annotations

import io
import json
import struct

from PIL import Image

from ..engine.latent import latent_preview

PREVIEW_SIDE = 512
JPEG = 1


def preview_image(x0, model) -> bytes:
    """The current x0 of a sampler step as JPEG bytes."""
    arr = latent_preview(x0, model.latent_format, getattr(model, "decode_latent", None))
    img = Image.fromarray(arr)
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def encode_preview(jpeg: bytes, meta: dict | None = None) -> bytes:
    """The payload of a preview frame: the old format (event 1) without `meta`, the metadata one (event 4)."""
    if meta is None:
        return struct.pack(">I", JPEG) + jpeg
    block = json.dumps({**meta, "image_type": "image/jpeg"}).encode("utf-8")
    return struct.pack(">I", len(block)) + block + jpeg


__all__ = ["PREVIEW_SIDE", "encode_preview", "preview_image"]
