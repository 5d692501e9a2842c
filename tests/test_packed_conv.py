"""Convolution weights held in oneDNN's layout for a sampling pass (models/packed_conv.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from test_lora import assert_same_bits, make_lora, snapshot  # noqa: E402

from twosamplers.models import packed_conv  # noqa: E402
from twosamplers.models.lora import load_lora, patched  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402

pytestmark = pytest.mark.skipif(not packed_conv.available(), reason="this torch has no oneDNN packed convolution")


@pytest.fixture(scope="module")
def sd1(tiny_sd_files):
    return load_sd(tiny_sd_files["sd1_file"], device="cpu", fp32_text_enc=True, cache=False)


def _inputs(model, batch=2, size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, size, size, generator=g)
    ctx = torch.randn(batch, 77, model.text_encoders[0].model.config.hidden_size, generator=g)
    return x, torch.full((batch,), 3.0), ctx


def _convs(model):
    return [m for m in model.unet.modules() if type(m) is torch.nn.Conv2d]


def test_a_pass_gives_the_convolutions_results_and_restores_every_bit(sd1):
    before = snapshot(sd1)
    for batch, size in ((2, 8), (1, 16), (3, 6)):  # one packing serves every input size
        x, s, ctx = _inputs(sd1, batch, size)
        with torch.inference_mode():
            plain = sd1.apply_model(x, s, ctx)
            with sd1.sampling_session():
                packed = sd1.apply_model(x, s, ctx)
        assert packed.shape == plain.shape and packed.is_contiguous()
        torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    assert_same_bits(snapshot(sd1), before)
    assert all("forward" not in vars(m) for m in _convs(sd1))


def test_the_pass_holds_one_copy_of_each_weight(sd1):
    """The ordinary weights give their memory up while packed (a NaN view of the right shape and dtype)."""
    convs = _convs(sd1)
    shapes = [m.weight.shape for m in convs]
    with sd1.sampling_session():
        for m, shape in zip(convs, shapes, strict=True):
            assert m.weight.shape == shape and m.weight.dtype == torch.float32
            assert m.weight.untyped_storage().nbytes() <= 4 and bool(torch.isnan(m.weight).all())
        assert sd1.dtype == torch.float32 and sd1.device.type == "cpu"
    assert all(m.weight.untyped_storage().nbytes() == m.weight.numel() * 4 for m in convs)


def test_nested_passes_pack_once_and_an_error_restores(sd1):
    before = snapshot(sd1)
    x, s, ctx = _inputs(sd1)
    with pytest.raises(RuntimeError, match="boom"):
        with sd1.sampling_session():
            with sd1.sampling_session():
                with torch.inference_mode():
                    sd1.apply_model(x, s, ctx)
            assert bool(torch.isnan(_convs(sd1)[0].weight).all())  # the outer pass still holds the packing
            raise RuntimeError("boom")
    assert_same_bits(snapshot(sd1), before)


def test_a_lora_pass_packs_the_patched_weights(sd1, tmp_path):
    """LoRA patches (conv layers included) are applied before packing and removed after unpacking."""
    from safetensors.torch import save_file

    before = snapshot(sd1)
    sd, _ = make_lora(sd1, "kohya", "lora", seed=3)
    save_file(sd, str(tmp_path / "l.safetensors"))
    lora = load_lora(sd1, tmp_path / "l.safetensors")
    from twosamplers.models.lora import LoraModel

    model = LoraModel(sd1, [(lora, 0.8, 0.0)])
    x, s, ctx = _inputs(sd1)
    with torch.inference_mode():
        with patched(sd1, [(lora, 0.8, 0.0)], clip=False):
            plain = sd1.network(x / (s[:, None, None, None] ** 2 + 1) ** 0.5, sd1.timesteps(s), ctx)
            patched_bits = snapshot(sd1)
        with model.sampling_session():
            assert bool(torch.isnan(_convs(sd1)[0].weight).all())
            packed = sd1.network(x / (s[:, None, None, None] ** 2 + 1) ** 0.5, sd1.timesteps(s), ctx)
    assert not all(torch.equal(patched_bits[k], before[k]) for k in before)  # the LoRA did patch something
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    assert_same_bits(snapshot(sd1), before)


def test_switched_off_by_the_environment(sd1, monkeypatch):
    monkeypatch.setenv(packed_conv.ENV, "0")
    with sd1.sampling_session():
        assert not bool(torch.isnan(_convs(sd1)[0].weight).any())
