"""Make the LoadImage / LoadImageMask references: PNGs (and a JPEG) of every mode, decoded by ComfyUI 0.30.

Run with ComfyUI's own environment (../shared/comfy, see its README), from the repository root:

    source ../shared/comfy/env.sh
    comfy_python tests/parity/load_image/make.py tests/parity/load_image

Writes into the folder: the input images (`<case>.png` / `.jpg`, made here with numpy, zlib and Pillow, the same
bytes on every machine), `reference.safetensors.gz` (for each case `<case>/image`, `<case>/mask` from ComfyUI's
LoadImage, `<case>/<channel>` from its LoadImageMask) and `manifest.json` (cases, the PIL mode, whether ComfyUI
failed and with what, the versions). This script only drives ComfyUI's node classes; no ComfyUI code is copied.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image


def png_bytes(arr: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """A minimal PNG (no filter, one IDAT) for modes Pillow does not write (16-bit RGB / RGBA)."""
    h, w = arr.shape[:2]
    raw = arr.astype(">u2").tobytes() if bit_depth == 16 else arr.astype(np.uint8).tobytes()
    row = len(raw) // h
    data = b"".join(b"\x00" + raw[i * row:(i + 1) * row] for i in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b"")


def ramp(h: int, w: int, hi: int = 255, seed: int = 0) -> np.ndarray:
    """Every value 0..hi appears (a ramp), plus the extremes in fixed places."""
    g = np.random.default_rng(seed)
    a = (np.arange(h * w).reshape(h, w) * 7919 % (hi + 1)).astype(np.int64)
    a[0, 0], a[0, 1], a[-1, -1] = 0, hi, hi
    a[1, :] = g.integers(0, hi + 1, w)
    return a


def make_inputs(folder: str) -> dict[str, str]:
    """case -> file name; the PIL mode of each is in the manifest."""
    cases: dict[str, str] = {}

    def save(name: str, im: Image.Image, ext: str = "png", **kw) -> None:
        im.save(os.path.join(folder, f"{name}.{ext}"), **kw)
        cases[name] = f"{name}.{ext}"

    for w, h in ((64, 24), (40, 20)):  # width a multiple of 32, and not (ComfyUI's pad + fillborders path)
        tag = f"{w}x{h}"
        v = ramp(h, w)
        save(f"L_{tag}", Image.fromarray(v.astype(np.uint8), "L"))
        la = np.stack([v, ramp(h, w, seed=1)[::-1]], -1).astype(np.uint8)
        save(f"LA_{tag}", Image.fromarray(la, "LA"))
        rgb = np.stack([v, ramp(h, w, seed=2).T[:h, :w] if h >= w else ramp(h, w, seed=2), 255 - v], -1)
        save(f"RGB_{tag}", Image.fromarray(rgb.astype(np.uint8), "RGB"))
        rgba = np.concatenate([rgb, ramp(h, w, seed=3)[..., None]], -1).astype(np.uint8)
        save(f"RGBA_{tag}", Image.fromarray(rgba, "RGBA"))
        pal = Image.fromarray(rgb.astype(np.uint8), "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT,
                                                                   dither=Image.Dither.NONE)
        save(f"P_{tag}", pal)
        save(f"Ptrns_{tag}", pal, transparency=3)
        save(f"1_{tag}", Image.fromarray((v > 127).astype(np.uint8) * 255, "L").convert("1"))
        v16 = ramp(h, w, hi=65535)
        v16[2, :4] = [255, 256, 32768, 65534]
        save(f"I16_{tag}", Image.fromarray(v16.astype(np.uint16)))
        rgb16 = np.stack([v16, ramp(h, w, hi=65535, seed=4), 65535 - v16], -1)
        with open(os.path.join(folder, f"RGB16_{tag}.png"), "wb") as f:
            f.write(png_bytes(rgb16, 2, 16))
        cases[f"RGB16_{tag}"] = f"RGB16_{tag}.png"
        rgba16 = np.concatenate([rgb16, ramp(h, w, hi=65535, seed=5)[..., None]], -1)
        with open(os.path.join(folder, f"RGBA16_{tag}.png"), "wb") as f:
            f.write(png_bytes(rgba16, 6, 16))
        cases[f"RGBA16_{tag}"] = f"RGBA16_{tag}.png"
        save(f"JPEG_{tag}", Image.fromarray(rgb.astype(np.uint8), "RGB"), ext="jpg", quality=90)
    # too small for ComfyUI's pad + fillborders graph (a failure to reproduce) and a tiny RGB that loads
    save("L_12x8", Image.fromarray(ramp(8, 12).astype(np.uint8), "L"))
    save("RGB_12x8", Image.fromarray(np.stack([ramp(8, 12)] * 3, -1).astype(np.uint8), "RGB"))
    return cases


def main() -> int:
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
    import folder_paths
    import nodes
    import torch

    cases = make_inputs(folder)
    folder_paths.set_input_directory(os.path.abspath(folder))
    tensors, manifest = {}, {"cases": {}}
    for name, fname in sorted(cases.items()):
        entry = {"file": fname, "pil_mode": Image.open(os.path.join(folder, fname)).mode}
        try:
            image, mask = nodes.LoadImage().load_image(fname)
            tensors[f"{name}/image"] = image.float().contiguous()
            tensors[f"{name}/mask"] = mask.float().contiguous()
            for ch in ("alpha", "red", "green", "blue"):
                (m,) = nodes.LoadImageMask().load_image_mask(fname, ch)
                tensors[f"{name}/{ch}"] = m.float().contiguous()
        except Exception as e:  # noqa: BLE001  (a ComfyUI failure is a reference too)
            entry["error"] = f"{type(e).__name__}: {e}"
        manifest["cases"][name] = entry
    import av
    import comfyui_version
    manifest["made_with"] = {"comfyui": comfyui_version.__version__, "av": av.__version__,
                             "pillow": Image.__version__, "torch": torch.__version__,
                             "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "torch_threads": torch.get_num_threads()}
    from safetensors.torch import save

    with open(os.path.join(folder, "reference.safetensors.gz"), "wb") as f:
        f.write(gzip.compress(save(tensors), mtime=0))  # gzip: the 64x64 zero masks cost nothing then
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"{len(cases)} cases, {sum('error' in e for e in manifest['cases'].values())} ComfyUI failures -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
