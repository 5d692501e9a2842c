"""Stability's SD3.5 ControlNets (sd3.5_large_controlnet_blur / canny / depth) as ComfyUI 0.30 runs them.

The network is a stack of plain DiT blocks (self-attention over the image tokens only, adaLN-zero modulation from
the timestep + pooled text embedding, no text tokens), one output projection per block. What ComfyUI does around
it, and so what this module does (checked against ComfyUI 0.30.0 in tests/test_flow_controlnet.py):

- the image is embedded with the *main model's* patch embedding, plus a 2-D sin-cos position table computed for
  the latent's size (coordinates centred on 7.5, spanning +-7.5 along the shorter side), not the main model's
  cropped table; the hint latent goes through the ControlNet's own patch embedding and is added;
- each block feeds the next; block i's projected output is repeated ceil(depth / blocks) times (depth = width / 64,
  the main model's joint blocks), and the main model adds entry i after its joint block i;
- the file's `control_type` (0 blur, 1 canny, 2 depth) picks how the hint image is mapped before the VAE: canny
  x * 127.5 + 0.5, depth 1 - x, blur unchanged; the latent is put in the SD3 scale with its shift.

The file keeps the embedders under diffusers' names (`time_text_embed.*`) or MMDiT's (`t_embedder.*`); both are
read. q/k norm weights, if a file has them, are not used (ComfyUI builds these blocks without q/k norms).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .flow_nets import _pad_to_patch, _timestep_embedding

_DIFFUSERS_NAMES = {
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
}


def _mlp(inp: int, hidden: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(inp, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden))


class _Attention(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.proj = torch.nn.Linear(hidden, hidden)


class _FFN(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(hidden, 4 * hidden)
        self.fc2 = torch.nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(torch.nn.Module):
    """Self-attention + MLP, both modulated (shift, scale, gate) from the conditioning vector `c`."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.adaLN_modulation = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(hidden, 6 * hidden))
        self.attn = _Attention(hidden)
        self.mlp = _FFN(hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        b, n, d = x.shape
        h = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale_a.unsqueeze(1)) + shift_a.unsqueeze(1)
        q, k, v = self.attn.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + gate_a.unsqueeze(1) * self.attn.proj(a)
        h = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale_m.unsqueeze(1)) + shift_m.unsqueeze(1)
        return x + gate_m.unsqueeze(1) * self.mlp(h)


class _PatchEmbed(torch.nn.Module):
    def __init__(self, channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(channels, hidden, patch, stride=patch)


def sincos_positions(dim: int, w: int, h: int, center: float = 7.5, magnitude: float = 7.5) -> torch.Tensor:
    """(h * w, dim) 2-D sin-cos table: column coordinates then row coordinates, each [sin, cos] over dim / 4
    frequencies 1 / 10000^(i / (dim / 4)); the grid spans center +- magnitude along the shorter side (float32)."""
    small = min(h, w)
    span_h, span_w = h / small * magnitude, w / small * magnitude
    rows, cols = torch.meshgrid(torch.linspace(center - span_h, center + span_h, h, dtype=torch.float32),
                                torch.linspace(center - span_w, center + span_w, w, dtype=torch.float32),
                                indexing="ij")

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        half = dim // 2
        omega = torch.arange(half // 2, dtype=torch.float32)
        omega /= half / 2.0
        omega = 1.0 / 10000 ** omega
        out = torch.einsum("m,d->md", pos.reshape(-1), omega)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1)


class SD35ControlNet(torch.nn.Module):
    """network(x, timestep (sigma x 1000), hint latent, pooled (B, adm), x_embedder of the main model) ->
    {"output": [residual per main joint block]}."""

    def __init__(self, hidden: int, blocks: int, adm: int, patch: int = 2, channels: int = 16,
                 control_type: int = -1) -> None:
        super().__init__()
        self.hidden, self.heads, self.patch = hidden, hidden // 64, patch
        self.depth = hidden // 64  # the main model's joint blocks, as ComfyUI assumes (width / 64)
        self.control_type = control_type
        self.t_embedder = torch.nn.Module()
        self.t_embedder.mlp = _mlp(256, hidden)
        self.y_embedder = torch.nn.Module()
        self.y_embedder.mlp = _mlp(adm, hidden)
        self.transformer_blocks = torch.nn.ModuleList(DiTBlock(hidden, self.heads) for _ in range(blocks))
        self.controlnet_blocks = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(blocks))
        self.pos_embed_input = _PatchEmbed(channels, hidden, patch)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], name: str, error=ValueError) -> SD35ControlNet:
        state: dict[str, torch.Tensor] = {}
        control_type = -1
        for k, v in sd.items():
            if k == "control_type":
                control_type = round(float(v.reshape(-1)[0]))
                continue
            for old, new in _DIFFUSERS_NAMES.items():
                if k.startswith(old + "."):
                    k = new + k[len(old):]
            if k.startswith(("pos_embed.", "x_embedder.", "context_embedder.")) or ".attn.ln_" in k:
                continue  # the main model's patch embedding is used; ComfyUI's blocks have no q/k norms
            state[k] = v
        y = state.get("y_embedder.mlp.0.weight")
        if y is None or "pos_embed_input.proj.weight" not in state:
            raise error(f"{name}: an SD3.5 ControlNet without y_embedder / pos_embed_input weights")
        hidden, adm = int(y.shape[0]), int(y.shape[1])
        if adm == hidden:
            raise error(f"{name}: SD3.5 ControlNets with a second pooled-text embedder (the 8B-style "
                        "double_y_emb layout) are not supported yet")
        w = state["pos_embed_input.proj.weight"]
        if int(w.shape[1]) != 16:
            raise error(f"{name}: an SD3.5 ControlNet with a {int(w.shape[1])}-channel hint is not supported")
        blocks = sum(1 for k in state if k.startswith("transformer_blocks.") and k.endswith("adaLN_modulation.1.bias"))
        with torch.device("meta"):
            net = cls(hidden, blocks, adm, int(w.shape[2]), 16, control_type)
        own = net.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise error(f"{name}: {len(missing)} weights missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                        f"(e.g. {unexpected[:3]}) for an SD3.5 ControlNet")
        net.load_state_dict(state, strict=True, assign=True)
        return net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, hint: torch.Tensor, pooled: torch.Tensor | None,
                x_embedder) -> dict:
        if pooled is None:
            raise ValueError("an SD3.5 ControlNet needs the conditioning's pooled text embedding (pooled_output)")
        dtype = x.dtype
        h, w = (x.shape[-2] + 1) // self.patch, (x.shape[-1] + 1) // self.patch
        hs = x_embedder(_pad_to_patch(x, self.patch)).flatten(2).transpose(1, 2)
        hs = (hs.float() + sincos_positions(self.hidden, w, h).to(x.device)).to(dtype)  # summed in float32
        c = self.t_embedder.mlp(_timestep_embedding(t).to(dtype))
        c = c + self.y_embedder.mlp(pooled.to(device=x.device, dtype=dtype))
        hs = hs + self.pos_embed_input.proj(_pad_to_patch(hint, self.patch)).flatten(2).transpose(1, 2)
        repeat = math.ceil(self.depth / len(self.transformer_blocks))
        out = []
        for block, proj in zip(self.transformer_blocks, self.controlnet_blocks, strict=True):
            hs = block(hs, c)
            out.extend([proj(hs)] * repeat)
        return {"output": out}
