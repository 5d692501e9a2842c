"""Small models that ComfyUI 0.30 accepts as SD1.5 (model_channels 320, context 768, one level: about 25 M
weights) with weights drawn from numpy's PCG64, so that ComfyUI and this project load bit-identical weights
without shipping them. Pure numpy: both interpreters import it. `model_shapes.json` (beside it, written by
make_model_shapes.py) lists every tensor's LDM key and shape; weights are drawn in that order.

Scales keep activations in range: matrices N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), biases N(0, 0.02^2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPES = HERE / "model_shapes.json"
UNET_SEEDS = {"a": 101, "b": 202, "c": 303}
CONTROLNET_SEED = 404
HYPERNET_SEED = 505
COND_SEED = 606
HYPERNET_DIMS = (320, 768)
UNCLIP_SEED = 707
VISION_SEED = 808
GLIGEN_SEED = 909  # the UNet's width (self-attention) and the context width (cross-attention)


def shapes() -> dict[str, list]:
    return json.loads(SHAPES.read_text())


def draw(shape_list: list, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shape_list:
        shape = tuple(shape)
        if len(shape) == 0:  # GLIGEN's gates: large enough to matter
            v = rng.standard_normal(shape)
        elif len(shape) >= 2:
            v = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
        elif key.endswith(".weight"):
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            v = 0.02 * rng.standard_normal(shape)
        out[key] = v.astype(np.float32)
    return out


def unet(name: str) -> dict[str, np.ndarray]:
    """UNet `name` ("a", "b", "c") under `model.diffusion_model.`."""
    return {"model.diffusion_model." + k: v for k, v in draw(shapes()["unet"], UNET_SEEDS[name]).items()}


def unclip_unet() -> dict[str, np.ndarray]:
    """The SD2.1-unCLIP-like UNet under `model.diffusion_model.` (its class embedding is `label_emb.0.*`)."""
    return {"model.diffusion_model." + k: v for k, v in draw(shapes()["unclip_unet"], UNCLIP_SEED).items()}


def clip_vision() -> dict[str, np.ndarray]:
    """The tiny CLIP vision tower (transformers' names), weights rounded through float16 as files hold them."""
    return {k: v.astype(np.float16).astype(np.float32) for k, v in draw(shapes()["clip_vision"], VISION_SEED).items()}


def gligen() -> dict[str, np.ndarray]:
    """A GLIGEN text-box model for the SD1.5-like UNet (its 4 transformer blocks, 768-wide text)."""
    return draw(shapes()["gligen"], GLIGEN_SEED)


def controlnet() -> dict[str, np.ndarray]:
    """A ControlNet for those UNets (LDM layout, `control_model.` keys)."""
    return draw(shapes()["controlnet"], CONTROLNET_SEED)


def diff_controlnet(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same ControlNet as a "diff" file relative to the UNet `base` (its weights minus the UNet's wherever
    the UNet has the same key), with the "difference" marker key."""
    out = {}
    for k, v in controlnet().items():
        u = base.get("model.diffusion_model." + k.removeprefix("control_model."))
        out[k] = v - u if u is not None and u.shape == v.shape else v
    out["difference"] = np.zeros((0,), np.float32)
    return out


def hypernetwork() -> dict:
    """A hypernetwork in A1111's layout: {dim: [key module state, value module state], options}. Each module is
    Linear(d, 2d) -> ReLU -> Dropout -> Linear(2d, d) (state keys linear.0.*, linear.3.*)."""
    rng = np.random.default_rng(HYPERNET_SEED)
    out: dict = {}
    for d in HYPERNET_DIMS:
        pair = []
        for _ in range(2):
            pair.append({"linear.0.weight": (rng.standard_normal((2 * d, d)) / np.sqrt(d)).astype(np.float32),
                         "linear.0.bias": (0.02 * rng.standard_normal(2 * d)).astype(np.float32),
                         "linear.3.weight": (rng.standard_normal((d, 2 * d)) / np.sqrt(2 * d)).astype(np.float32),
                         "linear.3.bias": (0.02 * rng.standard_normal(d)).astype(np.float32)})
        out[d] = pair
    out.update({"activation_func": "relu", "is_layer_norm": False, "use_dropout": True,
                "activate_output": False, "last_layer_dropout": False, "layer_structure": [1, 2, 1]})
    return out


def conditioning() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(COND_SEED)
    return {"positive": rng.standard_normal((1, 77, 768)).astype(np.float32),
            "negative": rng.standard_normal((1, 77, 768)).astype(np.float32),
            "latent": (2.0 * rng.standard_normal((1, 4, 8, 8))).astype(np.float32),
            "mask": rng.random((1, 64, 64)).astype(np.float32),
            "hint": rng.random((1, 64, 64, 3)).astype(np.float32),
            "positive_1024": rng.standard_normal((1, 77, 1024)).astype(np.float32),
            "negative_1024": rng.standard_normal((1, 77, 1024)).astype(np.float32),
            "image": rng.random((1, 72, 100, 3)).astype(np.float32),
            "image2": rng.random((2, 40, 40, 4)).astype(np.float32),
            "embeds": rng.standard_normal((2, 32)).astype(np.float32),
            "phrases": rng.standard_normal((2, 1, 768)).astype(np.float32),
            "photo": rng.random((2, 20, 28, 3)).astype(np.float32)}
