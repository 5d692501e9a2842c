"""StyleModelApply cases for the parity with ComfyUI 0.30 (tests/test_style_model_parity.py; references made by
tests/comfy_oracle/style_model_refs.py). Weights and inputs are drawn from numpy's PCG64, so both environments
(the project's and ComfyUI's) build the same tensors without storing the models (ComfyUI fixes the style models'
sizes: the T2I style adapter is 1024 wide, 3 layers, 8 tokens, 768 out; Redux 1152 -> 12288 -> 4096)."""

from __future__ import annotations

import numpy as np

T2I = {"width": 1024, "layers": 3, "tokens": 8, "context": 768}
REDUX = {"vision": 1152, "hidden": 3 * 4096, "context": 4096}


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _w(rng, *shape, scale=None) -> np.ndarray:
    scale = shape[-1] ** -0.5 if scale is None else scale
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t2i_style_state() -> dict[str, np.ndarray]:
    """A T2I-Adapter style model in TencentARC's layout (keys as in coadapter-style-sd15v1)."""
    rng, w = _rng(1), T2I["width"]
    sd = {"style_embedding": _w(rng, 1, T2I["tokens"], w), "proj": _w(rng, w, T2I["context"])}
    for name in ("ln_pre", "ln_post"):
        sd[f"{name}.weight"] = (1 + 0.1 * rng.standard_normal(w)).astype(np.float32)
        sd[f"{name}.bias"] = (0.1 * rng.standard_normal(w)).astype(np.float32)
    for i in range(T2I["layers"]):
        p = f"transformer_layes.{i}."
        sd[p + "attn.in_proj_weight"] = _w(rng, 3 * w, w)
        sd[p + "attn.in_proj_bias"] = _w(rng, 3 * w, scale=0.02)
        sd[p + "attn.out_proj.weight"] = _w(rng, w, w)
        sd[p + "attn.out_proj.bias"] = _w(rng, w, scale=0.02)
        for ln in ("ln_1", "ln_2"):
            sd[p + f"{ln}.weight"] = (1 + 0.1 * rng.standard_normal(w)).astype(np.float32)
            sd[p + f"{ln}.bias"] = (0.1 * rng.standard_normal(w)).astype(np.float32)
        sd[p + "mlp.c_fc.weight"] = _w(rng, 4 * w, w)
        sd[p + "mlp.c_fc.bias"] = _w(rng, 4 * w, scale=0.02)
        sd[p + "mlp.c_proj.weight"] = _w(rng, w, 4 * w)
        sd[p + "mlp.c_proj.bias"] = _w(rng, w, scale=0.02)
    return sd


def redux_state() -> dict[str, np.ndarray]:
    rng = _rng(2)
    return {"redux_up.weight": _w(rng, REDUX["hidden"], REDUX["vision"]),
            "redux_up.bias": _w(rng, REDUX["hidden"], scale=0.02),
            "redux_down.weight": _w(rng, REDUX["context"], REDUX["hidden"]),
            "redux_down.bias": _w(rng, REDUX["context"], scale=0.02)}


# name -> (model, image tokens (batch, tokens, width), text tokens (batch, tokens, width), strength, strength_type)
CASES = {
    "t2i_multiply_1": ("t2i", (1, 5, 1024), (1, 4, 768), 1.0, "multiply"),
    "t2i_multiply_0.6": ("t2i", (1, 5, 1024), (1, 4, 768), 0.6, "multiply"),
    "t2i_attn_bias_1": ("t2i", (1, 5, 1024), (1, 4, 768), 1.0, "attn_bias"),
    "t2i_two_images": ("t2i", (2, 3, 1024), (1, 4, 768), 1.5, "multiply"),
    "redux_multiply_1": ("redux", (1, 4, 1152), (1, 3, 4096), 1.0, "multiply"),
    "redux_two_images_2.5": ("redux", (2, 3, 1152), (1, 3, 4096), 2.5, "multiply"),
}


def case_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image tokens, text tokens) of a case."""
    _, img, txt, _, _ = CASES[name]
    rng = _rng(100 + sorted(CASES).index(name))
    return rng.standard_normal(img).astype(np.float32), rng.standard_normal(txt).astype(np.float32)
