"""PNG images and masks in and out: ComfyUI's conventions, atomic writes, settings in text chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from twosamplers.engine.noise_mask import prepare_mask
from twosamplers.job.imageio import (
    atomic_write,
    check_aspect,
    load_image,
    load_mask,
    read_settings,
    resize_mask,
    save_png,
    side_by_side,
    to_uint8,
)


def test_image_roundtrip_and_settings(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    img = torch.from_numpy(arr.astype(np.float32) / 255.0)[None]
    mask = torch.zeros(12, 20)
    mask[3:9, 5:15] = 1.0
    mask[0, 0] = 128 / 255
    path = tmp_path / "out.png"
    save_png(path, img, settings={"seed": 7, "base_prompt": "grass"}, mask=mask)
    back = load_image(path)
    assert back.shape == (1, 12, 20, 3) and torch.equal(back, img)
    settings, m = read_settings(path)
    assert settings == {"seed": 7, "base_prompt": "grass"}
    assert torch.equal(m, mask)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_to_uint8_truncates_like_comfyui():
    x = torch.tensor([[[0.0, 0.999, 1.2], [-0.1, 0.5, 0.0039]]])
    assert to_uint8(x).tolist() == [[[0, 254, 255], [0, 127, 0]]]


def test_mask_channels(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 51
    rgba[:, :3, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    red = load_mask(tmp_path / "m.png", "red")
    assert torch.equal(red, torch.ones(4, 6))
    alpha = load_mask(tmp_path / "m.png", "alpha")  # ComfyUI's LoadImageMask: 1 - alpha
    assert float(alpha[0, 0]) == 0.0 and float(alpha[0, 5]) == pytest.approx(1 - 51 / 255)
    assert torch.equal(load_mask(tmp_path / "m.png", "alpha", invert=True), 1 - alpha)
    grey = np.full((4, 6), 200, np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    assert torch.allclose(load_mask(tmp_path / "g.png"), torch.full((4, 6), 200 / 255))
    with pytest.raises(ValueError, match="no alpha channel"):
        load_mask(tmp_path / "g.png", "alpha")
    with pytest.raises(ValueError, match="not known"):
        load_mask(tmp_path / "g.png", "purple")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_mask(tmp_path / "text.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="no twosamplers settings"):
        read_settings(tmp_path / "plain.png")


def test_resize_mask_matches_engine():
    m = torch.rand(30, 50)
    r = resize_mask(m, 12, 20)
    assert torch.equal(r, prepare_mask(m, (1, 1, 12, 20))[0, 0])
    check_aspect((30, 50), (12, 20))
    with pytest.raises(ValueError, match="aspect ratios differ"):
        check_aspect((30, 30), (12, 20))


def test_atomic_write_keeps_old_file_on_interrupt(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def interrupted(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nope" / "x.png", lambda tmp: None)


def test_side_by_side():
    a = np.zeros((5, 3, 3), np.uint8)
    b = np.zeros((5, 4), np.uint8)
    out = side_by_side([a, b], gap=2)
    assert out.shape == (5, 9, 3) and (out[:, 3:5] == 255).all()
