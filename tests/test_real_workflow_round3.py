"""Issue 23 round 3: what real workflows met. Flux / SD3 all-in-one checkpoints under `run --allow-pickle`, refusal
notes that tell ComfyUI core and Impact Pack nodes from other node packs, combo values saved in the wrong place,
SDXL UNets that do not fit their text encoders, SigLIP vision models and control LoRAs named as out of scope."""

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
    ("QwenImageDiffsynthControlnet", "out of scope: control LoRAs and other ControlNet families"),
    ("ZImageFunControlnet", "out of scope: control LoRAs and other ControlNet families"),
    ("ReferenceLatent", "out of scope: Flux Kontext edit models"),
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


def test_control_loras_are_named_out_of_scope(tmp_path, flow_models_dir):
    """Stability's SDXL Control-LoRAs (ControlNetLoader) and BFL's Flux Canny / Depth LoRAs (LoRA loaders): one line
    naming the control-LoRA family, not a shape error or "no key matches"."""
    from twosamplers.models.lora import Lora, LoraError
    from twosamplers.models.sd_loading import UnsupportedModelError
    from twosamplers.nodes.folders import Folders

    (tmp_path / "controlnet").mkdir()
    save_file({"lora_controlnet": torch.zeros(1), "input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
               "zero_convs.0.0.weight": torch.zeros(4, 4, 1, 1)},
              str(tmp_path / "controlnet" / "control-lora-canny-rank128.safetensors"))
    with pytest.raises(UnsupportedModelError, match="^control-lora-canny-rank128.safetensors: a Control-LoRA "
                                                    r"\(Stability's .*out of scope: control LoRAs") as e:
        NODES["ControlNetLoader"](Folders.create(models=tmp_path)).load_controlnet(
            "control-lora-canny-rank128.safetensors")
    assert "\n" not in str(e.value)

    from twosamplers.models.flow_loading import load_diffusion_model

    g = torch.Generator().manual_seed(0)
    save_file({"img_in.lora_A.weight": torch.randn(4, 128, generator=g),
               "img_in.lora_B.weight": torch.randn(256, 4, generator=g),
               "double_blocks.0.img_attn.norm.key_norm.scale": torch.ones(128)},
              str(tmp_path / "flux1-canny-dev-lora.safetensors"))
    flux = load_diffusion_model(flow_models_dir / "diffusion_models" / "flux_dev.safetensors", device="cpu")
    with pytest.raises(LoraError, match="a Flux control LoRA .*out of scope: control LoRAs"):
        flux.with_loras([Lora(tmp_path / "flux1-canny-dev-lora.safetensors", 1.0)])


def test_sd_loader_names_a_flow_controlnet_of_another_layout(tmp_path):
    """Keys of a Flux / SD3 ControlNet that no layout run here has: the SD loader says what it looks like."""
    from twosamplers.models.controlnet import UnsupportedModelError, load_controlnet

    path = tmp_path / "flux_cn.safetensors"
    save_file({"controlnet_single_blocks.0.weight": torch.zeros(4, 4), "double_blocks.0.img_attn.qkv.weight":
               torch.zeros(12, 4)}, str(path))
    with pytest.raises(UnsupportedModelError, match="Flux / SD3 ControlNet, but not of a layout run here"):
        load_controlnet(path)
