"""Seeded tiny Flux / SD3 ControlNets in the real key layouts ComfyUI 0.30's ControlNetLoader reads, built at test
time for tests/flow_models.py's tiny transformers (Flux width 256, T5 128, CLIP-L 32; SD3 width 128):

- `flux_xlabs`: XLabs' layout (BFL names: img_in, double_blocks.N..., controlnet_blocks.N, input_hint_block.0-14,
  pos_embed_input), two double blocks, no single blocks, as XLabs' v3 ControlNets;
- `flux_instantx`: InstantX's diffusers layout (x_embedder, transformer_blocks.N, single_transformer_blocks.N,
  controlnet_blocks, controlnet_single_blocks, controlnet_x_embedder); `flux_union` adds controlnet_mode_embedder
  (the Union ControlNets, 10 modes);
- `sd3_controlnet`: the diffusers SD3ControlNetModel layout (pos_embed, transformer_blocks.N, controlnet_blocks,
  pos_embed_input), for the T5-less 4096-wide context of the tiny SD3.5 large;
- `sd35_controlnet`: Stability's SD3.5 ControlNet layout (canny with two blocks, depth with one);
- `flux_mistoline`: Mistoline's layout; inpainting ControlNets (17-channel hints) for Flux and SD3.

Tensors come from torch.Generator(seed) in a fixed key order (tests/flow_models._Draw), so the files are the same
on every machine. `python tests/flow_control_models.py MODELS_DIR` writes them into MODELS_DIR/controlnet/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from flow_models import CLIP_G_WIDTH, CLIP_L_WIDTH, T5_WIDTH, _Draw, flux_transformer


def flux_xlabs(*, hidden: int = 256, depth: int = 2, seed: int = 40) -> dict:
    """An XLabs Flux ControlNet (dev: with guidance_in) for a Flux of width `hidden`."""
    sd = {k: v for k, v in flux_transformer("dev", hidden=hidden, depth=depth, single=0, seed=seed).items()
          if not k.startswith("final_layer.")}
    d = _Draw(seed + 1)
    for i in range(depth):
        d.lin(f"controlnet_blocks.{i}", hidden, hidden, std=0.5 * hidden ** -0.5)
    cin = 3
    for i in range(8):
        d.w(f"input_hint_block.{2 * i}.weight", 16, cin, 3, 3)
        d.b(f"input_hint_block.{2 * i}.bias", 16)
        cin = 16
    d.lin("pos_embed_input", hidden, 64)
    return {**sd, **d.sd}


def _seeded_like(module: torch.nn.Module, seed: int, keep=("pos_embed.pos_embed",)) -> dict:
    """A diffusers module's state dict with every tensor (but `keep`) drawn in sorted key order: weights
    N(0, 1/fan_in) (modulations 0.3x that), biases N(0, 0.02^2), norm scales 1 + N(0, 0.1^2)."""
    d = _Draw(seed)
    own = module.state_dict()
    for k in sorted(own):
        v = own[k]
        if k in keep:
            d.sd[k] = v.clone()
        elif k.endswith(".bias"):
            d.b(k, v.shape[0])
        elif v.ndim == 1:
            d.norm(k, v.shape[0])
        elif "norm" in k and k.endswith("linear.weight"):
            d.w(k, *v.shape, std=0.3 * v.shape[1] ** -0.5)
        else:
            d.w(k, *v.shape)
    return d.sd


def flux_mistoline(*, hidden: int = 256, depth: int = 1, single: int = 1, seed: int = 48) -> dict:
    """A Mistoline Flux ControlNet (BFL names, controlnet_blocks.N.linear, single_controlnet_blocks.N.linear,
    input_cond_block.encoder.0-18, pos_embed_input)."""
    sd = {k: v for k, v in flux_transformer("dev", hidden=hidden, depth=depth, single=single, seed=seed).items()
          if not k.startswith("final_layer.")}
    d = _Draw(seed + 1)
    for i in range(depth):
        d.lin(f"controlnet_blocks.{i}.linear", hidden, hidden, std=0.5 * hidden ** -0.5)
    for i in range(single):
        d.lin(f"single_controlnet_blocks.{i}.linear", hidden, hidden, std=0.5 * hidden ** -0.5)
    cin = 3
    for i, k in enumerate((3, 1, 3, 3, 3, 3, 3, 3, 1, 3)):
        d.w(f"input_cond_block.encoder.{2 * i}.weight", 16, cin, k, k)
        d.b(f"input_cond_block.encoder.{2 * i}.bias", 16)
        cin = 16
    d.lin("pos_embed_input", hidden, 64)
    return {**sd, **d.sd}


def flux_instantx(*, union: bool = False, inpaint: bool = False, hidden: int = 256, depth: int = 2, single: int = 2,
                  seed: int = 42) -> dict:
    """An InstantX-style Flux ControlNet (diffusers' FluxControlNetModel layout, dev), optionally a Union one or an
    inpainting one (Alimama's: a 17-channel hint, 68 features into controlnet_x_embedder)."""
    from diffusers import FluxControlNetModel

    torch.manual_seed(0)  # the module's own init is replaced; only its keys and shapes are used
    m = FluxControlNetModel(in_channels=64, num_layers=depth, num_single_layers=single, attention_head_dim=128,
                            num_attention_heads=hidden // 128, joint_attention_dim=T5_WIDTH,
                            pooled_projection_dim=CLIP_L_WIDTH, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
                            num_mode=10 if union else None)
    if inpaint:
        m.controlnet_x_embedder = torch.nn.Linear(68, hidden)
    return _seeded_like(m, seed)


def sd3_controlnet(*, heads: int = 2, layers: int = 1, context_dim: int = 4096, pos_max: int = 16, extra: int = 0,
                   seed: int = 44) -> dict:
    """An SD3 ControlNet in diffusers' SD3ControlNetModel layout (q/k RMS norms, as SD3.5's diffusers ones)."""
    from diffusers import SD3ControlNetModel

    m = SD3ControlNetModel(sample_size=32, patch_size=2, in_channels=16, num_layers=layers, attention_head_dim=64,
                           num_attention_heads=heads, joint_attention_dim=context_dim,
                           caption_projection_dim=64 * heads,
                           pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH, out_channels=16,
                           pos_embed_max_size=pos_max, qk_norm="rms_norm", extra_conditioning_channels=extra)
    return _seeded_like(m, seed)


def sd35_controlnet(*, heads: int = 2, blocks: int = 2, control_type: int = 1, seed: int = 46) -> dict:
    """Stability's SD3.5 ControlNet layout (sd3.5_large_controlnet_canny keys): embedders under diffusers' names,
    DiT blocks (adaLN_modulation, attn.qkv / proj, mlp.fc1 / fc2), controlnet_blocks, pos_embed_input, and the
    control_type (0 blur, 1 canny, 2 depth)."""
    d = _Draw(seed)
    h = 64 * heads
    d.lin("time_text_embed.timestep_embedder.linear_1", h, 256)
    d.lin("time_text_embed.timestep_embedder.linear_2", h, h)
    d.lin("time_text_embed.text_embedder.linear_1", h, CLIP_L_WIDTH + CLIP_G_WIDTH)
    d.lin("time_text_embed.text_embedder.linear_2", h, h)
    for i in range(blocks):
        p = f"transformer_blocks.{i}."
        d.lin(p + "adaLN_modulation.1", 6 * h, h, std=0.3 * h ** -0.5)
        d.lin(p + "attn.qkv", 3 * h, h)
        d.lin(p + "attn.proj", h, h)
        d.lin(p + "mlp.fc1", 4 * h, h)
        d.lin(p + "mlp.fc2", h, 4 * h)
        d.lin(f"controlnet_blocks.{i}", h, h, std=0.5 * h ** -0.5)
    d.w("pos_embed_input.proj.weight", h, 16, 2, 2)
    d.b("pos_embed_input.proj.bias", h)
    d.sd["control_type"] = torch.tensor([float(control_type)])
    return d.sd


FILES = {
    "controlnet/flux_xlabs_cn.safetensors": flux_xlabs,
    "controlnet/flux_instantx_cn.safetensors": flux_instantx,
    "controlnet/flux_union_cn.safetensors": lambda: flux_instantx(union=True, seed=43),
    "controlnet/sd3_cn.safetensors": sd3_controlnet,
    "controlnet/sd35_canny_cn.safetensors": sd35_controlnet,
    "controlnet/sd35_depth_cn.safetensors": lambda: sd35_controlnet(blocks=1, control_type=2, seed=47),
    "controlnet/flux_mistoline_cn.safetensors": flux_mistoline,
    "controlnet/flux_inpaint_cn.safetensors": lambda: flux_instantx(inpaint=True, depth=1, single=1, seed=50),
    "controlnet/sd3_inpaint_cn.safetensors": lambda: sd3_controlnet(layers=2, extra=1, seed=52),
}


def write_controlnets(root: Path, names=None) -> dict[str, Path]:
    from safetensors.torch import save_file

    out = {}
    for name, make in FILES.items():
        if names is not None and name not in names:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in make().items()}, str(path))
        out[name] = path
    return out


def digests() -> dict[str, str]:
    from flow_models import digest

    return {name: digest(make()) for name, make in FILES.items()}


if __name__ == "__main__":
    for name, path in write_controlnets(Path(sys.argv[1])).items():
        print(name, path.stat().st_size)
