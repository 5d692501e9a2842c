"""Run the corpus of real, published ComfyUI workflows (benchmarks/real_workflows/manifest.json) and count how many
run, how many are refused cleanly, and how many fail otherwise.

    python benchmarks/real_workflows.py                      # the workflows kept in this repository
    python benchmarks/fetch_workflows.py --cache wf-cache    # fetch the others (GPL: not kept here), then
    python benchmarks/real_workflows.py --cache wf-cache     # the whole corpus
    python benchmarks/real_workflows.py --only lora -v       # one workflow, with its full message

Each workflow gets tiny random-weight models of the kind its loaders ask for, saved under the exact names it asks for
(an SD1.x or SDXL checkpoint by what the workflow looks like, an SDXL refiner for a name with "refiner", a 9-channel
inpainting checkpoint for a name with "inpaint", an 8-channel InstructPix2Pix edit checkpoint for a name with "pix2pix"
/ "ip2p" / "edit" (CosXL's EDM v-prediction markers for "cosxl"), tests/flow_models.py's Flux.1 / SD3.5 files for
workflows with Flux / SD3 nodes or names (Fill / Canny / Depth transformers by name), LoRAs, a ControlNet (for Flux /
SD3: tests/flow_control_models.py's, in the layout the file name suggests), a VAE file, ESRGAN upscalers, embeddings,
CLIP vision / SigLIP towers, style models) and small RGBA images under the names its LoadImage / PreviewBridge nodes
read. Sizes are capped (every pixel size / 4, rounded to 8, batches 1) and steps capped at 2 (start/end steps scaled
with them), so the whole corpus runs on a CPU in minutes; everything else is the file as published. A workflow then
either runs (no error), is refused (a WorkflowError: one message, nothing written), or fails otherwise (any other
exception: what a user would see as a traceback). Refusals are split by what they name: families out of scope by design
(`twosamplers run --list-nodes`, other node packs included), node types other issues are adding now, ComfyUI core /
Impact Pack nodes not run yet, and anything else.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "real_workflows"
sys.path.insert(0, str(ROOT / "tests"))

MAX_STEPS = 2
SIZE_DIVISOR = 4
SIZE_INPUTS = {"width", "height", "x", "y", "left", "top", "right", "bottom", "feather", "feathering",
               "target_width", "target_height", "crop_w", "crop_h"}
FILE_KINDS = {  # node type -> {input: models folder}
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"}, "CheckpointLoader": {"ckpt_name": "checkpoints"},
    "VAELoader": {"vae_name": "vae"}, "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"}, "ControlNetLoader": {"control_net_name": "controlnet"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "HypernetworkLoader": {"hypernetwork_name": "hypernetworks"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "unCLIPCheckpointLoader": {"ckpt_name": "checkpoints"}, "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "GLIGENLoader": {"gligen_name": "gligen"},
    "UNETLoader": {"unet_name": "diffusion_models"}, "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders",
                         "clip_name3": "text_encoders"},
    "StyleModelLoader": {"style_model_name": "style_models"},
}
FLOW_NODES = {"flux": ("FluxGuidance", "CLIPTextEncodeFlux", "ModelSamplingFlux", "FluxDisableGuidance"),
              "sd3": ("TripleCLIPLoader", "CLIPTextEncodeSD3", "ModelSamplingSD3")}
IMAGE_INPUTS = {"LoadImage": "image", "LoadImageMask": "image", "PreviewBridge": "image"}
# refusals of files whose support other issues are adding now (the SDXL refiner: issue 22)
IN_PROGRESS_MESSAGES = ("the SDXL refiner is not supported",)


# ------------------------------------------------------------------------------------------------- models
class ModelPool:
    """The tiny models, built once per run on first use, each saved as a file to link under any name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        self._sd = None

    def _tiny(self):
        if self._sd is None:
            from conftest import build_tiny_sd

            self._sd = build_tiny_sd(self.root / "sd")
        return self._sd

    def get(self, what: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        if what not in self.files:
            self.files[what] = getattr(self, "_make_" + what.split(":")[0])(what)
        return self.files[what]

    def _make_sd1(self, what):
        return self._tiny()["sd1_file"]

    def _make_sdxl(self, what):
        return self._tiny()["sdxl_file"]

    def _make_refiner(self, what):
        """SDXL's refiner layout: one OpenCLIP encoder (as embedders.0, the tiny SDXL's second one) and a UNet of
        its own that takes that encoder's context alone and 5 size / aesthetic-score values."""
        import torch
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file, save_file
        from test_sd_backend import to_ldm_unet

        sd = load_file(str(self._tiny()["sdxl_file"]))
        out = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v for k, v in sd.items()
               if not k.startswith(("conditioner.embedders.0.", "model.diffusion_model."))}
        proj = out["conditioner.embedders.0.model.text_projection"]
        width, pooled = proj.shape
        torch.manual_seed(14)
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), attention_head_dim=(1, 1), cross_attention_dim=int(width),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=int(pooled) + 5 * 8, norm_num_groups=32)
        out.update(to_ldm_unet(unet))
        path = self.root / "refiner.safetensors"
        save_file({k: v.contiguous() for k, v in out.items()}, str(path))
        return path

    def _make_inpaint(self, what):
        import shutil

        from test_controlnet import tiny_inpaint_unet
        from test_sd_backend import folder_to_single_file, save_folder

        folder = save_folder(self.root / "inpaint_diffusers", False)
        shutil.rmtree(folder / "unet")
        tiny_inpaint_unet().save_pretrained(folder / "unet")
        return folder_to_single_file(folder, self.root / "inpaint.safetensors", False)

    def _make_edit(self, what):
        """edit:FAMILY[:edm]: the tiny SD1.x / SDXL checkpoint with an InstructPix2Pix UNet (its first conv widened
        to 4 + 4 input channels, the new ones random so that they matter); ":edm" adds CosXL edit's EDM
        v-prediction markers."""
        import torch
        from safetensors.torch import load_file, save_file

        _, family, *edm = what.split(":")
        sd = load_file(str(self._tiny()["sdxl_file" if family == "sdxl" else "sd1_file"]))
        key = "model.diffusion_model.input_blocks.0.0.weight"
        gen = torch.Generator().manual_seed(15)
        sd[key] = torch.cat([sd[key], 0.1 * torch.randn(sd[key].shape, generator=gen, dtype=sd[key].dtype)], dim=1)
        if edm:
            sd.update({"edm_vpred.sigma_max": torch.tensor(120.0), "edm_vpred.sigma_min": torch.tensor(0.002)})
        path = self.root / f"edit_{family}{'_edm' if edm else ''}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path

    def _make_lora(self, what):
        from safetensors.torch import save_file
        from test_lora import make_lora

        from twosamplers.models.sd import load_sd

        family = what.split(":")[1]
        model = load_sd(self._tiny()[f"{family}_file"], device="cpu", cache=False)
        path = self.root / f"lora_{family}.safetensors"
        lora = make_lora(model, "kohya", "lora", seed=1, every=2)[0]
        # published SD LoRAs leave the UNet's first conv alone, so they also patch inpainting (9-channel) models
        save_file({k: v for k, v in lora.items() if "conv_in" not in k}, str(path))
        return path

    def _make_controlnet(self, what):
        from diffusers import UNet2DConditionModel
        from safetensors.torch import save_file
        from test_controlnet import tiny_controlnet, to_ldm_controlnet

        cn = tiny_controlnet(UNet2DConditionModel.from_pretrained(self._tiny()["sd1_folder"] / "unet"))
        path = self.root / "controlnet.safetensors"
        save_file(to_ldm_controlnet(cn), str(path))
        return path

    def _make_vae(self, what):
        from diffusers import AutoencoderKL
        from safetensors.torch import save_file
        from test_sd_backend import to_ldm_vae

        vae = AutoencoderKL.from_pretrained(self._tiny()["sd1_folder"] / "vae")
        sd = {k.removeprefix("first_stage_model."): v for k, v in to_ldm_vae(vae).items()}
        path = self.root / "vae.safetensors"
        save_file(sd, str(path))
        return path

    def _make_esrgan(self, what):
        import torch
        from safetensors.torch import save_file
        from spandrel.architectures.ESRGAN import ESRGAN

        scale = int(what.split(":")[1])
        torch.manual_seed(scale)
        net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
        path = self.root / f"esrgan_x{scale}.safetensors"  # safetensors content, linked under .pth names too
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        return path

    def _make_hypernetwork(self, what):
        """A1111's hypernetwork layout (a torch pickle, as published) for the tiny SD1.x UNet's widths (32, 64)
        and its context width (64)."""
        import torch

        g = torch.Generator().manual_seed(5)
        net = {}
        for d in (32, 64):
            net[d] = [{"linear.0.weight": torch.randn(2 * d, d, generator=g) / d**0.5,
                       "linear.0.bias": torch.zeros(2 * d),
                       "linear.2.weight": torch.randn(d, 2 * d, generator=g) / (2 * d)**0.5,
                       "linear.2.bias": torch.zeros(d)} for _ in range(2)]
        net.update(activation_func="relu", is_layer_norm=False, use_dropout=False, layer_structure=[1, 2, 1])
        path = self.root / "hypernetwork.pt"
        torch.save(net, str(path))
        return path

    def _make_diff_controlnet(self, what):
        """The tiny ControlNet as a diff file: its weights minus the tiny SD1.x UNet's, with the marker key."""
        import torch
        from safetensors.torch import load_file, save_file

        cn = load_file(str(self.get("controlnet")))
        unet = load_file(str(self._tiny()["sd1_file"]))
        out = {}
        for k, v in cn.items():
            u = unet.get("model.diffusion_model." + k.removeprefix("control_model."))
            out[k] = (v - u) if u is not None and u.shape == v.shape else v
        out["difference"] = torch.tensor([])
        path = self.root / "diff_controlnet.safetensors"
        save_file(out, str(path))
        return path

    def _clip_vision_state(self, projection: int) -> dict:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch_seed(11)
        cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, projection_dim=projection, num_hidden_layers=2,
                               num_attention_heads=1, image_size=56, patch_size=14, hidden_act="gelu")
        return {k: v.contiguous() for k, v in CLIPVisionModelWithProjection(cfg).state_dict().items()
                if not k.endswith("position_ids")}

    def _make_clip_vision(self, what):
        """A tiny CLIP vision tower (transformers' layout): 1280-wide embeddings for SDXL (Revision's CLIP-G)."""
        from safetensors.torch import save_file

        projection = int(what.split(":")[1])
        path = self.root / f"clip_vision_{projection}.safetensors"
        save_file(self._clip_vision_state(projection), str(path))
        return path

    def _make_unclip(self, what):
        """A tiny SD2.1-unCLIP-layout checkpoint: a UNet with a class embedding for 2 x 32-wide image embeddings,
        an OpenCLIP text encoder, the VAE and its CLIP vision tower under embedder.model.visual."""
        from diffusers import UNet2DConditionModel
        from safetensors.torch import save_file
        from test_sd_backend import tiny_clip, tiny_vae, to_ldm_open_clip, to_ldm_unet, to_ldm_vae, to_open_clip_visual

        torch_seed(12)
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=64,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=1, use_linear_projection=True, norm_num_groups=32, class_embed_type="projection",
            projection_class_embeddings_input_dim=64)
        state = unet.state_dict()

        class Rest:
            config = unet.config

            @staticmethod
            def state_dict():
                return {k: v for k, v in state.items() if not k.startswith("class_embedding.")}

        sd = to_ldm_unet(Rest)
        for lin, idx in (("linear_1", 0), ("linear_2", 2)):
            for t in ("weight", "bias"):
                sd[f"model.diffusion_model.label_emb.0.{idx}.{t}"] = state[f"class_embedding.{lin}.{t}"].clone()
        sd.update(to_ldm_open_clip(tiny_clip(act="gelu", seed=2), "cond_stage_model.model."))
        sd.update(to_ldm_vae(tiny_vae()))
        sd.update(to_open_clip_visual(self._clip_vision_state(32), "embedder.model.visual."))
        path = self.root / "unclip.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path

    def _make_t2i_adapter(self, what):
        """A working tiny T2I-Adapter of the kind its name suggests ("t2i_adapter:FAMILY:CHANNELS"): TencentARC's
        full adapter (1x1 kernels, average pooling) at the tiny UNet's widths (32, 64, 128, 128), a 1-channel hint
        for canny / sketch / lineart names, 3 otherwise; the SDXL ones in diffusers' one-file layout, as
        TencentARC publishes them."""
        from safetensors.torch import save_file

        from twosamplers.models.t2i_adapter import FullAdapter

        _, family, channels = what.split(":")
        xl, channels = family == "sdxl", int(channels)
        torch_seed(14)
        net = FullAdapter(channels * (256 if xl else 64), 32, 1, False, xl)
        sd = {k: v.contiguous() for k, v in net.state_dict().items()}
        if xl:  # body.(2I+J) -> adapter.body.I.resnets.J, body.(2I).in_conv -> adapter.body.I.in_conv
            out = {}
            for k, v in sd.items():
                parts = k.split(".")
                if parts[0] == "body":
                    i, j = divmod(int(parts[1]), 2)
                    k = f"adapter.body.{i}." + ("" if parts[2] == "in_conv" else f"resnets.{j}.") + ".".join(parts[2:])
                else:
                    k = "adapter." + k
                out[k] = v
            sd = out
        path = self.root / f"t2i_adapter_{family}_{channels}.safetensors"
        save_file(sd, str(path))
        return path

    def _make_gligen(self, what):
        """A GLIGEN text-box model for the tiny SD1.x UNet: a gated layer per transformer block, a position net."""
        from diffusers.models.attention import GatedSelfAttentionDense
        from diffusers.models.embeddings import GLIGENTextBoundingboxProjection
        from safetensors.torch import save_file

        from twosamplers.models.gligen import _blocks
        from twosamplers.models.sd import load_sd

        unet = load_sd(self._tiny()["sd1_file"], device="cpu", cache=False).unet
        torch_seed(13)
        sd = {}
        for name, block in _blocks(unet).items():
            q = int(block.norm1.normalized_shape[0])
            layer = GatedSelfAttentionDense(q, 64, 1, q)
            sd.update({f"{name}.fuser.{k}": v for k, v in layer.state_dict().items()})
            sd[f"{name}.fuser.alpha_attn"], sd[f"{name}.fuser.alpha_dense"] = torch_tensor(0.5), torch_tensor(0.5)
        sd.update({f"position_net.{k}": v for k, v in GLIGENTextBoundingboxProjection(64, 64).state_dict().items()})
        path = self.root / "gligen.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path

    def _make_flow(self, what):
        """Tests/flow_models.py's tiny Flux.1 / SD3.5 files (BFL / Stability layouts): "flow:flux:dev",
        "flow:flux:fill" (Flux Fill's 384 input features), "flow:flux:concat" (Canny / Depth: 128),
        "flow:sd3:large", "flow:flux_aio:dev", "flow:sd3_aio", "flow:text:clip_l|clip_g|t5", "flow:vae"."""
        import flow_models as fm
        import torch
        from safetensors.torch import save_file

        _, kind, *rest = what.split(":")
        arg = rest[0] if rest else ""
        if kind == "flux":
            sd = fm.flux_transformer("schnell" if arg == "schnell" else "dev")
            features = {"fill": 384, "concat": 128}.get(arg)
            if features:
                g = torch.Generator().manual_seed(7)
                sd["img_in.weight"] = torch.randn(sd["img_in.weight"].shape[0], features, generator=g) * 0.05
        elif kind == "sd3":  # positions for latents up to 96 x 96 (the capped sizes; the real models: 192)
            sd = fm.sd3_transformer(arg or "large", context_dim=fm.T5_WIDTH, pos_max=48)
        elif kind == "flux_aio":
            sd = fm.flux_checkpoint("schnell" if arg == "schnell" else "dev")
        elif kind == "sd3_aio":
            sd = {**fm.sd3_checkpoint("large"), **fm.prefixed(fm.sd3_transformer(
                "large", context_dim=fm.T5_WIDTH, pos_max=48), "model.diffusion_model.")}
        elif kind == "lora":
            sd = fm.flux_lora("kohya", hidden=256) if arg == "flux" else fm.sd3_lora("kohya")
        elif kind == "text":
            sd = {"clip_l": fm.clip_l, "clip_g": fm.clip_g, "t5": fm.t5}[arg]()
        else:
            sd = fm.flow_vae()
        path = self.root / ("_".join(what.split(":")) + ".safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path

    def _make_flow_controlnet(self, what):
        """A working tiny Flux / SD3 ControlNet (tests/flow_control_models.py) in the layout "flow_controlnet:
        FAMILY:LAYOUT" names, sized for the tiny Flux (width 256, T5 128, CLIP-L 32) or SD3.5 (2 heads, T5 128
        context, positions up to 48 patches) that _make_flow builds: flux:xlabs, flux:mistoline, flux:instantx,
        flux:union, flux:inpaint (Alimama), sd3:diffusers, sd3:inpaint (Alimama), sd35:blur|canny|depth
        (Stability's SD3.5 ControlNets)."""
        import flow_control_models as fcm
        import flow_models as fm
        from safetensors.torch import save_file

        _, family, layout = what.split(":")
        if family == "flux":
            sd = {"xlabs": fcm.flux_xlabs, "mistoline": fcm.flux_mistoline, "instantx": fcm.flux_instantx,
                  "union": lambda: fcm.flux_instantx(union=True, seed=43),
                  "inpaint": lambda: fcm.flux_instantx(inpaint=True, depth=1, single=1, seed=50)}[layout]()
        elif family == "sd35":
            sd = fcm.sd35_controlnet(blocks=1 if layout == "depth" else 2,
                                     control_type={"blur": 0, "canny": 1, "depth": 2}[layout], seed=46)
        else:
            sd = fcm.sd3_controlnet(context_dim=fm.T5_WIDTH, pos_max=48, **(
                {"layers": 2, "extra": 1, "seed": 52} if layout == "inpaint" else {}))
        path = self.root / ("_".join(what.split(":")) + ".safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path

    def _make_redux(self, what):
        """Flux Redux's style model (redux_up / redux_down) at the tiny Flux's T5 width."""
        import flow_models as fm
        import torch
        from safetensors.torch import save_file

        g = torch.Generator().manual_seed(8)
        sd = {"redux_up.weight": torch.randn(3 * fm.T5_WIDTH, 64, generator=g) * 0.05,
              "redux_up.bias": torch.zeros(3 * fm.T5_WIDTH),
              "redux_down.weight": torch.randn(fm.T5_WIDTH, 3 * fm.T5_WIDTH, generator=g) * 0.05,
              "redux_down.bias": torch.zeros(fm.T5_WIDTH)}
        path = self.root / "style_model.safetensors"
        save_file(sd, str(path))
        return path

    def _make_siglip(self, what):
        """A SigLIP vision tower as ComfyUI ships it (sigclip_vision_patch14_384: vision_model.*, with its head)."""
        from safetensors.torch import save_file
        from transformers import SiglipVisionConfig, SiglipVisionModel

        torch_seed(15)
        cfg = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                 image_size=56, patch_size=14)
        sd = {"vision_model." + k: v.contiguous() for k, v in SiglipVisionModel(cfg).state_dict().items()}
        path = self.root / "siglip.safetensors"
        save_file(sd, str(path))
        return path

    def _make_t2i_style(self, what):
        """A T2I-Adapter style model (TencentARC's layout) at the tiny CLIP vision width (64) and the tiny model's
        context width (SD1.x 64, SDXL 128): 2 layers, 8 style tokens."""
        from safetensors.torch import save_file

        from twosamplers.models.style_model import T2IStyleAdapter

        torch_seed(16)
        net = T2IStyleAdapter(64, 128 if what.endswith("sdxl") else 64, layers=2, tokens=8)
        sd = {k: (v + 0.05 * torch_randn(v.shape)).contiguous() for k, v in net.state_dict().items()}
        path = self.root / f"t2i_style_{what.split(':')[1]}.safetensors"
        save_file(sd, str(path))
        return path

    def _make_embedding(self, what):
        import torch
        from safetensors.torch import save_file

        path = self.root / "embedding.safetensors"
        save_file({"emb_params": torch.randn(2, 64, generator=torch.Generator().manual_seed(3))}, str(path))
        return path


def torch_tensor(value):
    import torch

    return torch.tensor(value)


def torch_randn(shape):
    import torch

    return torch.randn(shape)


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _family(prompt: dict) -> str:
    """Flux or SD3 by their nodes and file names, else SDXL when the workflow looks like one (a checkpoint name
    with "xl", an SDXL node, 1024-pixel latents), else SD1.x."""
    for node in prompt.values():
        t, inputs = node["class_type"], node["inputs"]
        names = " ".join(str(inputs.get(k, "")) for k in ("ckpt_name", "unet_name", "type")).lower()
        if t in FLOW_NODES["flux"] or "flux" in names:
            return "flux"
        if t in FLOW_NODES["sd3"] or re.search(r"sd3|sd_?3\.5", names):
            return "sd3"
    for node in prompt.values():
        t, inputs = node["class_type"], node["inputs"]
        if "SDXL" in t:
            return "sdxl"
        name = str(inputs.get("ckpt_name", ""))
        if re.search(r"xl", name, re.I):
            return "sdxl"
        if t == "EmptyLatentImage" and max(_num(inputs.get("width")), _num(inputs.get("height"))) >= 1024:
            return "sdxl"
    return "sd1"


def _num(v) -> float:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _flow_kind(kind: str, low: str, family: str) -> str | None:
    if kind == "diffusion_models":
        if family == "sd3":
            return "flow:sd3:" + ("medium" if "medium" in low else "large")
        variant = "fill" if "fill" in low else "concat" if re.search(r"canny|depth", low) else \
            "schnell" if "schnell" in low else "dev"
        return "flow:flux:" + variant
    if kind == "text_encoders":
        return "flow:text:" + ("t5" if "t5" in low else "clip_g" if "clip_g" in low else "clip_l")
    if kind == "checkpoints":
        return "flow:sd3_aio" if family == "sd3" else "flow:flux_aio:" + ("schnell" if "schnell" in low else "dev")
    if kind == "vae":
        return "flow:vae"
    if kind == "controlnet":
        return "flow_controlnet:" + _flow_controlnet_layout(low, family)
    if kind == "style_models":
        return "redux"
    if kind == "loras":
        return "flow:lora:" + family
    return None


def _flow_controlnet_layout(low: str, family: str) -> str:
    """The layout a Flux / SD3 ControlNet's file name suggests: Alimama's inpainting ones ("inpaint"), Stability's
    SD3.5 blur / canny / depth ("sd3.5_large_controlnet_canny"), else diffusers' SD3 layout (InstantX's SD3
    ControlNets); for Flux Mistoline, Union ("union": InstantX / Shakker), InstantX / Shakker / Jasper (diffusers'
    layout), else XLabs' (its files are "flux-canny-controlnet-v3" and the like)."""
    inpaint = re.search(r"inpaint|alimama", low)
    if family == "sd3":
        kind = re.search(r"blur|canny|depth", low)
        if not inpaint and kind and re.search(r"sd3\.5|sd35|3\.5", low):
            return "sd35:" + kind.group(0)
        return "sd3:" + ("inpaint" if inpaint else "diffusers")
    if "misto" in low:
        return "flux:mistoline"
    if "union" in low:
        return "flux:union"
    if inpaint:
        return "flux:inpaint"
    return "flux:instantx" if re.search(r"instantx|shakker|jasper|diffusers", low) else "flux:xlabs"


def _model_kind(kind: str, name: str, family: str) -> str | None:
    low = name.lower()
    if family in ("flux", "sd3") and kind not in ("upscale_models", "clip_vision", "embeddings"):
        return _flow_kind(kind, low, family)
    if kind == "checkpoints":
        if "refiner" in low:
            return "refiner"
        if "inpaint" in low:
            return "inpaint"
        if re.search(r"pix2pix|ip2p|(^|[^a-z])edit([^a-z]|$)", low) and family in ("sd1", "sdxl"):
            return f"edit:{family}" + (":edm" if "cosxl" in low else "")
        return family
    if kind == "loras":
        return f"lora:{family}"
    if kind == "controlnet":
        if re.search(r"t2i.?adapter", low):
            grey = re.search(r"canny|sketch|lineart", low)
            return f"t2i_adapter:{'sdxl' if 'xl' in low or family == 'sdxl' else 'sd1'}:{1 if grey else 3}"
        return "diff_controlnet" if "diff" in low else "controlnet"
    if kind == "hypernetworks":
        return "hypernetwork"
    if kind == "gligen":
        return "gligen"
    if kind == "style_models":
        return f"t2i_style:{family}"
    if kind == "clip_vision":
        if re.search(r"sig.?clip|siglip", low):
            return "siglip"
        return "clip_vision:64"  # the tiny SDXL's pooled width (CLIP-G's 1280 in the real model)
    if kind == "vae":
        return "vae"
    if kind == "upscale_models":
        m = re.search(r"(\d)x|x(\d)", low)
        return f"esrgan:{int(next(g for g in m.groups() if g)) if m else 4}"
    return None


# ------------------------------------------------------------------------------------------------- inputs
def _png(path: Path, size: tuple[int, int], alpha_hole: bool) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    arr[..., 3] = 255
    if alpha_hole:
        arr[size[1] // 4: size[1] * 3 // 4, size[0] // 4: size[0] * 3 // 4, 3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGBA").save(path, format="PNG")  # whatever the name's extension (or none)


def _image_name(value) -> str | None:
    if isinstance(value, dict):
        name = value.get("filename")
        sub = value.get("subfolder") or ""
        return f"{sub}/{name}" if sub and name else name
    if isinstance(value, str) and value and not value.startswith("$"):
        return re.sub(r"\s*\[(input|output|temp)\]$", "", value)
    return None


def supply(prompt: dict, pool: ModelPool, models: Path, inputs: Path) -> None:
    """Tiny models and images under every name the (capped) prompt asks for."""
    from twosamplers.nodes.folders import model_relpath

    family = _family(prompt)
    for node in prompt.values():
        t, values = node["class_type"], node["inputs"]
        for name, kind in FILE_KINDS.get(t, {}).items():
            value = values.get(name)
            rel = model_relpath(value) if isinstance(value, str) else None
            what = _model_kind(kind, value, family) if rel is not None else None
            if t == "unCLIPCheckpointLoader" and what is not None:
                what = "unclip"
            if what is not None:
                target = models / kind / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(pool.get(what))
        if t in IMAGE_INPUTS:
            img = _image_name(values.get(IMAGE_INPUTS[t]))
            if img and model_relpath(img) is not None and not (inputs / img).exists():
                _png(inputs / model_relpath(img), (128, 128), alpha_hole=True)
        for v in values.values():
            if isinstance(v, str):
                for tag in re.findall(r"<lora:([^:>]+)", v):  # LoRA tags of wildcard prompts
                    rel = model_relpath(tag.strip())
                    if rel is not None:
                        target = models / "loras" / (str(rel) + ("" if str(rel).endswith(".safetensors")
                                                                 else ".safetensors"))
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if not target.exists():
                            target.symlink_to(pool.get(_model_kind("loras", tag, family)))
                for emb in re.findall(r"embedding:([\w.\-]+)", v):
                    target = models / "embeddings" / (emb if emb.endswith(".safetensors") else emb + ".safetensors")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not target.exists():
                        target.symlink_to(pool.get("embedding"))


# ------------------------------------------------------------------------------------------------- caps
def _cap_size(v: int) -> int:
    return max(8, int(round(v / SIZE_DIVISOR / 8)) * 8) if v > 0 else v


def cap(prompt: dict) -> dict:
    """Sizes / SIZE_DIVISOR, batches of 1, at most MAX_STEPS steps (start / end steps scaled with them)."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        inputs = node["inputs"]
        steps = inputs.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > MAX_STEPS:
            for k in ("start_at_step", "end_at_step", "base_only_steps", "step"):
                v = inputs.get(k)
                if isinstance(v, int) and not isinstance(v, bool) and v < steps:
                    inputs[k] = round(v * MAX_STEPS / steps)
            inputs["steps"] = MAX_STEPS
        for k, v in list(inputs.items()):
            if isinstance(v, bool) or not isinstance(v, int):
                continue
            if k in SIZE_INPUTS and node["class_type"] not in ("ImageCrop", "CropMask", "MaskComposite"):
                inputs[k] = _cap_size(v)
            elif k in ("batch_size", "amount") and v > 1:
                inputs[k] = 1
    return out


# ------------------------------------------------------------------------------------------------- running
def unsupported_types(data: dict) -> list[str]:
    from twosamplers.nodes.registry import node_class
    from twosamplers.workflow.formats import BYPASSED, MUTED, VIRTUAL_NODES

    if isinstance(data.get("nodes"), list):
        types = [n.get("type") for n in data["nodes"] if isinstance(n, dict)
                 and n.get("mode", 0) not in (MUTED, BYPASSED)]
    else:
        types = [n.get("class_type") for n in data.values() if isinstance(n, dict)]
    return sorted({t for t in types if isinstance(t, str) and t not in VIRTUAL_NODES and node_class(t) is None})


def classify_refusal(types: list[str]) -> str:
    """out of scope (every type of an out-of-scope family, other node packs included), in progress elsewhere, or
    not yet (a ComfyUI core or Impact Pack node this project could run but does not yet)."""
    from twosamplers.nodes.registry import IN_PROGRESS, scope_note

    if not types:
        return "refused (other)"
    notes = [scope_note(t) for t in types]
    if all(n.startswith("out of scope") for n in notes):
        return "refused (out of scope)"
    if any(t in IN_PROGRESS for t in types) and all(t in IN_PROGRESS or n.startswith("out of scope")
                                                     for t, n in zip(types, notes, strict=True)):
        return "refused (in progress elsewhere)"
    return "refused (not yet: core / Impact node)"


def run_one(entry: dict, path: Path, pool: ModelPool, work: Path) -> dict:
    from twosamplers.nodes.folders import Folders
    from twosamplers.workflow import WorkflowError, load, run
    from twosamplers.workflow.formats import Workflow

    data = json.loads(path.read_text(encoding="utf-8"))
    result = {"name": entry["name"], "format": entry["format"]}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wf = load(data, Folders())
            prompt = cap(wf.prompt)
            models, inputs, outputs = work / "models", work / "input", work / "output"
            for d in (models, inputs, outputs):
                d.mkdir(parents=True, exist_ok=True)
            supply(prompt, pool, models, inputs)
            run(Workflow(prompt, None, entry["name"]), models, input_dir=inputs, output_dir=outputs, device="cpu",
                dtype="fp32", allow_pickle=True)
        result["status"] = "ran"
    except WorkflowError as e:
        msg = str(e)
        # the types the refusal names (group nodes expanded), else the file's own unknown types
        types = re.findall(r'"([^"]+)" \(node', msg) or unsupported_types(data)
        if msg.startswith("unsupported node type"):
            result["status"] = classify_refusal(types)
        elif ": out of scope" in msg:  # a model file of an out-of-scope family (a SigLIP vision model, ...)
            result["status"] = "refused (out of scope)"
        elif any(marker in msg for marker in IN_PROGRESS_MESSAGES):
            result["status"] = "refused (in progress elsewhere)"
        else:
            result["status"] = "refused (other)"
        result["message"] = msg
        result["clear"] = "\n" not in msg.strip() and "Traceback" not in msg
    except Exception as e:  # noqa: BLE001 - counted as "other": what a user would see as a traceback
        result["status"] = "other"
        result["message"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def workflow_path(entry: dict, cache: Path | None) -> Path | None:
    if entry["kept"]:
        return CORPUS / "files" / entry["file"]
    if cache is not None:
        p = cache / entry["file"]
        return p if p.is_file() else None
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="folder filled by benchmarks/fetch_workflows.py (the GPL workflows)")
    ap.add_argument("--only", help="run the workflows whose name contains this text")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every message (and tracebacks)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    from spandrel_shim import import_spandrel

    import_spandrel()  # where torchvision is missing (a CPU-only torch), as the tests do
    manifest = json.loads((CORPUS / "manifest.json").read_text())["workflows"]
    if args.only:
        manifest = [m for m in manifest if args.only in m["name"]]
    results, missing = [], []
    with tempfile.TemporaryDirectory(prefix="real_workflows_") as tmp:
        pool = ModelPool(Path(tmp) / "pool")
        for i, entry in enumerate(manifest):
            path = workflow_path(entry, args.cache)
            if path is None:
                missing.append(entry["name"])
                continue
            r = run_one(entry, path, pool, Path(tmp) / f"wf{i}")
            results.append(r)
            line = f"{r['status']:<38} {r['seconds']:6.1f}s  {r['name']} ({r['format']})"
            print(line, flush=True)
            if args.verbose and "message" in r:
                print("    " + r["message"])
                if "traceback" in r:
                    print(r["traceback"])
    report(results, missing)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "not_fetched": missing}, indent=1))
    return 0


def report(results: list[dict], missing: list[str]) -> None:
    n = len(results)
    ran = sum(r["status"] == "ran" for r in results)
    refused = [r for r in results if r["status"].startswith("refused")]
    other = [r for r in results if r["status"] == "other"]
    unclear = [r for r in refused if not r.get("clear", True)]
    print(f"\n{n} workflows: {ran} ran, {len(refused)} refused cleanly, {len(other)} other "
          f"({len(unclear)} unclear refusal messages)")
    by = {}
    for r in refused:
        by[r["status"]] = by.get(r["status"], 0) + 1
    for k, v in sorted(by.items()):
        print(f"  {k}: {v}")
    if missing:
        print(f"not fetched ({len(missing)}; run benchmarks/fetch_workflows.py and pass --cache): "
              + ", ".join(missing))


if __name__ == "__main__":
    sys.exit(main())
