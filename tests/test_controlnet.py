"""ControlNets on tiny random-weight models: loading (diffusers folder and ComfyUI's LDM single file), the
strength / step-window / chaining semantics of ControlNetApplyAdvanced, and bad input."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from safetensors.torch import save_file  # noqa: E402
from test_sd_backend import folder_to_single_file, save_folder, to_ldm_unet  # noqa: E402

from twosamplers import common_ksampler  # noqa: E402
from twosamplers.models.control import ControlApply, apply_controlnet, broadcast_batch, center_upscale  # noqa: E402
from twosamplers.models.controlnet import clear_cache, load_controlnet  # noqa: E402
from twosamplers.models.sd import UnsupportedModelError, load_sd  # noqa: E402
from twosamplers.models.sd import clear_cache as clear_sd_cache  # noqa: E402


def tiny_controlnet(unet, seed=3):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    with torch.no_grad():  # zero convolutions start at zero: make every weight matter
        for p in cn.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return cn.eval()


def to_ldm_controlnet(cn, prefix: str = "control_model.") -> dict:
    """diffusers ControlNetModel -> the LDM layout of ComfyUI's models/controlnet files."""

    class Encoder:  # the UNet-shaped part, renamed by the UNet helper
        config = cn.config

        @staticmethod
        def state_dict():
            return {k: v for k, v in cn.state_dict().items() if not k.startswith("controlnet_")}

    out = {k.removeprefix("model.diffusion_model."): v for k, v in to_ldm_unet(Encoder).items()}
    for k, v in cn.state_dict().items():
        parts = k.split(".")
        if parts[0] == "controlnet_down_blocks":
            out[f"zero_convs.{parts[1]}.0.{parts[2]}"] = v.clone()
        elif parts[0] == "controlnet_mid_block":
            out[f"middle_block_out.0.{parts[1]}"] = v.clone()
        elif parts[0] == "controlnet_cond_embedding":
            idx = {"conv_in": 0, "conv_out": 14}.get(parts[1])
            if idx is None:
                idx = 2 * int(parts[2]) + 2
                parts = parts[:2] + parts[3:]
            out[f"input_hint_block.{idx}.{parts[-1]}"] = v.clone()
    return {prefix + k: v.contiguous() for k, v in out.items()}


@pytest.fixture(scope="module")
def cn_files(tmp_path_factory, tiny_sd_files):
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("cn")
    paths = {}
    for name in ("sd1", "sdxl"):
        folder = tiny_sd_files[name + "_folder"]
        paths[name] = tiny_sd_files[name + "_file"]
        cn = tiny_controlnet(UNet2DConditionModel.from_pretrained(folder / "unet"))
        cn.save_pretrained(root / f"{name}_cn")
        paths[name + "_cn_folder"] = root / f"{name}_cn"
        save_file(to_ldm_controlnet(cn), str(root / f"{name}_cn.safetensors"))
        paths[name + "_cn_file"] = root / f"{name}_cn.safetensors"
    save_file(to_ldm_controlnet(cn, prefix=""), str(root / "bare_cn.safetensors"))
    paths["sdxl_cn_bare"] = root / "bare_cn.safetensors"
    clear_sd_cache()
    clear_cache()
    return paths


def _hint(h=64, w=64, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, 3, generator=g)


def _sample(model, pos, neg, steps=4, cfg=4.0, seed=1, latent=None, sampler="euler"):
    latent = latent if latent is not None else {"samples": torch.zeros(1, 4, 8, 8)}
    return common_ksampler(model, seed, steps, cfg, sampler, "karras", pos, neg, latent, disable_pbar=True)["samples"]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_folder_and_single_file_give_the_same_residuals(cn_files, family):
    model = load_sd(cn_files[family], device="cpu")
    a = load_controlnet(cn_files[family + "_cn_folder"], unet=model.unet)
    b = load_controlnet(cn_files[family + "_cn_file"], unet=model.unet)
    ctx = model.encode_prompt("a red barn")
    extras = ctx[0][1]
    added = None
    if family == "sdxl":
        added = {"text_embeds": extras["pooled_output"], "time_ids": model.network.time_ids(1, "cpu", extras)}
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500.0])
    hint = _hint().movedim(-1, 1)
    da, ma = a.residuals(x, t, ctx[0][0], hint, added)
    db, mb = b.residuals(x, t, ctx[0][0], hint, added)
    assert len(da) == len(db) == len(model.unet.config.block_out_channels) * (model.unet.config.layers_per_block + 1)
    for u, v in zip(da + [ma], db + [mb], strict=True):  # SDXL's attention differs in the last bits between the
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)  # two loaders, as for the UNet itself
    assert float(ma.abs().max()) > 0


def test_bare_ldm_keys_load_too(cn_files):
    model = load_sd(cn_files["sdxl"], device="cpu")
    cn = load_controlnet(cn_files["sdxl_cn_bare"], unet=model.unet)
    assert cn.sdxl


def _conds(model, prompt="a red barn"):
    return model.encode_prompt(prompt), model.encode_prompt("")


def test_strength_zero_is_bit_identical(cn_files):
    model = load_sd(cn_files["sd1"], device="cpu")
    cn = load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    pos, neg = _conds(model)
    p2, n2 = apply_controlnet(pos, neg, cn, _hint(), 0.0)
    assert p2 is pos and n2 is neg
    p3, n3 = apply_controlnet(pos, neg, cn, _hint(), 1.0)
    base = _sample(model, pos, neg)
    assert torch.equal(_sample(model, p2, n2), base)
    assert not torch.equal(_sample(model, p3, n3), base)
    assert "control" not in pos[0][1]  # inputs untouched


def test_residuals_enter_the_unet_scaled_by_strength(cn_files):
    """One model call with the ControlNet = the UNet called with strength x the ControlNet's residuals."""
    model = load_sd(cn_files["sd1"], device="cpu")
    cn = load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    pos, _ = _conds(model)
    hint = _hint(48, 40)  # another size and aspect: resized like ComfyUI
    p, _ = apply_controlnet(pos, pos, cn, hint, 0.7)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([3.0])
    got = model.apply_model(x, sigma, p[0][0], **p[0][1])
    ms = model.model_sampling
    xc = ms.calculate_input(sigma, x)
    t = model.timesteps(sigma)
    h = center_upscale(hint.movedim(-1, 1), 64, 64)
    down, mid = cn.residuals(xc, t, p[0][0], h, None)
    eps = model.unet(xc, t, encoder_hidden_states=p[0][0], return_dict=False,
                     down_block_additional_residuals=tuple(r * 0.7 for r in down),
                     mid_block_additional_residual=mid * 0.7)[0]
    assert torch.equal(got, ms.calculate_denoised(sigma, eps, x))


def test_two_chained_controlnets_add_up(cn_files):
    model = load_sd(cn_files["sd1"], device="cpu")
    a = load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    b = load_controlnet(cn_files["sd1_cn_folder"], unet=model.unet)
    pos, neg = _conds(model)
    h1, h2 = _hint(seed=1), _hint(seed=2)
    p, n = apply_controlnet(pos, neg, a, h1, 0.5)
    p, n = apply_controlnet(p, n, b, h2, 1.5)
    assert [c.control_net for c in p[0][1]["control"].chain()] == [a, b]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    sigma = torch.tensor([2.0])
    xc = model.model_sampling.calculate_input(sigma, x)
    t = model.timesteps(sigma)
    d1, m1 = a.residuals(xc, t, p[0][0], h1.movedim(-1, 1), None)
    d2, m2 = b.residuals(xc, t, p[0][0], h2.movedim(-1, 1), None)
    eps = model.unet(xc, t, encoder_hidden_states=p[0][0], return_dict=False,
                     down_block_additional_residuals=tuple(u * 0.5 + v * 1.5 for u, v in zip(d1, d2, strict=True)),
                     mid_block_additional_residual=m1 * 0.5 + m2 * 1.5)[0]
    got = model.apply_model(x, sigma, p[0][0], **p[0][1])
    assert torch.equal(got, model.model_sampling.calculate_denoised(sigma, eps, x))


@pytest.mark.parametrize("window", [(0.0, 1.0), (0.3, 0.7), (0.5, 0.5), (0.8, 1.0)])
def test_step_window_counts_calls(cn_files, window, monkeypatch):
    model = load_sd(cn_files["sd1"], device="cpu")
    cn = load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    seen = []
    real = cn.residuals

    def counting(x, t, *a, **k):
        seen.append(float(t[0]))
        return real(x, t, *a, **k)

    monkeypatch.setattr(cn, "residuals", counting)
    pos, neg = _conds(model)
    p, n = apply_controlnet(pos, neg, cn, _hint(), 1.0, *window)
    steps = 10
    _sample(model, p, n, steps=steps, cfg=3.0)
    from twosamplers.engine.ksampler import compute_sigmas

    ms = model.model_sampling
    sigmas = compute_sigmas(ms, "euler", "karras", steps)[:-1].tolist()
    hi, lo = ms.percent_to_sigma(window[0]), ms.percent_to_sigma(window[1])
    expected = [ms.timestep_of(s) for s in sigmas if lo <= s <= hi]
    # cond and uncond share the ControlNet, so they go through it in one call per step
    assert seen == expected


def test_hint_batch_broadcast_like_comfyui():
    h = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert broadcast_batch(h[:1], 4, 2).flatten().tolist() == [0, 0, 0, 0]
    assert broadcast_batch(h, 4, 2).flatten().tolist() == [0, 1, 0, 1]  # 2 images per entry, 2 entries
    assert broadcast_batch(h, 8, 2).flatten().tolist() == [0, 1, 2, 0, 0, 1, 2, 0]
    assert broadcast_batch(h[:2], 2, 1).flatten().tolist() == [0, 1]


def test_center_upscale_crops_to_the_aspect_ratio():
    x = torch.arange(12.0).reshape(1, 1, 2, 6)  # 6 wide, 2 high -> square: the middle 2 columns
    out = center_upscale(x, 2, 2)
    assert out.flatten().tolist() == [2.0, 3.0, 8.0, 9.0]


def test_controlnet_of_another_family_is_refused(cn_files):
    model = load_sd(cn_files["sd1"], device="cpu")
    with pytest.raises(UnsupportedModelError, match="does not fit"):
        load_controlnet(cn_files["sdxl_cn_file"], unet=model.unet)


def test_bad_files_and_arguments(cn_files, tmp_path):
    model = load_sd(cn_files["sd1"], device="cpu")
    with pytest.raises(FileNotFoundError, match="ControlNet not found"):
        load_controlnet(tmp_path / "nope.safetensors")
    with pytest.raises(UnsupportedModelError, match="whole Stable Diffusion checkpoint"):
        load_controlnet(cn_files["sd1"], unet=model.unet)
    cn = load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    pos, neg = _conds(model)
    with pytest.raises(ValueError, match="start_percent"):
        apply_controlnet(pos, neg, cn, _hint(), 1.0, 0.8, 0.2)
    with pytest.raises(ValueError, match="end_percent"):
        apply_controlnet(pos, neg, cn, _hint(), 1.0, 0.0, 1.5)
    with pytest.raises(ValueError, match="strength"):
        apply_controlnet(pos, neg, cn, _hint(), float("nan"))
    with pytest.raises(ValueError, match="IMAGE"):
        apply_controlnet(pos, neg, cn, torch.rand(3, 8, 8), 1.0)
    with pytest.raises(TypeError, match="loaded ControlNet"):
        ControlApply(object(), _hint(), 1.0)


def test_controlnet_needs_a_network_that_takes_residuals(cn_files):
    from twosamplers.models import NetworkModel

    model = load_sd(cn_files["sd1"], device="cpu")
    cn = load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    pos, neg = _conds(model)
    p, n = apply_controlnet(pos, neg, cn, _hint(), 1.0)
    plain = NetworkModel(lambda x, t, c, **k: x * 0)
    with pytest.raises(TypeError, match="cannot take ControlNet"):
        _sample(plain, p, n, steps=1)


# ------------------------------------------------------------------------------------------ inpainting
def tiny_inpaint_unet(seed=4):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=9, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return unet.eval()


@pytest.fixture(scope="module")
def inpaint_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint")
    folder = save_folder(root / "sd1_diffusers", False)
    import shutil

    shutil.rmtree(folder / "unet")
    tiny_inpaint_unet().save_pretrained(folder / "unet")
    single = folder_to_single_file(folder, root / "sd1_inpaint.safetensors", False)
    clear_sd_cache()
    return {"folder": folder, "file": single}


def test_inpainting_checkpoints_are_detected_from_the_weights(inpaint_files):
    a = load_sd(inpaint_files["folder"], device="cpu")
    b = load_sd(inpaint_files["file"], device="cpu")
    assert a.inpainting and b.inpainting
    assert a.latent_format.channels == 4


def test_nine_channel_input_layout(inpaint_files, monkeypatch):
    """The UNet sees [noisy latent (4), mask (1), masked-image latent (4)] with ComfyUI's rules."""
    from twosamplers.models.inpaint import inpaint_model_conditioning

    model = load_sd(inpaint_files["file"], device="cpu")
    seen = []
    real = model.unet.forward

    def spy(x, *a, **k):
        seen.append(x.clone())
        return real(x, *a, **k)

    monkeypatch.setattr(model.unet, "forward", spy)
    pixels = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1.0
    pos, neg = _conds(model)
    p, n, latent = inpaint_model_conditioning(pos, neg, model, pixels, mask, noise_mask=True)
    out = _sample(model, p, n, steps=2, cfg=2.0, latent=latent)
    assert out.shape == (1, 4, 8, 8)
    x = seen[0]
    assert x.shape == (2, 9, 8, 8)  # cond and uncond in one call
    m_lat = x[0, 4]
    assert set(m_lat.unique().tolist()) == {0.0, 1.0}
    assert m_lat[2:6, 1:5].eq(1).all() and m_lat[0].eq(0).all()
    grey = pixels.clone()
    grey[:, 16:48, 8:40] = 0.5
    expected = model.latent_format.process_in(model.encode_image(grey))
    torch.testing.assert_close(x[0, 5:], expected[0])
    assert torch.equal(x[0, 4:], x[1, 4:])


def test_noise_mask_only_uses_the_latent_itself(inpaint_files, monkeypatch):
    """SetLatentNoiseMask on an inpainting model: mask = the rounded noise mask, image = the latent itself."""
    model = load_sd(inpaint_files["file"], device="cpu")
    seen = []
    real = model.unet.forward
    monkeypatch.setattr(model.unet, "forward", lambda x, *a, **k: (seen.append(x.clone()), real(x, *a, **k))[1])
    samples = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    nm = torch.zeros(1, 1, 8, 8)
    nm[..., :4, :] = 0.7
    pos, neg = _conds(model)
    _sample(model, pos, neg, steps=1, cfg=1.0, latent={"samples": samples, "noise_mask": nm})
    x = seen[0]
    assert torch.equal(x[0, 4, :4], torch.ones(4, 8)) and torch.equal(x[0, 4, 4:], torch.zeros(4, 8))
    assert torch.equal(x[0, 5:], model.latent_format.process_in(samples)[0])
    seen.clear()
    _sample(model, pos, neg, steps=1, cfg=1.0, latent={"samples": torch.zeros(1, 4, 8, 8)})
    assert torch.equal(seen[0][0, 4], torch.ones(8, 8))  # no mask: all ones and the blank image
    assert torch.allclose(seen[0][0, 5:, 0, 0], torch.tensor([0.8223, -0.6876, 0.6364, 0.1380]))


def test_vae_encode_for_inpaint(inpaint_files):
    from twosamplers.models.inpaint import vae_encode_for_inpaint

    model = load_sd(inpaint_files["file"], device="cpu")
    pixels = torch.rand(1, 68, 70, 3, generator=torch.Generator().manual_seed(4))  # cropped to 64 x 64
    mask = torch.zeros(68, 70)
    mask[20:30, 20:30] = 1.0
    out = vae_encode_for_inpaint(model, pixels, mask, grow_mask_by=6)
    assert out["samples"].shape == (1, 4, 8, 8)
    nm = out["noise_mask"]
    assert nm.shape == (1, 1, 64, 64)
    ys, xs = torch.nonzero(nm[0, 0], as_tuple=True)
    # the centred crop drops 2 rows / 3 columns on top / left (mask rows 18..27, columns 17..26); a 6-px box with
    # padding 3 grows by 2 up/left and 3 down/right
    assert (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())) == (16, 30, 15, 29)
    grey = pixels[:, 2:66, 3:67].clone()
    grey[:, 18:28, 17:27] = 0.5
    assert torch.equal(out["samples"], model.encode_image(grey))
    with pytest.raises(ValueError, match="grow_mask_by"):
        vae_encode_for_inpaint(model, pixels, mask, grow_mask_by=65)


# ------------------------------------------------------------------------------------------- per pass
def _settings(model, prompt, seed, **kw):
    from twosamplers import SamplerSettings

    return SamplerSettings(model, model.encode_prompt(prompt), model.encode_prompt(""), seed=seed, steps=3, cfg=3.0,
                           **kw)


def test_per_pass_controlnet_crop_and_isolation(cn_files):
    from twosamplers import ControlNet, two_samplers_for_mask

    model = load_sd(cn_files["sd1"], device="cpu")
    hint = _hint(96, 96, seed=9)
    cn = ControlNet(cn_files["sd1_cn_file"], hint, 0.8, 0.0, 1.0)
    latent = {"samples": torch.zeros(1, 4, 16, 16)}
    mask = torch.zeros(16, 16)
    mask[5:11, 4:9] = 1.0
    base = _settings(model, "grass", 1)
    plain = _settings(model, "brick", 2)
    with_cn = _settings(model, "brick", 2, controlnets=[cn])
    assert with_cn.controlnets[0].source is load_controlnet(cn_files["sd1_cn_file"], unet=model.unet)
    a = two_samplers_for_mask(latent, mask, base, plain)["samples"]
    b = two_samplers_for_mask(latent, mask, base, with_cn)["samples"]
    c = two_samplers_for_mask(latent, mask, base, with_cn, crop_to_mask=True, crop_context=1)["samples"]
    outside = mask.eq(0).expand_as(a)
    assert torch.equal(a[outside], b[outside]) and torch.equal(b[outside], c[outside])  # base pass untouched
    assert not torch.equal(a, b)
    # the crop's ControlNet sees exactly the full run's hint pixels in its box
    box = (4, 3, 12, 10)
    part = with_cn.controlnets[0].cropped(box, (16, 16), 8).image
    full = center_upscale(hint.movedim(-1, 1), 128, 128)[..., 32:96, 24:80].movedim(1, -1)
    assert torch.equal(part, full)


def test_controlnet_in_the_regional_mode(cn_files):
    from twosamplers import ControlNet, regional_sample

    model = load_sd(cn_files["sd1"], device="cpu")
    cn = ControlNet(cn_files["sd1_cn_folder"], _hint(), 1.0)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    base = _settings(model, "grass", 1)
    a = regional_sample(latent, base, [(mask, _settings(model, "brick", 2))])["samples"]
    b = regional_sample(latent, base, [(mask, _settings(model, "brick", 2, controlnets=[cn]))])["samples"]
    assert not torch.equal(a, b)


def test_controlnet_errors_before_sampling(cn_files, tmp_path):
    from twosamplers import ControlNet, SamplerSettings
    from twosamplers.models.registry import load

    model = load_sd(cn_files["sd1"], device="cpu")
    with pytest.raises(FileNotFoundError, match="ControlNet not found"):
        _settings(model, "x", 1, controlnets=[ControlNet(tmp_path / "missing.safetensors", _hint())])
    with pytest.raises(UnsupportedModelError, match="does not fit"):
        _settings(model, "x", 1, controlnets=[ControlNet(cn_files["sdxl_cn_file"], _hint())])
    with pytest.raises(TypeError, match="ControlNet"):
        _settings(model, "x", 1, controlnets=["not a controlnet"])
    tex = load("textures")
    with pytest.raises(TypeError, match="cannot use ControlNets"):
        SamplerSettings(tex, tex.encode_prompt("grass"), tex.encode_prompt(""),
                        controlnets=[ControlNet(cn_files["sd1_cn_file"], _hint())])
    with pytest.raises(ValueError, match="start_percent"):
        ControlNet(cn_files["sd1_cn_file"], _hint(), 1.0, 0.9, 0.1)


def test_two_pass_mask_pass_uses_inpainting_inputs(inpaint_files, monkeypatch):
    from twosamplers import two_samplers_for_mask

    model = load_sd(inpaint_files["file"], device="cpu")
    seen = []
    real = model.unet.forward
    monkeypatch.setattr(model.unet, "forward", lambda x, *a, **k: (seen.append(x.clone()), real(x, *a, **k))[1])
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    mask = torch.zeros(8, 8)
    mask[2:6, 3:7] = 1.0
    base, inside = _settings(model, "grass", 1), _settings(model, "brick", 2)
    out = two_samplers_for_mask(latent, mask, base, inside)["samples"]
    x = seen[base.n_steps()]  # the mask pass's first call
    assert torch.equal(x[0, 4], mask)
    base_out = two_samplers_for_mask(latent, torch.zeros(8, 8), base, inside)["samples"]
    pixels = model.decode_latent(base_out)
    pixels[:, 16:48, 24:56] = 0.5
    expected = model.latent_format.process_in(model.encode_image(pixels))
    torch.testing.assert_close(x[0, 5:], expected[0])
    seen.clear()
    off = two_samplers_for_mask(latent, mask, base, inside, inpaint_conditioning=False)["samples"]
    x = seen[base.n_steps()]
    assert torch.equal(x[0, 5:], model.latent_format.process_in(base_out)[0])  # ComfyUI's noise-mask inputs
    assert not torch.equal(out, off)


# ------------------------------------------------------------------------------------------------ CLI
def _png(path, arr):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return str(path)


def test_cli_controlnet_round_trip(cn_files, tmp_path, capsys):
    import numpy as np

    from twosamplers.cli import main
    from twosamplers.job.imageio import read_settings

    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    m = _png(tmp_path / "mask.png", mask)
    hint = _png(tmp_path / "hint.png", (np.random.default_rng(0).random((64, 64, 3)) * 255))
    out = tmp_path / "out.png"
    args = ["generate", "--model", str(cn_files["sd1"]), "--base-prompt", "grass", "--mask-prompt", "brick",
            "--mask", m, "--steps", "2", "--device", "cpu", "-q"]
    spec = f"{cn_files['sd1_cn_file']}:{hint}:0.7:0:0.5"
    assert main(args + ["--mask-controlnet", spec, "-o", str(out)]) == 0
    stored, _ = read_settings(out)
    assert stored["base_controlnets"] == []
    assert stored["mask_controlnets"] == [{"file": str(cn_files["sd1_cn_file"]), "image": hint, "strength": 0.7,
                                           "start_percent": 0.0, "end_percent": 0.5}]
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "-o", str(again), "--device", "cpu", "-q"]) == 0
    assert again.read_bytes() == out.read_bytes()
    plain = tmp_path / "plain.png"
    assert main(args + ["-o", str(plain)]) == 0
    assert plain.read_bytes() != out.read_bytes()
    capsys.readouterr()
    bad = tmp_path / "bad.png"
    assert main(args + ["--mask-controlnet", f"{tmp_path / 'nope.safetensors'}:{hint}", "-o", str(bad)]) == 2
    assert "--mask-controlnet: ControlNet not found" in capsys.readouterr().err
    assert main(args + ["--mask-controlnet", f"{cn_files['sd1_cn_file']}:{hint}:0.5:0.9:0.1", "-o", str(bad)]) == 2
    assert "--mask-controlnet: start_percent 0.9 is after end_percent 0.1" in capsys.readouterr().err
    assert main(args + ["--controlnet", f"{cn_files['sdxl_cn_file']}:{hint}", "-o", str(bad)]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not bad.exists()
