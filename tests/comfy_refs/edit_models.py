"""Tiny InstructPix2Pix-style edit models that ComfyUI 0.30 and this project build from the same numpy draws (pure
numpy: both interpreters import it), for tests/test_edit_models_parity.py and make_edit_refs.py:

- an SD1.5 InstructPix2Pix-like UNet: random_models.py's one-level SD1.5-like UNet with 8 input channels (ComfyUI
  detects it as SD15_instructpix2pix);
- an SDXL-like edit UNet (8 input channels, channels 64 / 128, context 160, SDXL's 2816-wide size + pooled-text
  embedding) whose LDM keys and shapes are in edit_shapes.json (written by `python tests/comfy_refs/edit_models.py`
  with the project's interpreter, from diffusers' UNet2DConditionModel). Real SDXL edit checkpoints are detected
  by ComfyUI from their full-size shapes; this one is built there as SDXL_instructpix2pix directly;
- the full-size SD VAE of random_vae.py (its shapes from nodes.json);
- the image to edit and the conditioning tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPES = HERE / "edit_shapes.json"
SD15_SEED, SDXL_SEED, INPUT_SEED = 111, 222, 333
PREFIX = "model.diffusion_model."
CONTEXT_XL = 160
# CosXL edit's markers (its sigma range): the checkpoint is then EDM v-prediction
EDM_VPRED = {"edm_vpred.sigma_max": 120.0, "edm_vpred.sigma_min": 0.002}


def sd15_ip2p_unet() -> dict[str, np.ndarray]:
    import random_models as rm

    shapes = [[k, [320, 8, 3, 3]] if k == "input_blocks.0.0.weight" else [k, s] for k, s in rm.shapes()["unet"]]
    return {PREFIX + k: v for k, v in rm.draw(shapes, SD15_SEED).items()}


def sdxl_ip2p_unet() -> dict[str, np.ndarray]:
    import random_models as rm

    return {PREFIX + k: v for k, v in rm.draw(json.loads(SHAPES.read_text())["sdxl_ip2p_unet"], SDXL_SEED).items()}


def vae() -> dict[str, np.ndarray]:
    """The full-size SD VAE (LDM keys, no prefix)."""
    import random_vae

    return random_vae.state_dict(json.loads((HERE / "nodes.json").read_text())["cases"]["vae_shapes"])


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(INPUT_SEED)
    return {"image": rng.random((1, 76, 99, 3)).astype(np.float32),  # cropped to 72 x 96 -> latent 9 x 12
            "pos": rng.standard_normal((1, 77, 768)).astype(np.float32),
            "neg": rng.standard_normal((1, 77, 768)).astype(np.float32),
            "pos_xl": rng.standard_normal((1, 77, CONTEXT_XL)).astype(np.float32),
            "neg_xl": rng.standard_normal((1, 77, CONTEXT_XL)).astype(np.float32),
            "zero_xl": rng.standard_normal((1, 77, CONTEXT_XL)).astype(np.float32),
            "pooled_pos": rng.standard_normal((1, 1280)).astype(np.float32),
            "pooled_neg": rng.standard_normal((1, 1280)).astype(np.float32),
            "pooled_zero": rng.standard_normal((1, 1280)).astype(np.float32)}


def main():  # the project's interpreter (diffusers): writes edit_shapes.json
    import sys

    import torch
    from diffusers import UNet2DConditionModel

    sys.path.insert(0, str(HERE.parent))
    from test_sd_backend import to_ldm_unet

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=8, block_out_channels=(64, 128), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), attention_head_dim=(1, 2), cross_attention_dim=CONTEXT_XL,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, norm_num_groups=32)
    shapes = sorted([k.removeprefix(PREFIX), list(v.shape)] for k, v in to_ldm_unet(unet).items())
    SHAPES.write_text(json.dumps({"sdxl_ip2p_unet": shapes}) + "\n")
    print(len(shapes), "tensors")


if __name__ == "__main__":
    main()
