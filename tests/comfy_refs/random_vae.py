"""A full-size SD1.x/SDXL KL VAE state dict (original LDM key layout) with weights drawn from numpy's PCG64, so that
ComfyUI's VAE and ours load bit-identical weights without shipping a 160 MB file. Pure numpy (both interpreters
import it). Scales keep activations in range: weights N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), biases
N(0, 0.02^2)."""

from __future__ import annotations

import numpy as np

SEED = 23


def sd_vae_shapes_from_comfy() -> list[list]:
    """[[key, shape], ...] of ComfyUI's SD VAE (kl-f8, 4 latent channels), sorted by key (ComfyUI side only)."""
    import comfy.ldm.models.autoencoder as ae

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    m = ae.AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    return [[k, list(v.shape)] for k, v in sorted(m.state_dict().items())]


def state_dict(shapes: list[list]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    out = {}
    for key, shape in shapes:
        shape = tuple(shape)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            v = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif key.endswith(".weight"):
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            v = 0.02 * rng.standard_normal(shape)
        out[key] = v.astype(np.float32)
    return out
