"""The Flux / SD3 node classes' inputs, checks and outputs (the numbers are in test_flow_workflows.py)."""

from __future__ import annotations

import pytest
import torch

from twosamplers.engine.schedules import ModelSamplingFlow
from twosamplers.engine.schedules import ModelSamplingFlux as MSFlux
from twosamplers.models import load
from twosamplers.nodes.flow import (
    CLIPLoader,
    CLIPTextEncodeFlux,
    DualCLIPLoader,
    EmptySD3LatentImage,
    FluxDisableGuidance,
    FluxGuidance,
    ModelSamplingFlux,
    ModelSamplingSD3,
    TripleCLIPLoader,
    UNETLoader,
)
from twosamplers.nodes.folders import Folders
from twosamplers.nodes.handles import ModelHandle


def test_empty_sd3_latent_and_guidance_nodes():
    lat = EmptySD3LatentImage().generate(48, 32, 2)[0]["samples"]
    assert lat.shape == (2, 16, 4, 6) and not lat.any()
    with pytest.raises(ValueError, match="width"):
        EmptySD3LatentImage().generate(8, 32, 1)
    cond = [[torch.zeros(1, 3, 8), {"pooled_output": torch.ones(1, 4)}], [torch.ones(1, 3, 8), {}]]
    g = FluxGuidance().append(cond, 2.5)[0]
    assert [e[1]["guidance"] for e in g] == [2.5, 2.5] and "guidance" not in cond[0][1]  # input untouched
    assert g[0][1]["pooled_output"] is cond[0][1]["pooled_output"]
    assert FluxDisableGuidance().append(g)[0][0][1]["guidance"] is None
    with pytest.raises(ValueError, match="guidance"):
        FluxGuidance().append(cond, 101.0)


def test_loaders_list_and_find_files_in_both_folders(flow_models_dir):
    folders = Folders.create(flow_models_dir)
    names = UNETLoader.INPUT_TYPES(folders)["required"]["unet_name"][0]
    assert "flux_dev.safetensors" in names and "sd35_medium.safetensors" in names
    assert "t5xxl.safetensors" in DualCLIPLoader.INPUT_TYPES(folders)["required"]["clip_name1"][0]
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        UNETLoader(folders).check_inputs("missing.safetensors")
    with pytest.raises(ValueError, match="type"):
        DualCLIPLoader(folders).load_clip("clip_l.safetensors", "t5xxl.safetensors", "sdxl")
    with pytest.raises(ValueError, match="weight_dtype"):
        UNETLoader(folders).load_unet("flux_dev.safetensors", "int8")
    a = UNETLoader(folders).load_unet("flux_dev.safetensors", "default")[0]
    b = UNETLoader(folders).load_unet("flux_dev.safetensors", "default")[0]
    assert a.model is b.model  # loaded once per run
    clip = TripleCLIPLoader(folders).load_clip("t5xxl.safetensors", "clip_g.safetensors", "clip_l.safetensors")[0]
    assert clip.encode("a fox")[0][0].shape == (1, 154, 128)
    t5 = CLIPLoader(folders).load_clip("t5xxl.safetensors", "sd3")[0]
    assert t5.encode("a fox")[0][0].shape == (1, 77, 128)
    flux = DualCLIPLoader(folders).load_clip("t5xxl.safetensors", "clip_l.safetensors", "flux")[0]
    c = CLIPTextEncodeFlux().encode(flux, "a fox", "a red fox", 4.0)[0]
    assert c[0][0].shape == (1, 256, 128) and c[0][1]["guidance"] == 4.0


def test_model_sampling_nodes(flow_models_dir):
    m = ModelHandle(load(flow_models_dir / "diffusion_models" / "flux_schnell.safetensors", device="cpu"))
    f = ModelSamplingFlux().patch(m, 1.15, 0.5, 512, 512)[0]
    assert isinstance(f.model_sampling, MSFlux) and f.model_sampling.shift == pytest.approx(0.5 + 768 * 0.65 / 3840)
    assert f.model.network is m.model.network and isinstance(m.model_sampling, ModelSamplingFlow)
    s = ModelSamplingSD3().patch(m, 2.0)[0]
    assert (s.model_sampling.shift, s.model_sampling.multiplier) == (2.0, 1000.0)
    with pytest.raises(TypeError, match="Flux or SD3"):
        ModelSamplingSD3().patch(ModelHandle(load("textures")), 3.0)
