"""Convolution weights kept in oneDNN's layout from a sampling pass on (models/packed_conv.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from test_lora import assert_same_bits, make_lora, snapshot  # noqa: E402

from twosamplers.models import packed_conv  # noqa: E402
from twosamplers.models.lora import LoraModel, load_lora, patched  # noqa: E402
from twosamplers.models.packed_conv import PackedConv2d, is_packed, unpack  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402

pytestmark = pytest.mark.skipif(not packed_conv.available(), reason="this torch has no oneDNN packed convolution")


@pytest.fixture
def sd1(tiny_sd_files, monkeypatch):
    monkeypatch.setattr(packed_conv, "MIN_IN_CHANNELS", 0)  # the tiny UNet is 32-64 channels wide: pack them all
    return load_sd(tiny_sd_files["sd1_file"], device="cpu", fp32_text_enc=True, cache=False)


def _inputs(model, batch=2, size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, size, size, generator=g)
    ctx = torch.randn(batch, 77, model.text_encoders[0].model.config.hidden_size, generator=g)
    return x, torch.full((batch,), 3.0), ctx


def _convs(model):
    return [m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d)]


def test_only_the_widest_convolutions_are_packed(sd1, monkeypatch):
    monkeypatch.setattr(packed_conv, "MIN_IN_CHANNELS", 64)
    with sd1.sampling_session():
        packed = {type(m) is PackedConv2d for m in _convs(sd1) if m.in_channels >= 64}
        rest = {type(m) for m in _convs(sd1) if m.in_channels < 64}
    assert packed == {True} and rest == {torch.nn.Conv2d}


def _placeholders(model) -> bool:
    return all(m._parameters["weight"].untyped_storage().nbytes() <= 4 for m in _convs(model))


def test_a_pass_packs_for_good_and_gives_the_convolutions_results(sd1):
    before = snapshot(sd1)
    for batch, size in ((2, 8), (1, 16), (3, 6)):  # one packing serves every input size
        x, s, ctx = _inputs(sd1, batch, size)
        unpack(sd1.unet)
        with torch.inference_mode():
            plain = sd1.apply_model(x, s, ctx)
            with sd1.sampling_session():
                packed = sd1.apply_model(x, s, ctx)
            later = sd1.apply_model(x, s, ctx)  # the network stays packed after the pass
        assert is_packed(sd1.unet) and all(type(m) is PackedConv2d for m in _convs(sd1))
        assert packed.shape == plain.shape and packed.is_contiguous()
        torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
        assert torch.equal(later, packed)
    assert _placeholders(sd1)  # one copy of each weight: the packed one
    assert_same_bits(snapshot(sd1), before)  # state_dict() gives the ordinary weights back, bit for bit
    assert not is_packed(sd1.unet) and all(type(m) is torch.nn.Conv2d for m in _convs(sd1))


def test_reading_a_weight_unpacks(sd1):
    with sd1.sampling_session():
        pass
    conv = _convs(sd1)[3]
    assert is_packed(sd1.unet) and bool(torch.isnan(conv._parameters["weight"]).all())
    w = conv.weight
    assert not is_packed(sd1.unet) and not bool(torch.isnan(w).any())
    with sd1.sampling_session():
        pass
    assert not bool(torch.isnan(_convs(sd1)[0].state_dict()["weight"]).any())  # a conv's own state_dict too
    assert not is_packed(sd1.unet)


def test_a_lora_pass_patches_the_ordinary_weights_and_packs_them(sd1, tmp_path):
    """LoRA patches (conv layers included) go on the ordinary weights (unpacked first), the pass packs the
    patched weights, and the originals come back after it."""
    from safetensors.torch import save_file

    before = snapshot(sd1)
    sd, _ = make_lora(sd1, "kohya", "lora", seed=3)
    save_file(sd, str(tmp_path / "l.safetensors"))
    lora = load_lora(sd1, tmp_path / "l.safetensors")
    model = LoraModel(sd1, [(lora, 0.8, 0.0)])
    x, s, ctx = _inputs(sd1)
    with sd1.sampling_session():  # packed before the LoRA comes
        pass
    with torch.inference_mode():
        with patched(sd1, [(lora, 0.8, 0.0)], clip=False):
            assert not is_packed(sd1.unet)
            plain = sd1.apply_model(x, s, ctx)
            patched_bits = snapshot(sd1)
        with model.sampling_session():
            assert is_packed(sd1.unet)
            packed = model.apply_model(x, s, ctx)
        assert not is_packed(sd1.unet)  # restoring the originals unpacked the patched weights first
    assert any(not torch.equal(patched_bits[k], before[k]) for k in before)  # the LoRA did patch something
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    assert_same_bits(snapshot(sd1), before)


def test_an_error_while_packing_restores_what_was_packed(sd1, monkeypatch):
    before = snapshot(sd1)
    ops = torch.ops.mkldnn
    real = ops._reorder_convolution_weight
    calls = []

    class Ops:
        def _reorder_convolution_weight(self, *a):
            calls.append(1)
            if len(calls) == 5:
                raise RuntimeError("boom")
            return real(*a)

        def __getattr__(self, name):
            return getattr(ops, name)

    monkeypatch.setattr(packed_conv.torch.ops, "mkldnn", Ops(), raising=False)
    with pytest.raises(RuntimeError, match="boom"):
        with sd1.sampling_session():
            pass
    monkeypatch.undo()
    assert not is_packed(sd1.unet) and all(type(m) is torch.nn.Conv2d for m in _convs(sd1))
    assert_same_bits(snapshot(sd1), before)


def test_switched_off_by_the_environment(sd1, monkeypatch):
    monkeypatch.setenv(packed_conv.ENV, "0")
    with sd1.sampling_session():
        assert not is_packed(sd1.unet)
    assert not any(bool(torch.isnan(m._parameters["weight"]).any()) for m in _convs(sd1))


def test_packing_and_unpacking_inside_inference_mode_leave_ordinary_tensors(sd1):
    """A pass opened inside inference mode (or a weight read there) must not turn the weights into inference
    tensors: LoRA patches them in place later, outside it."""
    before = snapshot(sd1)
    with torch.inference_mode():
        with sd1.sampling_session():
            pass
        assert is_packed(sd1.unet)
        w = _convs(sd1)[2].weight  # unpacks, still inside inference mode
    assert not w.is_inference() and not is_packed(sd1.unet)
    with torch.no_grad():
        w.add_(0.0)  # an in-place update outside inference mode, as patching does
    assert_same_bits(snapshot(sd1), before)
