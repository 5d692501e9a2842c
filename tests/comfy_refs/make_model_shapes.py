"""Writes model_shapes.json for random_models.py: the LDM keys and shapes of a one-level SD1.5-like UNet
(model_channels 320, context 768, 8 heads) and of a ControlNet for it, from diffusers' modules renamed by the
test helpers (the project's interpreter: `python tests/comfy_refs/make_model_shapes.py`)."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402
from test_controlnet import to_ldm_controlnet  # noqa: E402
from test_sd_backend import to_ldm_unet  # noqa: E402


def main():
    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(320,), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D",),
                                    up_block_types=("CrossAttnUpBlock2D",), attention_head_dim=8,
                                    cross_attention_dim=768, norm_num_groups=32)
        cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    u = {k.removeprefix("model.diffusion_model."): list(v.shape) for k, v in to_ldm_unet(unet).items()}
    c = {k: list(v.shape) for k, v in to_ldm_controlnet(cn).items()}
    out = {"unet": sorted([k, s] for k, s in u.items()), "controlnet": sorted([k, s] for k, s in c.items())}
    (HERE / "model_shapes.json").write_text(json.dumps(out))
    print(len(out["unet"]), "UNet tensors,", len(out["controlnet"]), "ControlNet tensors")


if __name__ == "__main__":
    main()
