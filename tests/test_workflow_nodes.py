"""The ComfyUI core node classes: their semantics on small tensors, folders and model resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ToyNet
from PIL import Image

from twosamplers.engine.ksampler import common_ksampler
from twosamplers.models import NetworkModel
from twosamplers.nodes.conditioning import ConditioningCombine
from twosamplers.nodes.core import (
    CheckpointLoaderSimple,
    CLIPSetLastLayer,
    CLIPTextEncode,
    EmptyLatentImage,
    KSampler,
    KSamplerAdvanced,
    LatentCompositeMasked,
    SetLatentNoiseMask,
    VAEEncodeForInpaint,
)
from twosamplers.nodes.folders import Folders, next_counter, split_prefix
from twosamplers.nodes.handles import ClipHandle, ModelHandle, VaeHandle
from twosamplers.nodes.image import ImageScale, LoadImage, LoadImageMask
from twosamplers.nodes.mask import FeatherMask, GrowMask, ImageToMask, InvertMask, MaskToImage, SolidMask


class PixelToy(NetworkModel):
    """ToyNet as a model with text and image hooks that record what they were given."""

    def __init__(self):
        super().__init__(ToyNet())
        self.prompts = []

    def encode_prompt(self, text, **options):
        self.prompts.append((text, options))
        g = torch.Generator().manual_seed(len(text))
        return [[torch.randn(1, 3, 8, generator=g), {}]]

    def encode_image(self, pixels):
        return pixels[..., :3].movedim(-1, 1)[:, :, ::8, ::8].repeat(1, 2, 1, 1)[:, :4] * 2 - 1

    def decode_latent(self, samples):
        return samples[:, :3].movedim(1, -1)


def test_empty_latent_and_noise_mask():
    z = EmptyLatentImage().generate(72, 40, 2)[0]["samples"]
    assert z.shape == (2, 4, 5, 9) and not z.any()
    mask = torch.rand(3, 5)
    out = SetLatentNoiseMask().set_mask({"samples": z}, mask)[0]
    assert out["noise_mask"].shape == (1, 1, 3, 5) and out["samples"] is z


def test_ksampler_nodes_are_common_ksampler():
    model = PixelToy()
    m = ModelHandle(model)
    pos, neg = model.encode_prompt("a"), model.encode_prompt("bb")
    lat = {"samples": torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1))}
    got = KSampler().sample(m, 3, 4, 5.0, "euler", "karras", pos, neg, lat, 0.7, disable_pbar=True)[0]
    ref = common_ksampler(model, 3, 4, 5.0, "euler", "karras", pos, neg, lat, denoise=0.7, disable_pbar=True)
    assert torch.equal(got["samples"], ref["samples"])
    got = KSamplerAdvanced().sample(m, "disable", 3, 6, 5.0, "dpmpp_2m", "normal", pos, neg, lat, 2, 4, "enable",
                                    disable_pbar=True)[0]
    ref = common_ksampler(model, 3, 6, 5.0, "dpmpp_2m", "normal", pos, neg, lat, disable_noise=True, start_step=2,
                          last_step=4, force_full_denoise=False, disable_pbar=True)
    assert torch.equal(got["samples"], ref["samples"])
    plain = KSampler().sample(model, 3, 4, 5.0, "euler", "karras", pos, neg, lat, 0.7, disable_pbar=True)[0]
    assert torch.equal(plain["samples"], KSampler().sample(m, 3, 4, 5.0, "euler", "karras", pos, neg, lat, 0.7,
                                                           disable_pbar=True)[0]["samples"])
    assert m.network is model.network  # other attributes are read through from the model
    with pytest.raises(TypeError, match="MODEL"):
        KSampler().sample(VaeHandle(model), 3, 4, 5.0, "euler", "karras", pos, neg, lat)


def test_clip_nodes():
    model = PixelToy()
    clip = ClipHandle(model)
    CLIPTextEncode().encode(clip, "grass")
    skipped = CLIPSetLastLayer().set_last_layer(clip, -2)[0]
    CLIPTextEncode().encode(skipped, "brick")
    CLIPTextEncode().encode(CLIPSetLastLayer().set_last_layer(model, -3)[0], "water")  # a plain model as CLIP
    assert model.prompts == [("grass", {}), ("brick", {"clip_skip": -2}), ("water", {"clip_skip": -3})]
    with pytest.raises(TypeError, match="CLIP"):
        CLIPTextEncode().encode(VaeHandle(model), "x")
    a, b = model.encode_prompt("x"), model.encode_prompt("yy")
    assert ConditioningCombine().combine(a, b)[0] == a + b
    with pytest.raises(ValueError, match="stop_at_clip_layer"):
        CLIPSetLastLayer().set_last_layer(clip, 0)


def test_vae_encode_for_inpaint_greys_the_masked_pixels_and_grows_the_mask():
    model = PixelToy()
    pixels = torch.rand(1, 20, 19, 3)
    mask = torch.zeros(20, 19)
    mask[8:10, 8:10] = 1.0
    seen = []
    model.encode_image = lambda p: seen.append(p) or torch.zeros(1, 4, 2, 2)
    out = VAEEncodeForInpaint().encode(VaeHandle(model), pixels, mask, 2)[0]
    p = seen[0]
    assert p.shape == (1, 16, 16, 3)  # cropped to a multiple of 8, centred (offsets 2 and 1)
    assert torch.equal(p[0, 6:8, 7:9], torch.full((2, 2, 3), 0.5))
    assert torch.equal(p[0, 0, 0], pixels[0, 2, 1])
    nm = out["noise_mask"]
    assert nm.shape == (1, 1, 16, 16) and float(nm.sum()) == 9.0  # 2x2 grown by a 2x2 kernel with padding 1


def test_latent_composite_masked():
    dest = {"samples": torch.zeros(1, 4, 4, 4)}
    src = {"samples": torch.ones(1, 4, 2, 2)}
    out = LatentCompositeMasked().composite(dest, src, 8, 16, False)[0]["samples"]
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    half = LatentCompositeMasked().composite(dest, src, 24, 0, False, torch.full((2, 2), 0.5))[0]["samples"]
    assert half[0, 0, 0].tolist() == [0, 0, 0, 0.5] and not dest["samples"].any()


def test_mask_nodes():
    m = torch.zeros(1, 5, 5)
    m[0, 2, 2] = 1.0
    cross = GrowMask().expand_mask(m, 1, True)[0]
    assert int(cross.sum()) == 5 and cross[0, 1, 1] == 0
    square = GrowMask().expand_mask(m, 1, False)[0]
    assert int(square.sum()) == 9
    assert torch.equal(GrowMask().expand_mask(square, -1, False)[0], m)
    f = FeatherMask().feather(torch.ones(1, 2, 4), 2, 0, 2, 0)[0]
    # left ramp 0.5, 1 on columns 0, 1; the right ramp lands on columns 0 (factor 0.5) and -1 (1.0)
    assert f[0, 0].tolist() == [0.25, 1.0, 1.0, 1.0]
    assert torch.equal(InvertMask().invert(m)[0], 1.0 - m)
    img = MaskToImage().mask_to_image(m)[0]
    assert img.shape == (1, 5, 5, 3)
    assert torch.equal(ImageToMask().image_to_mask(img, "green")[0], m)
    assert SolidMask().solid(0.25, 3, 2)[0].shape == (1, 2, 3)


def test_image_scale():
    img = torch.rand(1, 10, 20, 3)
    assert ImageScale().upscale(img, "bilinear", 0, 5, "disabled")[0].shape == (1, 5, 10, 3)
    assert ImageScale().upscale(img, "nearest-exact", 8, 8, "center")[0].shape == (1, 8, 8, 3)
    assert ImageScale().upscale(img, "lanczos", 7, 3, "disabled")[0].shape == (1, 3, 7, 3)
    assert ImageScale().upscale(img, "area", 0, 0, "disabled")[0] is img


def test_load_image_nodes(tmp_path):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[1:3, 1:3, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    f = Folders(input_dir=tmp_path)
    image, mask = LoadImage(f).load_image("a.png [input]")
    assert image.shape == (1, 6, 5, 3) and abs(float(image[0, 0, 0, 0]) - 200 / 255) < 1e-7
    assert mask.shape == (1, 6, 5) and float(mask.sum()) == 4.0
    _, no_alpha = LoadImage(f).load_image("rgb.png")
    assert no_alpha.shape == (1, 64, 64) and not no_alpha.any()
    red = LoadImageMask(f).load_image("rgb.png", "red")[0]
    assert red.shape == (1, 6, 5) and abs(float(red.max()) - 200 / 255) < 1e-7
    assert not LoadImageMask(f).load_image("rgb.png", "alpha")[0].any()
    with pytest.raises(FileNotFoundError, match="input file 'nope.png' not found"):
        LoadImage(f).load_image("nope.png")
    with pytest.raises(ValueError, match="inside the input folder"):
        LoadImage(f).load_image("../a.png")


def test_folders_models_comfyui_and_extra_model_paths(tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (comfy / "models" / "checkpoints" / "sub" / "a.safetensors").write_bytes(b"x")
    (comfy / "input").mkdir()
    other = tmp_path / "a1111"
    (other / "models" / "Stable-diffusion").mkdir(parents=True)
    (other / "models" / "Stable-diffusion" / "b.safetensors").write_bytes(b"x")
    (other / "models" / "Lora").mkdir()
    (comfy / "extra_model_paths.yaml").write_text(
        f"a111:\n    base_path: {other}\n    checkpoints: models/Stable-diffusion\n    loras: |\n"
        "        models/Lora\n        models/LyCORIS\n")
    f = Folders.create(comfyui=comfy)
    assert f.input_dir == comfy / "input"
    assert f.resolve_checkpoint("sub/a.safetensors") == comfy / "models" / "checkpoints" / "sub" / "a.safetensors"
    assert f.resolve_checkpoint("b.safetensors") == other / "models" / "Stable-diffusion" / "b.safetensors"
    assert f.resolve_checkpoint("Textures") == "Textures"
    assert other / "models" / "LyCORIS" in f.search_dirs("loras")
    assert f.list_models("checkpoints") == ["b.safetensors", "sub/a.safetensors"]
    with pytest.raises(FileNotFoundError, match="checkpoint 'c.safetensors' not found"):
        f.resolve_checkpoint("c.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoints folder given"):
        Folders().resolve_checkpoint("c.safetensors")
    with pytest.raises(FileNotFoundError, match="--models folder not found"):
        Folders.create(models=tmp_path / "nope")
    names = CheckpointLoaderSimple.INPUT_TYPES(f)["required"]["ckpt_name"][0]
    assert names[:2] == ["textures", "ideal"] and "b.safetensors" in names


def test_output_names():
    assert split_prefix("ComfyUI") == ("", "ComfyUI")
    assert split_prefix("latents/run/x") == ("latents/run", "x")
    for bad in ("../x", "/abs/x", ""):
        with pytest.raises(ValueError, match="filename_prefix"):
            split_prefix(bad)


def test_next_counter(tmp_path):
    assert next_counter(tmp_path, "a") == 1
    for name in ("a_00003_.png", "a_00010_.latent", "ab_00099_.png", "a_x_00050_.png"):
        (tmp_path / name).write_bytes(b"")
    assert next_counter(tmp_path, "a") == 11
