"""Issue 23 round 3: what real workflows met. Flux / SD3 all-in-one checkpoints under `run --allow-pickle`, refusal
notes that tell ComfyUI core and Impact Pack nodes from other node packs, combo values saved in the wrong place,
SDXL UNets that do not fit their text encoders, SigLIP vision models and Flux / SD3 ControlNets named as out of
scope."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from twosamplers.nodes.registry import NODES, known_names, scope_note  # noqa: E402
from twosamplers.workflow import WorkflowError, run  # noqa: E402
from twosamplers.workflow.graph import check_value  # noqa: E402


def test_flow_checkpoint_loads_when_pickles_are_allowed(flow_models_dir, tmp_path):
    """`run --allow-pickle` with a Flux all-in-one checkpoint: a permission, not an option the flow loader refuses."""
    from twosamplers.models.registry import _load_checkpoint

    model = _load_checkpoint(flow_models_dir / "checkpoints" / "flux_dev_aio.safetensors", device="cpu",
                             allow_pickle=True)
    assert model.family == "flux"
    with pytest.raises(ValueError, match="only apply to"):
        _load_checkpoint(flow_models_dir / "checkpoints" / "flux_dev_aio.safetensors", device="cpu", prediction="v")


@pytest.mark.parametrize(("name", "note"), [
    ("LatentSender", "out of scope: UI bridges and queue loops"),
    ("ImpactConditionalStopIteration", "out of scope: UI bridges and queue loops"),
    ("## make-basic_pipe [2c8c61]", "out of scope: workflow components"),
    ("ControlNetApplySD3", "out of scope: Flux / SD3 ControlNets"),
    ("ReferenceLatent", "out of scope: edit models"),
    ("ImpactCompare", "an Impact Pack node outside the two-sampler family, not emulated yet"),
    ("Text Multiline", "out of scope: a custom node of another node pack (not in ComfyUI 0.30 or Impact Pack)"),
])
def test_scope_notes(name, note):
    assert scope_note(name) == note


def test_known_name_lists():
    core, impact = known_names("core"), known_names("impact")
    assert {"KSampler", "StyleModelApply", "InstructPixToPixConditioning"} <= core and len(core) > 500
    assert {"TwoSamplersForMask", "RegionalSampler", "PreviewBridge"} <= impact and "KSampler" not in impact
    unsupported_core = sorted(core - set(NODES))
    assert all(scope_note(t) != "out of scope: a custom node of another node pack (not in ComfyUI 0.30 or Impact "
                              "Pack)" for t in unsupported_core)


def test_control_value_in_a_combo_says_what_to_do(tmp_path):
    msg = check_value("sampler_name", (["euler", "heun"],), "fixed")
    assert "control_after_generate" in msg and "`--set ID.sampler_name=VALUE`" in msg
    wf = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "2": {"class_type": "LatentUpscale", "inputs": {"samples": ["1", 0], "upscale_method": "fixed",
                                                          "width": 64, "height": 64, "crop": "disabled"}},
          "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}}}
    with pytest.raises(WorkflowError, match=r"`--set 2\.upscale_method=VALUE`"):
        run(wf, output_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_sdxl_unet_that_does_not_fit_its_text_encoders_is_refused(tiny_sd_files, tmp_path):
    """A refiner-layout file (one OpenCLIP encoder) around a base UNet: a clear error, not a shape traceback."""
    from twosamplers.models.sd import load_sd
    from twosamplers.models.sd_loading import UnsupportedModelError

    sd = load_file(str(tiny_sd_files["sdxl_file"]))
    out = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v for k, v in sd.items()
           if not k.startswith("conditioner.embedders.0.")}
    path = tmp_path / "refiner.safetensors"
    save_file(out, str(path))
    with pytest.raises(UnsupportedModelError, match="size embedding takes 112 values.*SDXL refiner layout"):
        load_sd(path, device="cpu", cache=False)


def test_siglip_vision_model_is_named_out_of_scope():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from twosamplers.models.clip_vision import ClipVisionError, clip_vision_from_state

    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=28, patch_size=14)
    sd = {k if k.startswith("vision_model.") else "vision_model." + k: v
          for k, v in SiglipVisionModel(cfg).state_dict().items()}
    with pytest.raises(ClipVisionError, match="SigLIP vision model .*out of scope"):
        clip_vision_from_state(sd, "sigclip_vision_patch14_384.safetensors")


def test_flow_controlnet_is_named_out_of_scope(tmp_path):
    from twosamplers.models.controlnet import UnsupportedModelError, load_controlnet

    path = tmp_path / "flux_cn.safetensors"
    save_file({"controlnet_blocks.0.weight": torch.zeros(4, 4), "controlnet_x_embedder.weight": torch.zeros(4, 4),
               "double_blocks.0.img_attn.qkv.weight": torch.zeros(12, 4)}, str(path))
    with pytest.raises(UnsupportedModelError, match="Flux / SD3 ControlNet: out of scope"):
        load_controlnet(path)
