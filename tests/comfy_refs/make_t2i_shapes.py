"""Writes t2i_shapes.json for t2i_models.py: the LDM keys and shapes of a four-level SD1.5-like UNet (widths 32, 64,
128, 128; two layers per block, context 768, 8 heads) and of a ControlNet for it, of a three-level SDXL-like UNet
(widths 32, 64, 128; context 2048, pooled 1280 + 6 x 256 size embeddings, 64-channel heads), and of the tiny
T2I-Adapters made for them in TencentARC's layout (the project's modules; ComfyUI loads the same keys strictly).
Project interpreter: `python tests/comfy_refs/make_t2i_shapes.py`."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402
from test_controlnet import to_ldm_controlnet  # noqa: E402
from test_sd_backend import to_ldm_unet  # noqa: E402

from twosamplers.models.t2i_adapter import FullAdapter, LightAdapter  # noqa: E402

SD1_UNET = {"sample_size": 8, "block_out_channels": (32, 64, 128, 128), "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, "attention_head_dim": 8,
            "cross_attention_dim": 768, "norm_num_groups": 32}
SDXL_UNET = {"sample_size": 8, "block_out_channels": (32, 64, 128), "layers_per_block": 2,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "transformer_layers_per_block": (1, 1, 1), "attention_head_dim": (1, 1, 2), "cross_attention_dim": 2048,
             "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32}
# name -> (module, constructor arguments)
ADAPTERS = {"sd1_full": (FullAdapter, (192, 32, 1, False, False)),  # 3-channel hint, 1x1 kernels, average pooling
            "sd1_grey_conv": (FullAdapter, (64, 32, 3, True, False)),  # 1-channel, 3x3 kernels, strided convs
            "sdxl_full": (FullAdapter, (768, 32, 1, False, True)),
            "sdxl_grey": (FullAdapter, (256, 32, 1, False, True)),
            "light": (LightAdapter, (192,))}


def main():
    with torch.device("meta"):
        sd1 = UNet2DConditionModel(**SD1_UNET)
        cn = ControlNetModel.from_unet(sd1, conditioning_embedding_out_channels=(16, 32, 96, 256))
        sdxl = UNet2DConditionModel(**SDXL_UNET)
    out = {"sd1_unet_config": SD1_UNET, "sdxl_unet_config": SDXL_UNET}
    for name, net in (("sd1_unet", sd1), ("sdxl_unet", sdxl)):
        out[name] = sorted([k.removeprefix("model.diffusion_model."), list(v.shape)]
                           for k, v in to_ldm_unet(net).items())
    out["sd1_controlnet"] = sorted([k, list(v.shape)] for k, v in to_ldm_controlnet(cn).items())
    for name, (cls, args) in ADAPTERS.items():
        out[name] = sorted([k, list(v.shape)] for k, v in cls(*args).state_dict().items())
    (HERE / "t2i_shapes.json").write_text(json.dumps(out))
    print({k: len(v) for k, v in out.items()})


if __name__ == "__main__":
    main()
