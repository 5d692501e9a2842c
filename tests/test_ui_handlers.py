"""The web UI's handler functions (no browser, no Gradio): fields <-> settings <-> PNG metadata, canvas layers
-> masks, previews, the render adapter's progress, cancel and metadata (the CLI's)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from twosamplers.cli import main as cli_main
from twosamplers.engine.latent import latent_preview
from twosamplers.job import Job, job_keys
from twosamplers.job.imageio import decode_mask_png, encode_mask_png, read_settings, resize_mask
from twosamplers.ui import handlers as H
from twosamplers.ui.render import Cancelled, render, sampler_view


def _layer(h, w, painted: tuple[slice, slice], alpha=255):
    a = np.zeros((h, w, 4), np.uint8)
    a[..., 0] = 255
    a[painted + (3,)] = alpha
    return a


def _fields(**over):
    f = H.default_fields()
    f.update({"width": 64, "height": 64, "base_steps": 3, "mask_steps": 3, "feather": 1.0, **over})
    return f


def _models_dir(root):
    """A models folder with (empty) files: enough for the fields <-> settings conversions, which read no weights."""
    for rel in ("loras/style.safetensors", "loras/sub/b.safetensors", "controlnet/cn.safetensors",
                "embeddings/pet.safetensors"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def test_fields_settings_round_trip_covers_every_field(tmp_path):
    models = _models_dir(tmp_path / "models")
    hint = str(tmp_path / "hint.png")
    f = _fields(mode="regional", regional_algorithm="joint", base_seed=7, mask_cfg=4.5, r2_prompt="water",
                r2_seed=11, r3_sampler="heun", grow=3, crop_to_mask=False, base_negative="sand", r2_model="ideal",
                mask_model="ideal",
                base_loras="style.safetensors:0.5\nsub/b.safetensors:1:0.25", mask_loras="/abs/x.safetensors:-0.5",
                mask_controlnets=f"cn.safetensors:{hint}:0.8:0:0.5", r3_loras="style.safetensors:2",
                r2_controlnets=f"cn.safetensors:{hint}:1:0.25:1")
    s = H.fields_to_settings(f, n_regions=3, models_dir=models)
    # the job's dict (what the CLI's flags, a batch line and the PNG metadata are), every region in `regions`;
    # the base panel's model is the job's `model`, region 1's panel is the mask panel
    assert s == Job.from_dict(s, mask_tensors=[torch.ones(4, 4)] * 3).to_dict()
    assert set(s) == set(job_keys()) - {"base_model", "mask", "mask_prompt"} - {
        k for k in job_keys() if k.startswith("mask_") and k not in ("mask_channel",)} | {"regions"}
    assert [r["mask"] for r in s["regions"]] == [H.UI_MASK_NAME] * 3
    assert s["model"] == "textures" and [r.get("model") for r in s["regions"]] == ["ideal", "ideal", None]
    assert "model" not in H.fields_to_settings(dict(f, mask_model=H.SAME_MODEL), 3, models)["regions"][0]
    assert s["base_seed"] == 7 and s["regions"][0]["cfg"] == 4.5 and s["grow"] == 3 and s["base_negative"] == "sand"
    assert s["mode"] == "joint"  # regional mode, regions sampled jointly: the job's (and the CLI's) mode "joint"
    assert [r["prompt"] for r in s["regions"]] == ["brick", "water", "sand"] and s["regions"][2]["sampler"] == "heun"
    assert s["base_loras"] == [{"file": "style.safetensors", "strength_model": 0.5, "strength_clip": 0.5},
                               {"file": "sub/b.safetensors", "strength_model": 1.0, "strength_clip": 0.25}]
    assert s["lora_dir"] == str((models / "loras").resolve())  # names are looked up in the page's loras/
    assert s["regions"][0]["controlnets"] == [{"file": str((models / "controlnet" / "cn.safetensors").resolve()),
                                               "image": hint, "strength": 0.8, "start_percent": 0.0,
                                               "end_percent": 0.5}]
    assert s["regions"][1]["controlnets"][0]["start_percent"] == 0.25
    assert s["regions"][2]["loras"][0]["strength_model"] == 2.0
    back = H.settings_to_fields(s, H.default_fields(), models_dir=models)
    for k in H.FIELDS:
        if k != "use_image":
            assert back[k] == f[k], k
    # one region: the two-pass job's flat keys, region 1's own model its `mask_model`
    one = H.fields_to_settings(dict(f, mode="two-pass"), 1, models)
    assert set(one) == set(job_keys()) - {"base_model"} and one["mask_model"] == "ideal"
    assert H.settings_to_fields(one, H.default_fields(), models)["mask_cfg"] == 4.5


def test_regional_algorithm_is_the_job_mode(tmp_path):
    for mode, algorithm, job_mode in (("regional", "interleaved", "regional"), ("regional", "joint", "joint"),
                                      ("interleaved", "joint", "interleaved"), ("two-pass", "joint", "two-pass")):
        s = H.fields_to_settings(_fields(mode=mode, regional_algorithm=algorithm))
        assert s["mode"] == job_mode, (mode, algorithm)
    back = H.settings_to_fields({"mode": "joint"}, H.default_fields())
    assert back["mode"] == "regional" and back["regional_algorithm"] == "joint"
    assert H.settings_to_fields({"mode": "regional"}, back)["regional_algorithm"] == "interleaved"
    with pytest.raises(H.UIError, match="regions sampled"):
        H.fields_to_settings(_fields(mode="regional", regional_algorithm="both"))


def test_lora_and_controlnet_lines(tmp_path):
    models = _models_dir(tmp_path / "models")
    loras = (models / "loras").resolve()
    assert H.add_lora_line("", "style.safetensors", 0.75, None) == "style.safetensors:0.75"
    assert H.add_lora_line("a:1", "sub/b.safetensors", "1", "0.3") == "a:1\nsub/b.safetensors:1:0.3"
    with pytest.raises(H.UIError, match="choose a LoRA"):
        H.add_lora_line("", None, 1, None)
    with pytest.raises(H.UIError, match="LoRA strength must be a number"):
        H.add_lora_line("", "x", "strong", None)
    line = H.add_controlnet_line("", "cn.safetensors", "/h.png", 0.5, 0, 0.8)
    assert line == "cn.safetensors:/h.png:0.5:0:0.8"
    with pytest.raises(H.UIError, match="hint image"):
        H.add_controlnet_line("", "cn.safetensors", None, 1, 0, 1)
    # as a run records them: absolute files (shown by their name under loras/), prompt tags left to the prompt
    recorded = [{"name": "style", "file": str(loras / "style.safetensors"), "strength_model": 0.1 + 0.2,
                 "strength_clip": 0.5, "sha256": "0" * 64, "source": "flag"},
                {"name": "b", "file": str(loras / "sub" / "b.safetensors"), "strength_model": 1.0,
                 "strength_clip": 1.0, "sha256": "0" * 64, "source": "tag"},
                {"name": "/elsewhere/c.safetensors", "file": "/elsewhere/c.safetensors", "strength_model": 1.0,
                 "strength_clip": 1.0, "source": "flag"}]
    text = H.lora_lines(recorded, loras)
    assert text == f"style.safetensors:{0.1 + 0.2!r}:0.5\n/elsewhere/c.safetensors:1"
    assert H.lora_entries(text + "\n\n  ") == text.splitlines()
    # the job reads the lines back to the same strengths (0.1 + 0.2 is not 0.3: no digit is lost)
    job = Job.from_dict({"base_prompt": "", "mask_prompt": "", "mask": "m", "base_loras": H.lora_entries(text)})
    assert job.base.loras[0]["strength_model"] == 0.1 + 0.2


def test_embeddings_folder_is_set_when_a_prompt_names_one(tmp_path):
    models = _models_dir(tmp_path / "models")
    assert "embeddings" not in {k for k, v in H.fields_to_settings(_fields(), models_dir=models).items() if v}
    s = H.fields_to_settings(_fields(mask_prompt="a embedding:pet"), models_dir=models)
    assert s["embeddings"] == str((models / "embeddings").resolve())
    s = H.fields_to_settings(_fields(mode="regional", r2_negative="embedding:pet"), n_regions=2, models_dir=models)
    assert s["embeddings"] == str((models / "embeddings").resolve())
    assert H.fields_to_settings(_fields(mask_prompt="embedding:pet"))["embeddings"] is None  # no --models


def test_list_fields_are_validated_with_the_field_named(tmp_path):
    with pytest.raises(H.UIError, match=r"base loras\[0\]: strength_model must be a finite number"):
        H.fields_to_settings(_fields(base_loras="style:99999"))
    with pytest.raises(H.UIError, match=r"mask controlnets\[0\]"):
        H.fields_to_settings(_fields(mask_controlnets="cn.safetensors"))
    with pytest.raises(H.UIError, match=r"region 2 controlnets\[0\]: start_percent 0.9 is after"):
        H.fields_to_settings(_fields(mode="regional", r2_controlnets="cn:/h.png:1:0.9:0.1"), n_regions=2)


def test_saved_inputs_are_named_by_content(tmp_path):
    a = np.zeros((8, 8, 3), np.uint8)
    a[2, 3] = 200
    p = H.save_input(a, tmp_path)
    assert p == H.save_input(a.copy(), tmp_path) and Path(p).parent == (tmp_path / "inputs").resolve()
    assert p != H.save_input(np.zeros((8, 8, 3), np.uint8), tmp_path)
    from twosamplers.job.imageio import load_image
    assert torch.equal(load_image(p)[0], torch.from_numpy(a.astype(np.float32) / 255.0))
    assert H.save_input(np.dstack([a, np.full((8, 8), 255, np.uint8)]), tmp_path) == p  # alpha dropped


def test_fields_are_validated_with_the_argument_named():
    with pytest.raises(H.UIError, match="base steps: 0 is out of range"):
        H.fields_to_settings(_fields(base_steps=0))
    with pytest.raises(H.UIError, match="mask denoise"):
        H.fields_to_settings(_fields(mask_denoise=1.5))
    with pytest.raises(H.UIError, match="region 2 cfg"):
        H.fields_to_settings(_fields(mode="regional", r2_cfg=-1), n_regions=2)
    with pytest.raises(H.UIError, match="base sampler: unknown value"):
        H.fields_to_settings(_fields(base_sampler="nope"))
    with pytest.raises(H.UIError, match="whole number"):
        H.fields_to_settings(_fields(base_seed=1.5))
    with pytest.raises(H.UIError, match="mode 'regional'"):
        H.fields_to_settings(_fields(mode="two-pass"), n_regions=2)
    with pytest.raises(H.UIError, match="mode must be"):
        H.fields_to_settings(_fields(mode="joint-ish"))


def test_two_pass_options_are_off_outside_two_pass():
    s = H.fields_to_settings(_fields(mode="interleaved", crop_to_mask=True, differential=True))
    assert s["crop_to_mask"] is False and s["differential"] is False


def test_layers_to_masks():
    bg = np.full((32, 48, 4), 200, np.uint8)
    l1 = _layer(32, 48, (slice(4, 10), slice(5, 20)))
    l2 = _layer(32, 48, (slice(20, 30), slice(30, 40)), alpha=128)
    empty = _layer(32, 48, (slice(0, 0), slice(0, 0)))
    masks = H.canvas_masks({"background": bg, "layers": [l1, l2, empty], "composite": None})
    assert len(masks) == 2  # the trailing empty layer is dropped
    assert masks[0].shape == (32, 48) and masks[0].dtype == torch.float32
    assert masks[0][4:10, 5:20].eq(1).all() and masks[0].sum() == 6 * 15
    assert torch.allclose(masks[1][20:30, 30:40], torch.tensor(128 / 255)) and masks[1].sum() > 0
    # an empty layer between painted ones keeps the region numbering
    masks = H.canvas_masks({"background": bg, "layers": [empty, l2]})
    assert len(masks) == 2 and masks[0].sum() == 0


def test_nothing_painted_is_a_clear_error():
    bg = np.full((16, 16, 4), 200, np.uint8)
    with pytest.raises(H.UIError, match="no mask"):
        H.canvas_masks({"background": bg, "layers": []})
    with pytest.raises(H.UIError, match="no mask"):
        H.canvas_masks(None)


def test_uploaded_mask_replaces_region_one_and_is_resized():
    bg = np.full((32, 32, 4), 200, np.uint8)
    l1 = _layer(32, 32, (slice(0, 4), slice(0, 4)))
    up = np.zeros((64, 64, 3), np.uint8)
    up[32:, 32:] = 255
    masks = H.canvas_masks({"background": bg, "layers": [l1]}, up)
    assert masks[0].shape == (32, 32) and masks[0][20:, 20:].eq(1).all() and masks[0][:12, :12].eq(0).all()
    with pytest.raises(H.UIError, match="aspect"):
        H.canvas_masks({"background": bg, "layers": [l1]}, np.zeros((10, 40), np.uint8))
    rgba = np.full((8, 8, 4), 255, np.uint8)
    rgba[:4, :, 3] = 0  # transparent = repaint, as ComfyUI's alpha masks
    assert H.uploaded_mask(rgba)[:4].eq(1).all() and H.uploaded_mask(rgba)[4:].eq(0).all()


def test_loaded_mask_as_the_mask_upload_comes_back_exactly():
    m = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 24)).astype(np.float32) / 255.0)
    bg = np.zeros((16, 24, 4), np.uint8)
    assert torch.equal(H.canvas_masks({"background": bg, "layers": []}, H.mask_image(m))[0], m)


def test_loaded_masks_stand_in_for_dropped_layers_until_the_user_paints():
    """Gradio's editor can drop the layers a load sets: the loaded masks are used while no layer is painted
    (resized to the canvas), the painted layers as soon as there is a stroke; the mask upload still replaces
    region 1."""
    bg = np.full((32, 32, 4), 200, np.uint8)
    m1, m2 = torch.zeros(16, 16), torch.zeros(16, 16)
    m1[:4, :4], m2[8:, 8:] = 1.0, 0.5
    empty = _layer(32, 32, (slice(0, 0), slice(0, 0)))
    for layers in ([], [empty], [empty, empty]):
        masks = H.canvas_masks({"background": bg, "layers": layers}, None, [m1, m2])
        assert len(masks) == 2 and masks[0].shape == (32, 32) and masks[0][:7, :7].eq(1).all()
        # resized as ComfyUI resizes masks, then 8-bit: what the PNG embeds is what the page rendered with
        assert [torch.equal(a, H.eight_bit(resize_mask(b, 32, 32))) for a, b in zip(masks, (m1, m2), strict=True)] \
            == [True] * 2
        assert all(torch.equal(decode_mask_png(encode_mask_png(a)), a) for a in masks)
    assert [tuple(m.shape) for m in H.canvas_masks(None, None, [m1, m2])] == [(16, 16), (16, 16)]
    stroke = _layer(32, 32, (slice(0, 2), slice(0, 2)))
    masks = H.canvas_masks({"background": bg, "layers": [empty, stroke]}, None, [m1, m2])
    assert len(masks) == 2 and masks[0].sum() == 0 and masks[1].sum() == 4  # the user repainted: the layers
    up = np.zeros((32, 32, 3), np.uint8)
    up[30:, 30:] = 255
    masks = H.canvas_masks({"background": bg, "layers": []}, up, [m1, m2])
    assert masks[0].sum() == 4 and torch.equal(masks[1], H.eight_bit(resize_mask(m2, 32, 32)))
    with pytest.raises(H.UIError, match="aspect"):
        H.canvas_masks({"background": bg, "layers": []}, None, [torch.ones(8, 16)])


def test_the_mask_view_is_grown_and_feathered():
    bg = np.full((32, 32, 4), 100, np.uint8)
    masks = H.canvas_masks({"background": bg, "layers": [_layer(32, 32, (slice(12, 20), slice(12, 20)))]})

    def view(**over):
        return H.overlay(bg, sampler_view(H.fields_to_settings(_fields(width=32, height=32, **over)), masks))

    tinted = lambda im: (np.abs(im.astype(int) - 100).sum(-1) > 3).sum()  # noqa: E731
    plain, grown, soft = view(feather=0), view(grow=3, feather=0), view(feather=2.0)
    assert plain.shape == (32, 32, 3) and plain.dtype == np.uint8
    assert tinted(plain) == 64 and tinted(grown) == 14 * 14 and tinted(soft) > 64


def _engine_masks(monkeypatch) -> list:
    """The masks the engine under the front door receives (each region's, in order) while a render runs."""
    import twosamplers.engine.front as front

    seen = []
    real = {name: getattr(front, name) for name in ("two_pass_sample", "interleaved_sample", "joint_sample")}
    monkeypatch.setattr(front, "two_pass_sample", lambda s, m, *a, **k: seen.append(m) or real["two_pass_sample"](
        s, m, *a, **k))
    monkeypatch.setattr(front, "interleaved_sample", lambda lat, b, rs, *a, **k: seen.extend(r[0] for r in rs) or
                        real["interleaved_sample"](lat, b, rs, *a, **k))
    monkeypatch.setattr(front, "joint_sample", lambda s, b, rs, **k: seen.extend(r[0] for r in rs) or
                        real["joint_sample"](s, b, rs, **k))
    return seen


@pytest.mark.parametrize("mode", ["two-pass", "interleaved", "regional", "joint"])
def test_the_mask_view_is_the_samplers_mask_in_every_mode(tmp_path, mode, monkeypatch):
    """"Show mask" draws `render.sampler_view`: for the page's job in every mode it equals, value for value, the
    mask the engine receives when Generate renders that job (grow, feather, the interleaved modes' overlap
    dilation, joint's at-least-one-latent-pixel ramp; joint's engine gets it at latent size)."""
    bg = np.full((64, 64, 4), 90, np.uint8)
    layers = [_layer(64, 64, (slice(8, 30), slice(6, 40))), _layer(64, 64, (slice(28, 50), slice(20, 60)), 180),
              _layer(64, 64, (slice(40, 60), slice(2, 20)))]
    n = 1 if mode in ("two-pass", "interleaved") else 3
    masks = H.canvas_masks({"background": bg, "layers": layers[:n]})
    f = _fields(mode="regional" if mode == "joint" else mode, regional_algorithm="joint" if mode == "joint" else
                "interleaved", grow=2, feather=1.5, base_steps=1, mask_steps=1, r2_steps=1, r3_steps=1)
    settings = H.fields_to_settings(f, n, None, {"overlap_factor": 3})
    assert settings["mode"] == mode
    shown = sampler_view(settings, masks)
    seen = _engine_masks(monkeypatch)
    render(settings, masks, output=tmp_path / "o.png")
    assert len(seen) == len(shown) == n
    for got, want in zip(seen, shown, strict=True):
        if mode == "joint":
            from twosamplers.engine.mask_ops import to_latent

            want = to_latent(want, (1, 3, 64, 64))
        assert torch.equal(got.reshape(-1), want.reshape(-1))
    view = H.overlay(H.editor_background({"background": bg}), shown)
    assert view.shape == (64, 64, 3) and (view != 90).any()


def test_editor_value_restores_masks_as_layers():
    m = torch.zeros(16, 24)
    m[2:6, 3:9] = 1.0
    m[10, 10] = 0.5
    value = H.editor_value(np.zeros((16, 24, 3), np.uint8), [m])
    assert len(value["layers"]) == 1 and value["background"].shape == (16, 24, 4)
    back = H.canvas_masks(value)
    assert torch.allclose(back[0], torch.round(m * 255) / 255)


def test_paths_under_home_are_shown_short():
    assert H.home_short("/home/ann/ComfyUI/models", "/home/ann") == "~/ComfyUI/models"
    assert H.home_short("/home/ann", "/home/ann") == "~"
    assert H.home_short("/data/models", "/home/ann") == "/data/models"
    assert H.home_short("/home/annie/models", "/home/ann") == "/home/annie/models"


def test_scan_models_lists_comfyui_folders(tmp_path):
    for rel in ("checkpoints/sd15.safetensors", "checkpoints/sub/xl.safetensors", "loras/a.safetensors",
                "controlnet/canny.safetensors", "embeddings/neg.pt", "checkpoints/readme.txt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "checkpoints" / "folder").mkdir()
    (tmp_path / "checkpoints" / "folder" / "model_index.json").write_text("{}")
    found = H.scan_models(tmp_path)
    assert found == {"checkpoints": ["folder", "sd15.safetensors", "sub/xl.safetensors"],
                     "loras": ["a.safetensors"], "controlnet": ["canny.safetensors"], "embeddings": ["neg.pt"]}
    values = [v for _, v in H.model_choices(tmp_path, found)]
    assert values[:2] == ["textures", "ideal"] and values[3].endswith("checkpoints/sd15.safetensors")
    with pytest.raises(H.UIError, match="not a folder"):
        H.scan_models(tmp_path / "missing")


def test_cheap_preview_of_pixel_and_latent_models():
    from twosamplers.models import load
    from twosamplers.models.base import LatentFormat

    model = load("textures")
    x0 = torch.rand(1, 3, 8, 8) * 2 - 1
    exact = latent_preview(x0, model.latent_format, model.decode_latent)
    assert exact.shape == (8, 8, 3)
    assert np.array_equal(exact, np.clip(255.0 * model.decode_latent(x0)[0].numpy(), 0, 255).astype(np.uint8))
    lat = latent_preview(torch.randn(1, 4, 8, 8), LatentFormat(0.18215, 4, 8))
    assert lat.shape == (64, 64, 3) and lat.min() == 0 and lat.max() == 255


def _run(tmp_path, fields, masks, name="out.png", **kw):
    s = H.fields_to_settings(fields, len(masks))
    return render(s, masks, output=tmp_path / name, preview=tmp_path / f"p-{name}", **kw)


def _disc(n=64):
    from twosamplers.cli import demo_mask
    return demo_mask(n)


def test_render_writes_the_cli_metadata_and_the_cli_renders_it_again(tmp_path):
    steps = []
    res = _run(tmp_path, _fields(), [_disc()], on_step=lambda i, n, x0, m: steps.append((i, n)))
    assert steps[-1] == (5, 6) and len(steps) == 6  # 3 base + 3 mask steps, counted over the whole job
    settings, mask = read_settings(res["image"])
    assert mask is not None and torch.equal(mask, _disc())
    assert settings["base_prompt"] == "grass" and settings["mask_steps"] == 3
    # the CLI reads the UI's PNG: same settings -> the same picture, bit for bit
    assert cli_main(["generate", "--from", res["image"], "-o", str(tmp_path / "cli.png"), "-q"]) == 0
    from PIL import Image
    with Image.open(res["image"]) as a, Image.open(tmp_path / "cli.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with Image.open(res["preview"]) as p:
        assert p.size == (64 * 3 + 8, 64)  # mask | base | result


def test_png_settings_round_trip_through_the_handlers(tmp_path):
    f = _fields(mode="regional", r2_prompt="water", r2_seed=4, mask_seed=9, crop_to_mask=False)
    m2 = torch.zeros(64, 64)
    m2[:16, :16] = 1.0
    res = _run(tmp_path, f, [_disc(), m2])
    settings, masks = H.load_png_settings(res["image"])
    assert len(masks) == 2 and torch.equal(masks[1], m2) and torch.equal(masks[0], _disc())
    back = H.settings_to_fields(settings, H.default_fields())
    for k in H.FIELDS:
        if k not in ("use_image",) and not k.startswith("r3_"):
            assert back[k] == f[k], k
    with pytest.raises(H.UIError, match="no twosamplers settings"):
        from twosamplers.job.imageio import save_png
        save_png(tmp_path / "plain.png", np.zeros((4, 4, 3), np.uint8))
        H.load_png_settings(tmp_path / "plain.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(H.UIError, match="not a readable image"):
        H.load_png_settings(tmp_path / "junk.png")


def test_render_is_deterministic_and_cancel_stops_between_steps(tmp_path):
    a = _run(tmp_path, _fields(), [_disc()], name="a.png")
    b = _run(tmp_path, _fields(), [_disc()], name="b.png")
    from PIL import Image
    with Image.open(a["image"]) as ia, Image.open(b["image"]) as ib:
        assert np.array_equal(np.asarray(ia), np.asarray(ib))
    ev = threading.Event()
    seen = []

    def on_step(i, n, x0, m):
        seen.append(i)
        if i == 1:
            ev.set()

    with pytest.raises(Cancelled):
        _run(tmp_path, _fields(), [_disc()], name="c.png", on_step=on_step, cancel=ev)
    assert seen == [0, 1] and not (tmp_path / "c.png").exists()


def test_render_rejects_bad_sizes_clearly(tmp_path):
    with pytest.raises(ValueError, match="aspect"):
        _run(tmp_path, _fields(width=64, height=32), [_disc()])


def test_a_run_waits_for_every_model_it_uses(tmp_path):
    """A run takes the lock of each of its models: another tab's run on the mask pass's model holds it back."""
    from twosamplers.ui.render import ModelLocks

    locks = ModelLocks()
    with locks.hold(["textures", "ideal", "textures"]):
        assert locks.lock("textures").locked() and locks.lock("ideal").locked()
    assert not locks.lock("textures").locked() and not locks.lock("ideal").locked()
    s = H.fields_to_settings(_fields(), 1)
    s["mask_model"] = "ideal"
    done = threading.Event()

    def run():
        render(s, [_disc()], output=tmp_path / "w.png", locks=locks)
        done.set()

    other = locks.lock("ideal")
    other.acquire()  # another run is using "ideal"
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert not done.wait(1.0) and not (tmp_path / "w.png").exists()
    finally:
        other.release()
    thread.join(120)
    assert done.is_set() and (tmp_path / "w.png").exists()


def test_a_cli_png_with_fields_the_page_lacks_renders_again_the_same(tmp_path):
    """A CLI PNG with non-default fields that have no widget (comfyui_version, inversion, overlap_factor, ...):
    loading keeps them, Generate merges them, and the page's PNG has the CLI's metadata and pixels."""
    from PIL import Image

    from twosamplers.job.imageio import save_png

    save_png(tmp_path / "mask.png", H.mask_image(_disc()))
    hidden = ["--comfyui-version", "0.3.64", "--inversion", "binary", "--crop-context", "4",
              "--no-inpaint-conditioning", "--no-base-covers-mask", "--base-only-steps", "2", "--overlap-factor", "3"]
    assert cli_main(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask",
                     str(tmp_path / "mask.png"), "--width", "64", "--height", "64", "--steps", "3", "--feather", "1",
                     "--mode", "interleaved",
                     *hidden, "-o", str(tmp_path / "cli.png"), "-q"]) == 0
    settings, masks = H.load_png_settings(tmp_path / "cli.png")
    kept = H.kept_settings(settings)
    assert kept == {"comfyui_version": "0.3.64", "inversion": "binary", "crop_context": 4,
                    "inpaint_conditioning": False, "base_covers_mask": False, "base_only_steps": 2,
                    "overlap_factor": 3}
    assert H.kept_line(kept).endswith("inpaint_conditioning false, inversion binary, overlap_factor 3")
    fields = H.settings_to_fields(settings, H.default_fields())
    ui = render(H.fields_to_settings(fields, len(masks), None, kept), masks, output=tmp_path / "ui.png")
    dropped = render(H.fields_to_settings(fields, len(masks)), masks, output=tmp_path / "dropped.png")
    cli_meta, ui_meta = read_settings(tmp_path / "cli.png")[0], read_settings(ui["image"])[0]
    assert {k: v for k, v in ui_meta.items() if k != "mask"} == {k: v for k, v in cli_meta.items() if k != "mask"}
    assert ui_meta["mask"] == H.UI_MASK_NAME  # the mask itself is embedded (the CLI's names its file)
    with Image.open(tmp_path / "cli.png") as a, Image.open(ui["image"]) as b, Image.open(dropped["image"]) as c:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))  # without them: another picture


def test_kept_fields_are_validated_and_cannot_replace_page_fields():
    with pytest.raises(H.UIError, match="overlap factor"):
        H.fields_to_settings(_fields(), 1, None, {"overlap_factor": -1})
    with pytest.raises(H.UIError, match="page has a field"):
        H.fields_to_settings(_fields(), 1, None, {"base_steps": 9})
    assert H.kept_settings(H.fields_to_settings(_fields())) == {}  # a page-made job keeps nothing
    s = H.fields_to_settings(_fields(), 1, None, {"lora_dir": "/x/loras", "clip_skip": None})
    assert s["lora_dir"] == "/x/loras" and s["clip_skip"] is None
