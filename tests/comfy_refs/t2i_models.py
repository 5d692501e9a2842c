"""Random weights for the T2I-Adapter references (make_t2i_refs.py with ComfyUI, test_t2i_adapter.py here): the
tiny four-level SD1.5-like and three-level SDXL-like UNets, a ControlNet for the SD1.5-like one and five adapters,
drawn with random_models.draw from the keys and shapes in t2i_shapes.json (make_t2i_shapes.py). Pure numpy: both
interpreters import it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from random_models import draw

HERE = Path(__file__).resolve().parent
SHAPES = HERE / "t2i_shapes.json"
SEEDS = {"sd1_unet": 1101, "sdxl_unet": 1202, "sd1_controlnet": 1303, "sd1_full": 1404, "sd1_grey_conv": 1505,
         "sdxl_full": 1606, "sdxl_grey": 1707, "light": 1808}
COND_SEED = 1909


def shapes() -> dict:
    return json.loads(SHAPES.read_text())


def weights(name: str) -> dict[str, np.ndarray]:
    """`name`'s state dict: UNets under `model.diffusion_model.`, the ControlNet under `control_model.`, adapters in
    TencentARC's layout."""
    sd = draw(shapes()[name], SEEDS[name])
    return {"model.diffusion_model." + k: v for k, v in sd.items()} if name.endswith("_unet") else sd


def diffusers_layout(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A full SD1.x adapter in diffusers' one-file layout (adapter.body.I.resnets.J.*, adapter.body.I.in_conv)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body":
            n = int(parts[1])
            i, j = divmod(n, 2)
            if parts[2] == "in_conv":
                k = f"adapter.body.{i}.in_conv." + ".".join(parts[3:])
            else:
                k = f"adapter.body.{i}.resnets.{j}." + ".".join(parts[2:])
        else:
            k = "adapter." + k
        out[k] = v
    return out


def conditioning() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(COND_SEED)
    return {"positive": rng.standard_normal((1, 77, 768)).astype(np.float32),
            "negative": rng.standard_normal((1, 77, 768)).astype(np.float32),
            "positive_xl": rng.standard_normal((1, 77, 2048)).astype(np.float32),
            "negative_xl": rng.standard_normal((1, 77, 2048)).astype(np.float32),
            "pooled_pos": rng.standard_normal((1, 1280)).astype(np.float32),
            "pooled_neg": rng.standard_normal((1, 1280)).astype(np.float32),
            "hint": rng.random((1, 64, 64, 3)).astype(np.float32),
            "hint_wide": rng.random((1, 72, 100, 3)).astype(np.float32),
            "hint2": rng.random((2, 48, 48, 3)).astype(np.float32),
            "mask": (rng.random((1, 64, 64)) > 0.5).astype(np.float32),
            "latent": (2.0 * rng.standard_normal((1, 4, 8, 8))).astype(np.float32)}
