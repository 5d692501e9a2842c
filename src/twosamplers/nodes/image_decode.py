"""Input images decoded as ComfyUI 0.30's LoadImage decodes them: through PyAV (FFmpeg), not Pillow.

ComfyUI 0.30 reads every LoadImage / LoadImageMask file as a one-frame "video" with PyAV and only falls back to
Pillow when FFmpeg yields no frame (animated WebP). The values therefore are FFmpeg's, which differ from the
plain `8-bit value / 255` for several PNG modes. We decode with PyAV the same way (described in
docs/workflows.md, "LoadImage"; measured against ComfyUI in tests/test_load_image_modes.py), so a workflow
gets ComfyUI's numbers, quirks included:

- The first frame's pixel format decides for the file. Formats with 8-bit RGB(A) samples (`rgb24`, `rgba`,
  `pal8`, and JPEG's `yuvj4xxp`) are converted by FFmpeg to `rgb24` / `rgba` (`rgba` when the format has an
  alpha component, or is a palette) and divided by 255: exact k/255.
- Every other format (grey `gray`, grey + alpha `ya8`, 1-bit `monob`, 16-bit `gray16be`, `rgb48be`,
  `rgba64be`, ...) is converted by libswscale to planar float32 (`gbrpf32le` / `gbrapf32le`): an 8-bit grey
  255 becomes 65280/65535 = 0.99611, not 1.0; a 16-bit 65535 in RGB48 0.99995.
- For those float formats, when the width is not a multiple of 32, the frame first goes through FFmpeg's
  `pad` (to multiples of 32) and `fillborders` (smear) filters and is cropped back, as ComfyUI 0.30 does to
  make decoding deterministic: this changes some values again (`ya8` is converted through `gbrap`, grey+alpha
  255 gives 0.99615), and FFmpeg refuses frames whose shorter side is under about 16 pixels (an error, as in
  ComfyUI).
- A frame's rotation (display matrix) is applied; all frames of the file are stacked.
- MASK = 1 - alpha where the format has alpha (palette images always: their transparency is alpha), else
  64 x 64 zeros per frame.

Without PyAV installed (`pip install 'twosamplers[workflow]'` brings it), images are read with Pillow as
ComfyUI did before 0.30 (8-bit values / 255), with a warning: grey and 16-bit PNGs then differ from ComfyUI
0.30 in the last bits (an L-mode 255 is 1.0 instead of 0.99611).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

from .._paths import regular_file

__all__ = ["AV_MISSING", "decode_image", "have_av"]

UINT8_FORMATS = ("yuvj420p", "yuvj422p", "yuvj444p", "rgb24", "rgba", "pal8")
ALIGN = 32
# at most this many decoded pixels per file (all frames together): ~3 GiB of float32 RGB
MAX_DECODED_PIXELS = 2**28
AV_MISSING = ("PyAV is not installed: LoadImage reads images with Pillow (8-bit values / 255), as ComfyUI did "
              "before 0.30; grey and 16-bit images then differ from ComfyUI 0.30's values. Install it with "
              "pip install 'twosamplers[workflow]' (or pip install av).")
_warned = False


def have_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def decode_image(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE (N, H, W, 3), MASK (N, H, W) = 1 - alpha, or (N, 64, 64) zeros) as ComfyUI 0.30's LoadImage
    gives them for the file at `path`. ValueError for a file that cannot be decoded or is too large."""
    path = Path(path)
    regular_file(path, "image")  # not a FIFO, a device or a folder: those would hang or mislead the decoder
    _check_size(path)
    if have_av():
        out = _decode_av(path)
        if out is not None:
            images, alpha = out
            mask = 1.0 - alpha[..., -1] if alpha is not None else torch.zeros((images.shape[0], 64, 64))
            return images, mask
    else:
        global _warned
        if not _warned:
            warnings.warn(AV_MISSING, stacklevel=3)
            _warned = True
    return _decode_pillow(path)


def _check_size(path: Path) -> None:
    """Refuse oversized images from their header, before any decoder allocates them."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            frames = int(getattr(im, "n_frames", 1) or 1)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path} is too large to read safely (a possible decompression bomb): {e}") from None
    except (OSError, SyntaxError, ValueError):
        return  # Pillow does not know it; FFmpeg may (its stream size is checked while decoding)
    if w * h * frames > MAX_DECODED_PIXELS:
        raise ValueError(f"{path}: {frames} frame(s) of {w}x{h} pixels is more than this reader decodes "
                         f"({MAX_DECODED_PIXELS} pixels)")


def _decode_av(path: Path) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    import av

    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise ValueError(f"{path} is not a readable image: {e}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} is not a readable image (no picture in it)")
        stream = container.streams.video[0]
        frames: list[np.ndarray] = []
        alphas: list[np.ndarray] | None = None
        fmt, as_uint8, graph, pixels = None, False, None, 0
        try:
            for packet in container.demux(stream):
                try:
                    decoded = list(packet.decode())
                except av.error.InvalidDataError:
                    continue  # ComfyUI skips a packet FFmpeg cannot decode
                for frame in decoded:
                    if frame.pts is not None and frame.pts < 0:
                        continue
                    pixels += frame.width * frame.height
                    if pixels > MAX_DECODED_PIXELS:
                        raise ValueError(f"{path}: more than {MAX_DECODED_PIXELS} pixels to decode")
                    if fmt is None:
                        fmt, as_uint8, has_alpha = _output_format(frame)
                        alphas = [] if has_alpha else None
                    if not as_uint8 and frame.width % ALIGN != 0:
                        if graph is None:
                            graph = _align_graph(av, frame, stream.time_base)
                        graph[1].push(frame)
                        arr = np.ascontiguousarray(graph[2].pull().to_ndarray(format=fmt)[:frame.height,
                                                                                           :frame.width])
                    else:
                        arr = frame.to_ndarray(format=fmt)
                    if frame.rotation:
                        arr = np.rot90(arr, k=int(round(frame.rotation // 90)), axes=(0, 1)).copy()
                    if alphas is None:
                        frames.append(arr)
                    else:
                        frames.append(arr[..., :-1])
                        alphas.append(arr[..., -1:])
        except av.error.FFmpegError as e:
            raise ValueError(f"{path}: FFmpeg cannot decode it as ComfyUI 0.30 does ({e})") from None
    if not frames:
        return None
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"{path}: its frames have different sizes")

    def to_tensor(arrays):
        t = torch.from_numpy(np.stack(arrays))
        return t.float() / 255.0 if as_uint8 else t

    return to_tensor(frames), (to_tensor(alphas) if alphas is not None else None)


def _output_format(frame) -> tuple[str, bool, bool]:
    """(the format the frames are converted to, whether that is 8-bit, whether it has alpha): the first
    frame's pixel format decides, as in ComfyUI 0.30 (a palette counts as having alpha)."""
    name = frame.format.name
    has_alpha = name == "pal8" or any(c.is_alpha for c in frame.format.components)
    if name in UINT8_FORMATS:
        return ("rgba" if has_alpha else "rgb24"), True, has_alpha
    return ("gbrapf32le" if has_alpha else "gbrpf32le"), False, has_alpha


def _align_graph(av, frame, time_base):
    """FFmpeg's pad + fillborders(smear) graph that ComfyUI 0.30 runs on float-converted frames whose width is
    not a multiple of 32: (graph, source, sink)."""
    pad_w = (frame.width + ALIGN - 1) // ALIGN * ALIGN
    pad_h = (frame.height + ALIGN - 1) // ALIGN * ALIGN
    g = av.filter.Graph()
    src = g.add_buffer(width=frame.width, height=frame.height, format=frame.format.name, time_base=time_base)
    pad = g.add("pad", f"{pad_w}:{pad_h}:0:0")
    fill = g.add("fillborders", f"left=0:right={pad_w - frame.width}:top=0:bottom={pad_h - frame.height}:mode=smear")
    sink = g.add("buffersink")
    src.link_to(pad)
    pad.link_to(fill)
    fill.link_to(sink)
    g.configure()
    return g, src, sink


def _decode_pillow(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow, as ComfyUI reads what FFmpeg yields no frame for (and as ComfyUI < 0.30 read everything):
    frames converted to RGB / 255 (those of another size than the first dropped), mask = 1 - alpha or 64 x 64
    zeros."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image: {e}") from None
    images, masks = [], []
    size = None
    for frame in ImageSequence.Iterator(img):
        frame = ImageOps.exif_transpose(frame)
        rgb = frame.convert("RGB")
        if size is None:
            size = rgb.size
        if rgb.size != size:
            continue
        images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None])
        if "A" in frame.getbands():
            alpha = np.array(frame.getchannel("A")).astype(np.float32) / 255.0
            masks.append((1.0 - torch.from_numpy(alpha))[None])
        else:
            masks.append(torch.zeros((1, 64, 64), dtype=torch.float32))
    return torch.cat(images, dim=0), torch.cat(masks, dim=0)
