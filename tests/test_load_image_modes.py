"""LoadImage / LoadImageMask give ComfyUI 0.30's values for every PNG mode (and a JPEG), quirks included.

References: tests/parity/load_image/ (inputs made and decoded by ComfyUI's own LoadImage / LoadImageMask through
tests/parity/load_image/make.py). ComfyUI 0.30 decodes through PyAV/FFmpeg: an 8-bit grey 255 is 0.99611, not 1.0
(issue 22), grey+alpha and 1-bit images of a width that is not a multiple of 32 go through a padding filter, and
tiny grey images fail to load. `generate --mask` (imageio.load_mask) keeps exact k/255 masks: checked here too.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from safetensors.torch import load as load_safetensors  # noqa: E402

from twosamplers.nodes.folders import Folders  # noqa: E402
from twosamplers.nodes.image import LoadImage, LoadImageMask  # noqa: E402

REF = Path(__file__).resolve().parent / "parity" / "load_image"
MANIFEST = json.loads((REF / "manifest.json").read_text())
CASES = sorted(MANIFEST["cases"])
CHANNELS = ("alpha", "red", "green", "blue")


@pytest.fixture(scope="module")
def ref():
    return load_safetensors(gzip.decompress((REF / "reference.safetensors.gz").read_bytes()))


@pytest.fixture(scope="module")
def folders():
    return Folders.create(input_dir=REF)


@pytest.mark.parametrize("case", CASES)
def test_load_image_and_mask_match_comfyui(case, ref, folders):
    entry = MANIFEST["cases"][case]
    name = entry["file"]
    if "error" in entry:  # ComfyUI fails on it (FFmpeg's padding filter): so do we, with one clear error
        with pytest.raises(ValueError, match=name.split(".")[0]):
            LoadImage(folders).load_image(name)
        return
    image, mask = LoadImage(folders).load_image(name)
    assert image.dtype == torch.float32 and mask.dtype == torch.float32
    torch.testing.assert_close(image, ref[f"{case}/image"], rtol=0, atol=1e-6)
    torch.testing.assert_close(mask, ref[f"{case}/mask"], rtol=0, atol=1e-6)
    for ch in CHANNELS:
        (m,) = LoadImageMask(folders).load_image(name, ch)
        torch.testing.assert_close(m, ref[f"{case}/{ch}"], rtol=0, atol=1e-6)


def test_the_grey_png_quirk_is_reproduced(ref, folders):
    """The issue's case: an L-mode 255 is 65280/65535 in ComfyUI 0.30, so `mask != 1.0` everywhere."""
    (m,) = LoadImageMask(folders).load_image("L_64x24.png", "red")
    assert float(m.max()) == pytest.approx(65280 / 65535, abs=1e-7)
    assert bool((m != 1.0).all())
    (rgb,) = LoadImageMask(folders).load_image("RGB_64x24.png", "red")
    assert float(rgb.max()) == 1.0  # RGB PNGs keep exact k/255


def test_generate_mask_keeps_exact_k_over_255():
    """The CLI's --mask reader (imageio.load_mask) is ours, not ComfyUI's LoadImage: 8-bit k -> k / 255."""
    from PIL import Image

    from twosamplers.job.imageio import load_mask

    m = load_mask(REF / "L_64x24.png")
    want = torch.from_numpy(np.asarray(Image.open(REF / "L_64x24.png"), dtype=np.float32) / 255.0)
    assert torch.equal(m.reshape(want.shape), want)
    assert float(m.max()) == 1.0
