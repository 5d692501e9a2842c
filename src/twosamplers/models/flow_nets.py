"""The Flux and SD3 transformers (diffusers' FluxTransformer2DModel / SD3Transformer2DModel) called the way
ComfyUI calls its own: `network(x, timestep, context, y=pooled, guidance=...) -> velocity`, on latents of any
size (padded circularly to the patch size and cropped back, as ComfyUI does), with ComfyUI's position ids and its
float32 timestep embedding (diffusers' own forward rounds the timestep to the compute dtype first).

Weights stay in their stored dtype (bf16, fp16, fp8): `cast_on_use` makes the linear and convolution layers cast
their weights to the input's dtype at each call (ComfyUI's "manual cast"); the few other tensors (norm scales,
SD3's position table) are rounded through the storage dtype once and kept in the compute dtype, which gives the
numbers ComfyUI gives with that weight dtype. The diffusers modules are built on the meta device and filled from
the converted state dict (no random initialisation, no second copy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .flow_keys import FLUX_AXES


# ------------------------------------------------------------------------------------------------ weights
class _CastLinear(torch.nn.Linear):
    """nn.Linear whose stored weight is cast to the input's dtype at each call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), b)


class _CastConv2d(torch.nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return self._conv_forward(x, self.weight.to(x.dtype), b)


def cast_on_use(module: torch.nn.Module, storage: torch.dtype | None, compute: torch.dtype) -> torch.nn.Module:
    """Keep linear/conv weights in `storage` and compute in `compute`: those layers cast at each call; every other
    parameter and buffer is rounded through `storage` once and stored in `compute`. `storage` None keeps each
    tensor's own dtype (a file's fp8 weights beside bf16 norms stay so; the others are widened exactly)."""
    if storage == compute:
        return module
    for m in module.modules():
        w = getattr(m, "weight", None)
        if storage is None and (w is None or w.dtype == compute):
            continue
        if type(m) is torch.nn.Linear:
            m.__class__ = _CastLinear
        elif type(m) is torch.nn.Conv2d:
            m.__class__ = _CastConv2d
    cast_layers = (_CastLinear, _CastConv2d)
    for m in module.modules():
        own = cast_layers if isinstance(m, cast_layers) else ()
        for name, p in list(m.named_parameters(recurse=False)):
            if own and name in ("weight", "bias"):
                p.data = p.data.to(storage or p.dtype)
            else:
                p.data = p.data.to(storage or p.dtype).to(compute)
        for name, b in list(m.named_buffers(recurse=False)):
            if b.is_floating_point():
                setattr(m, name, b.to(storage or b.dtype).to(compute))
    return module


def build_module(cls, config: dict, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """A diffusers model from its config and a complete state dict (meta-device init, tensors assigned)."""
    with torch.device("meta"):
        module = cls.from_config(config)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{what}: {len(missing)} weights missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]})")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{what}: weight {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected "
                         f"{tuple(own[bad[0]].shape)}")
    module.load_state_dict(state, strict=True, assign=True)
    for m in module.modules():  # buffers the state dict does not hold (none expected) would stay on meta
        for name, b in m.named_buffers(recurse=False):
            if b.is_meta:
                raise ValueError(f"{what}: buffer {name} has no value")
    return module.eval().requires_grad_(False)


def _pad_to_patch(x: torch.Tensor, p: int) -> torch.Tensor:
    """Circular padding to a multiple of the patch size (ComfyUI's pad_to_patch_size)."""
    ph, pw = (p - x.shape[-2] % p) % p, (p - x.shape[-1] % p) % p
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="circular")
    return x


def _timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """The sinusoidal embedding [cos, sin] of float32 `t` (ComfyUI's and diffusers' formula, in float32)."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(t.float(), dim, flip_sin_to_cos=True, downscale_freq_shift=0)


def _add_control(hs: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """A ControlNet residual added to the first tokens of the image stream (ComfyUI adds it over its own length)."""
    n = add.shape[1]
    if n == hs.shape[1]:
        return hs + add
    return torch.cat([hs[:, :n] + add, hs[:, n:]], dim=1)


# ------------------------------------------------------------------------------------------------ Flux
class FluxNetwork(torch.nn.Module):
    """Flux.1 (dev or schnell): network(x (B, 16, H, W), timestep (B,) = sigma, context (B, L, 4096),
    y (B, 768), guidance (B,) or None) -> (B, 16, H, W)."""

    patch = 2

    def __init__(self, transformer, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.transformer = transformer
        self.compute_dtype = compute_dtype
        self.guidance_embed = bool(transformer.config.guidance_embeds)
        self.vec_in_dim = int(transformer.config.pooled_projection_dim)
        self.context_dim = int(transformer.config.joint_attention_dim)

    @staticmethod
    def image_ids(h_len: int, w_len: int, device) -> torch.Tensor:
        """(h_len * w_len, 3) position ids (0, row, column) in float32, as ComfyUI's process_img."""
        ids = torch.zeros((h_len, w_len, len(FLUX_AXES)), device=device, dtype=torch.float32)
        ids[:, :, 1] = ids[:, :, 1] + torch.linspace(0, h_len - 1, steps=h_len, device=device,
                                                     dtype=torch.float32).unsqueeze(1)
        ids[:, :, 2] = ids[:, :, 2] + torch.linspace(0, w_len - 1, steps=w_len, device=device,
                                                     dtype=torch.float32).unsqueeze(0)
        return ids.reshape(h_len * w_len, len(FLUX_AXES))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, control: dict | None = None) -> torch.Tensor:
        """`control`: ControlNet residuals {"input": [per double block], "output": [per single block]}, each added
        to the image tokens after its block (models/flow_control.py)."""
        tr = self.transformer
        b, _, h, w = x.shape
        p = self.patch
        xp = _pad_to_patch(x, p)
        hp, wp = xp.shape[-2] // p, xp.shape[-1] // p
        c = xp.shape[1]
        img = xp.reshape(b, c, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * p * p)
        dtype = img.dtype
        if y is None:
            y = torch.zeros((b, self.vec_in_dim), device=x.device, dtype=dtype)
        y = y[:, : self.vec_in_dim].to(dtype)
        hs = tr.x_embedder(img)
        temb = tr.time_text_embed.timestep_embedder(_timestep_embedding(timestep * 1000.0).to(dtype))
        if self.guidance_embed and guidance is not None:
            # ComfyUI hands the guidance to the network in the compute dtype (the timestep stays float32)
            g = guidance.to(device=x.device, dtype=dtype).reshape(-1).expand(b)
            temb = temb + tr.time_text_embed.guidance_embedder(_timestep_embedding(g * 1000.0).to(dtype))
        temb = temb + tr.time_text_embed.text_embedder(y)
        txt = tr.context_embedder(context.to(dtype))
        ids = torch.cat([torch.zeros((context.shape[1], len(FLUX_AXES)), device=x.device, dtype=torch.float32),
                         self.image_ids((h + p // 2) // p, (w + p // 2) // p, x.device)], dim=0)
        rope = tr.pos_embed(ids)
        double, single = (control or {}).get("input", ()), (control or {}).get("output", ())
        for i, block in enumerate(tr.transformer_blocks):
            txt, hs = block(hidden_states=hs, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)
            if i < len(double) and double[i] is not None:
                hs = _add_control(hs, double[i])
        for i, block in enumerate(tr.single_transformer_blocks):
            txt, hs = block(hidden_states=hs, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)
            if i < len(single) and single[i] is not None:
                hs = _add_control(hs, single[i])
        hs = tr.norm_out(hs, temb)
        out = tr.proj_out(hs)
        co = out.shape[-1] // (p * p)
        out = out.reshape(b, hp, wp, co, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, co, hp * p, wp * p)
        return out[:, :, :h, :w]


# ------------------------------------------------------------------------------------------------ SD3
class SD3Network(torch.nn.Module):
    """SD3 / SD3.5 MMDiT: network(x (B, 16, H, W), timestep (B,) = sigma * 1000, context (B, L, 4096),
    y (B, 2048)) -> (B, 16, H, W)."""

    def __init__(self, transformer, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.transformer = transformer
        self.compute_dtype = compute_dtype
        self.patch = int(transformer.config.patch_size)
        self.context_dim = int(transformer.config.joint_attention_dim)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, control: dict | None = None) -> torch.Tensor:
        """`control`: ControlNet residuals {"output": [per joint block]}, added to the image tokens after each."""
        tr = self.transformer
        b, _, h, w = x.shape
        p = self.patch
        xp = _pad_to_patch(x, p)
        dtype = xp.dtype
        pe = tr.pos_embed
        hs = pe.proj(xp).flatten(2).transpose(1, 2)
        hs = (hs + pe.cropped_pos_embed(xp.shape[-2], xp.shape[-1]).to(dtype)).contiguous()
        temb = tr.time_text_embed.timestep_embedder(_timestep_embedding(timestep).to(dtype))
        if y is not None:
            temb = temb + tr.time_text_embed.text_embedder(y.to(dtype))
        txt = tr.context_embedder(context.to(dtype))
        added = (control or {}).get("output", ())
        for i, block in enumerate(tr.transformer_blocks):
            txt, hs = block(hidden_states=hs, encoder_hidden_states=txt, temb=temb)
            if i < len(added) and added[i] is not None:
                hs = _add_control(hs, added[i])
        hs = tr.norm_out(hs, temb)
        out = tr.proj_out(hs)
        hp, wp = xp.shape[-2] // p, xp.shape[-1] // p
        co = out.shape[-1] // (p * p)
        out = out.reshape(b, hp, wp, p, p, co)
        out = torch.einsum("nhwpqc->nchpwq", out).reshape(b, co, hp * p, wp * p)
        return out[:, :, :h, :w]
