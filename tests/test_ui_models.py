"""The web UI's per-pass model, LoRA and ControlNet fields and the joint regional mode, through the render adapter
and the PNG: on the tiny SD1.x checkpoint in a ComfyUI-style models folder (conftest's `tiny_models_dir`) and on
the built-in models. No browser, no Gradio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from twosamplers.job.imageio import load_image, read_settings
from twosamplers.ui import handlers as H
from twosamplers.ui.render import render

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


def _disc(n=64):
    from twosamplers.cli import demo_mask
    return demo_mask(n)


def _square(n=64, box=(slice(0, 24), slice(40, 64))):
    m = torch.zeros(n, n)
    m[box] = 1.0
    return m


def _hint(folder, seed=0):
    g = np.random.default_rng(seed)
    return H.save_input(g.integers(0, 256, (64, 64, 3), dtype=np.uint8), folder)


def _sd_fields(models: Path, **over) -> dict:
    f = H.default_fields(str(models.resolve() / "checkpoints" / "sd1.safetensors"))
    f.update({"width": 64, "height": 64, "base_steps": 2, "mask_steps": 2, "base_cfg": 4.0, "mask_cfg": 4.0,
              "base_prompt": "a field", "mask_prompt": "a red barn", "feather": 0.0, "crop_to_mask": False,
              **over})
    return f


def _render(tmp_path, models, fields, masks, name):
    s = H.fields_to_settings(fields, len(masks), models)
    return render(s, masks, output=tmp_path / f"{name}.png")


def _image(res) -> torch.Tensor:
    return load_image(res["image"])[0]


def test_loras_controlnets_embeddings_and_model_round_trip_through_the_png(tiny_models_dir, tmp_path):
    models = tiny_models_dir
    assert [v for _, v in H.model_choices(models, H.scan_models(models))][2].endswith("sd1.safetensors")
    cn_line = H.add_controlnet_line("", "cn.safetensors", _hint(tmp_path), 0.7, 0.0, 1.0)
    f = _sd_fields(models, mask_loras=H.add_lora_line("", "style.safetensors", 0.6, None), base_controlnets=cn_line,
                   mask_prompt="a embedding:pet barn")
    res = _render(tmp_path, models, f, [_disc()], "full")
    stored, _ = read_settings(res["image"])
    assert stored["embeddings"] == str(models.resolve() / "embeddings")
    assert stored["mask_loras"][0]["sha256"] and stored["mask_loras"][0]["source"] == "flag"
    # "Load settings from PNG": every panel field comes back as the page showed it
    settings, masks = H.load_png_settings(res["image"])
    back = H.settings_to_fields(settings, H.default_fields(), models)
    for k in H.FIELDS:
        if not k.startswith("r") and k != "use_image":
            assert back[k] == f[k], k
    again = _render(tmp_path, models, back, masks, "again")
    assert torch.equal(_image(again), _image(res))  # the same picture from the loaded fields, bit for bit
    # each list is applied to its own pass: without the mask pass's LoRA the inside changes most (the VAE's
    # decoder mixes the whole latent, so the outside moves a little too), without the base's ControlNet it changes
    inside = _disc() > 0.5
    diff = (_image(_render(tmp_path, models, dict(f, mask_loras=""), [_disc()], "no-lora")) - _image(res)).abs()
    assert diff[inside].mean() > 1.5 * diff[~inside].mean() > 0
    no_cn = _image(_render(tmp_path, models, dict(f, base_controlnets=""), [_disc()], "no-cn"))
    assert not torch.equal(no_cn, _image(res))


def test_region_loras_and_controlnets_in_regional_mode(tiny_models_dir, tmp_path):
    models = tiny_models_dir
    masks = [_disc(), _square()]
    region = {"r2_prompt": "blue water", "r2_cfg": 4.0, "r2_loras": "style.safetensors:1:0.5",
              "r2_controlnets": H.add_controlnet_line("", "cn.safetensors", _hint(tmp_path, 1), 1.0, 0.0, 0.5)}
    f = _sd_fields(models, mode="regional", regional_algorithm="joint", **region)
    with pytest.warns(UserWarning, match="fell back to the interleaved mode"):
        res = _render(tmp_path, models, f, masks, "regions")
    # a region with its own LoRAs/ControlNets cannot be conditioning of the base's pass: joint interleaves, says so
    assert res["note"] and "joint fell back to interleaved" in res["note"]
    settings, loaded = H.load_png_settings(res["image"])
    assert settings["mode"] == "joint" and len(loaded) == 2 and torch.equal(loaded[1], masks[1])
    back = H.settings_to_fields(settings, H.default_fields(), models)
    for k in ("mode", "regional_algorithm", "r2_prompt", "r2_loras", "r2_controlnets", "r2_model"):
        assert back[k] == f[k], k
    plain = _render(tmp_path, models, dict(f, r2_loras="", r2_controlnets=""), masks, "plain")
    assert not torch.equal(_image(plain), _image(res))
    with pytest.raises(ValueError, match=r"region 2 loras: .*missing"):
        _render(tmp_path, models, dict(f, r2_loras="missing.safetensors:1"), masks, "bad")
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.slow
def test_joint_regions_on_the_built_in_model(tmp_path):
    masks = [_disc(), _square()]
    f = H.default_fields()
    f.update({"width": 64, "height": 64, "base_steps": 3, "feather": 1.0, "mode": "regional"})
    joint = render(H.fields_to_settings(dict(f, regional_algorithm="joint"), 2), masks, output=tmp_path / "j.png")
    inter = render(H.fields_to_settings(dict(f, regional_algorithm="interleaved"), 2), masks,
                   output=tmp_path / "i.png")
    assert joint["note"] is None and not torch.equal(_image(joint), _image(inter))
    with pytest.warns(UserWarning, match="not used: regions"):
        other = render(H.fields_to_settings(dict(f, regional_algorithm="joint", r2_cfg=3.0), 2), masks,
                       output=tmp_path / "o.png")
    assert other["note"] == "joint uses the base's cfg, sampler and scheduler; not used: region 2 cfg=3.0"
    # joint is ONE pass: the same as the front door's regional_sample(mode="joint") with these settings
    from twosamplers.engine.front import SamplerSettings, regional_sample
    from twosamplers.engine.latent import empty_latent
    from twosamplers.models import load

    m = load("textures")

    def s(prompt, seed):
        return SamplerSettings(m, m.encode_prompt(prompt), m.encode_prompt(""), seed=seed, steps=3,
                               cfg=f["base_cfg"], sampler_name="euler", scheduler="normal")

    out = regional_sample(empty_latent(64, 64, channels=3, downscale=1), s("grass", 0),
                          [(masks[0], s("brick", 0)), (masks[1], s("water", 1))], mode="joint", feather=1.0)
    from PIL import Image

    from twosamplers.job.imageio import to_uint8
    with Image.open(joint["image"]) as im:
        assert np.array_equal(to_uint8(m.decode_latent(out["samples"])), np.asarray(im))
    settings, _ = H.load_png_settings(joint["image"])
    back = H.settings_to_fields(settings, H.default_fields())
    assert (settings["mode"], back["mode"], back["regional_algorithm"]) == ("joint", "regional", "joint")


def test_a_model_per_panel(tiny_models_dir, tmp_path):
    """The mask panel's model is the job's mask_model, a region's model its own; "same as base" is none."""
    f = H.default_fields()
    f.update({"width": 64, "height": 64, "base_steps": 3, "mask_steps": 3, "feather": 1.0})
    same = render(H.fields_to_settings(f), [_disc()], output=tmp_path / "same.png")
    own = render(H.fields_to_settings(dict(f, mask_model="ideal")), [_disc()], output=tmp_path / "own.png")
    settings, _ = H.load_png_settings(own["image"])
    assert settings["model"] == "textures" and settings["mask_model"] == "ideal"
    assert H.settings_to_fields(settings, H.default_fields())["mask_model"] == "ideal"
    assert H.settings_to_fields(read_settings(same["image"])[0], H.default_fields())["mask_model"] == H.SAME_MODEL
    inside = _disc() > 0.5
    away = ~torch.nn.functional.max_pool2d(inside[None].float(), 9, 1, 4)[0].bool()  # beyond the feathered seam
    a, b = _image(same), _image(own)
    assert not torch.equal(a[inside], b[inside]) and torch.equal(a[away], b[away])  # pixel space: exact
    regional = dict(f, mode="regional", mask_model="ideal", r2_model="ideal")
    res = render(H.fields_to_settings(regional, 2), [_disc(), _square()], output=tmp_path / "r.png")
    settings, _ = H.load_png_settings(res["image"])
    back = H.settings_to_fields(settings, H.default_fields())
    assert (back["mask_model"], back["r2_model"]) == ("ideal", "ideal")
    sd1 = str(tiny_models_dir.resolve() / "checkpoints" / "sd1.safetensors")
    with pytest.raises(ValueError, match="region 2 model: .*latents of 4 channels at 1/8 scale"):
        render(H.fields_to_settings(dict(regional, r2_model=sd1), 2), [_disc(), _square()],
               output=tmp_path / "bad.png")


def test_a_cli_png_with_clip_skip_and_a_base_model_renders_again_the_same(tiny_models_dir, tiny_sd_files, tmp_path):
    """clip_skip and the base pass's own model (base_model) have no widget: loading a CLI PNG keeps them, and the
    page's render gives the CLI's metadata and pixels."""
    from twosamplers.cli import main as cli_main
    from twosamplers.job.imageio import save_png

    ckpt = str(tiny_models_dir.resolve() / "checkpoints" / "sd1.safetensors")
    save_png(tmp_path / "mask.png", H.mask_image(_disc()))
    assert cli_main(["generate", "--model", ckpt, "--base-model", str(tiny_sd_files["sd1_folder"]), "--clip-skip",
                     "2", "--base-prompt", "a field", "--mask-prompt", "a red barn", "--mask",
                     str(tmp_path / "mask.png"), "--width", "64", "--height", "64", "--steps", "2", "--cfg", "4",
                     "-o", str(tmp_path / "cli.png"), "-q"]) == 0
    settings, masks = H.load_png_settings(tmp_path / "cli.png")
    kept = H.kept_settings(settings)
    assert kept == {"clip_skip": 2, "base_model": str(tiny_sd_files["sd1_folder"])}
    fields = H.settings_to_fields(settings, H.default_fields(), tiny_models_dir)
    ui = render(H.fields_to_settings(fields, 1, None, kept), masks, output=tmp_path / "ui.png")
    dropped = render(H.fields_to_settings(fields, 1, None, {"base_model": kept["base_model"]}), masks,
                     output=tmp_path / "dropped.png")
    cli_meta, ui_meta = read_settings(tmp_path / "cli.png")[0], read_settings(ui["image"])[0]
    assert {k: v for k, v in ui_meta.items() if k != "mask"} == {k: v for k, v in cli_meta.items() if k != "mask"}
    assert torch.equal(load_image(tmp_path / "cli.png")[0], _image(ui))
    assert not torch.equal(_image(ui), _image(dropped))  # clip_skip changes the picture


def test_the_mask_view_has_the_models_pixel_scale(tiny_models_dir, tmp_path, monkeypatch):
    """On an SD model (8 image pixels a latent pixel) mode joint ramps each region by at least one latent pixel:
    the page's mask view (`render.sampler_view`) is the mask the engine receives, at that scale."""
    import twosamplers.engine.front as front
    from twosamplers.engine.mask_ops import to_latent
    from twosamplers.ui.render import sampler_view

    masks = [_disc(), _square()]
    f = _sd_fields(tiny_models_dir, mode="regional", regional_algorithm="joint", r2_cfg=4.0, feather=1.0)
    settings = H.fields_to_settings(f, 2, tiny_models_dir)
    shown = sampler_view(settings, masks)
    seen = []
    real = front.joint_sample
    monkeypatch.setattr(front, "joint_sample", lambda s, b, rs, **k: seen.extend(r[0] for r in rs) or real(s, b, rs,
                                                                                                          **k))
    render(settings, masks, output=tmp_path / "o.png")
    assert len(seen) == len(shown) == 2
    for got, want in zip(seen, shown, strict=True):
        assert torch.equal(got.reshape(-1), to_latent(want, (1, 4, 8, 8)).reshape(-1))
    at_pixel_scale = front.sampler_masks(masks, (64, 64), 1, mode="joint", feather=1.0)
    assert not torch.equal(shown[0], at_pixel_scale[0])  # the scale is the model's, not the canvas's
