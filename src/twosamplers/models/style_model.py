"""Style models (ComfyUI's STYLE_MODEL): image tokens appended to a prompt's conditioning.

Two kinds, told apart by their keys as ComfyUI 0.30 tells them:

- T2I-Adapter style (TencentARC's `coadapter-style` / `t2iadapter_style`, key `style_embedding`): a small CLIP-like
  transformer over the CLIP vision tower's last hidden state with learned style tokens appended; the style tokens
  after the last layer, normalised and projected, are the output (N, tokens, context width). The published
  model is 1024 wide (CLIP ViT-L/14's vision width), 3 layers of 8 heads, 8 tokens, 768 out (SD1.x's context);
  sizes are read from the weights (heads stay 8, as ComfyUI fixes them), so smaller test models load too.
- Flux Redux (`redux_up` / `redux_down`): two linear layers with SiLU between, from SigLIP's 1152-wide tokens to
  T5's 4096-wide context, one output token per image token.

Both read `ClipVisionOutput.last_hidden_state` and compute in float32.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

T2I_STYLE_HEADS = 8


class StyleModelError(ValueError):
    """A file that is not a style model of a supported kind."""


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """A CLIP residual attention block (sequence-first, as nn.MultiheadAttention takes it)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class T2IStyleAdapter(nn.Module):
    """(N, L, width) CLIP vision tokens -> (N, tokens, context) style tokens."""

    def __init__(self, width: int, context_dim: int, layers: int, tokens: int, heads: int = T2I_STYLE_HEADS):
        super().__init__()
        self.transformer_layes = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])  # sic: the file's key
        self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.style_embedding.shape[1]
        style = self.style_embedding.expand(x.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([x, style], dim=1))
        x = self.transformer_layes(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, -tokens:, :]) @ self.proj


class ReduxEncoder(nn.Module):
    """(N, L, 1152) SigLIP tokens -> (N, L, 4096) T5-width tokens."""

    def __init__(self, vision_width: int, context_dim: int, hidden: int) -> None:
        super().__init__()
        self.redux_up = nn.Linear(vision_width, hidden)
        self.redux_down = nn.Linear(hidden, context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.redux_down(nn.functional.silu(self.redux_up(x)))


class StyleModel:
    """A loaded style model: `get_cond(clip_vision_output)` -> (N, tokens, context width), float32."""

    def __init__(self, network: nn.Module, kind: str, source: str = "") -> None:
        self.network = network
        self.kind = kind  # "t2i_style" or "redux"
        self.source = source

    @property
    def input_width(self) -> int:
        if self.kind == "redux":
            return int(self.network.redux_up.in_features)
        return int(self.network.style_embedding.shape[-1])

    @property
    def context_dim(self) -> int:
        if self.kind == "redux":
            return int(self.network.redux_down.out_features)
        return int(self.network.proj.shape[-1])

    def get_cond(self, clip_vision_output) -> torch.Tensor:
        x = getattr(clip_vision_output, "last_hidden_state", None)
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            raise TypeError("clip_vision_output must be a CLIP_VISION_OUTPUT (from CLIPVisionEncode)")
        if x.shape[-1] != self.input_width:
            need = "SigLIP (sigclip_vision_patch14_384)" if self.kind == "redux" else "CLIP ViT-L/14"
            raise ValueError(f"this style model takes {self.input_width}-wide image tokens ({need}'s), but the "
                             f"CLIP vision output is {x.shape[-1]} wide: load the matching CLIP vision model")
        with torch.no_grad():
            return self.network(x.float())


def style_model_from_state(sd: dict[str, torch.Tensor], source: str = "") -> StyleModel:
    if "style_embedding" in sd:
        _, tokens, width = sd["style_embedding"].shape
        layers = len({int(m.group(1)) for k in sd if (m := re.match(r"transformer_layes\.(\d+)\.", k))})
        if width % T2I_STYLE_HEADS:
            raise StyleModelError(f"{source}: a T2I style model {width} wide does not split into "
                                  f"{T2I_STYLE_HEADS} heads")
        net = T2IStyleAdapter(int(width), int(sd["proj"].shape[-1]), layers, int(tokens))
        kind = "t2i_style"
    elif "redux_down.weight" in sd and "redux_up.weight" in sd:
        hidden, vision = sd["redux_up.weight"].shape
        net = ReduxEncoder(int(vision), int(sd["redux_down.weight"].shape[0]), int(hidden))
        kind = "redux"
    else:
        raise StyleModelError(f"{source}: not a style model (no T2I-Adapter 'style_embedding' nor Flux Redux "
                              "'redux_up' / 'redux_down' weights)")
    try:
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise StyleModelError(f"{source}: the style model's weights do not fit its layout ({first})") from None
    return StyleModel(net.eval().requires_grad_(False), kind, source)


def load_style_model(path: str | os.PathLike, *, allow_pickle: bool = False) -> StyleModel:
    """A style model file (models/style_models/)."""
    from .sd_loading import read_state_dict

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"style model not found: {os.fspath(path)}")
    return style_model_from_state(read_state_dict(p, allow_pickle=allow_pickle), str(p))


def apply_style(conditioning: list, style: StyleModel, clip_vision_output, strength: float,
                strength_type: str) -> list:
    """StyleModelApply: the style tokens (all images' tokens in one row, times `strength` for "multiply") appended
    after every entry's text tokens. "attn_bias" with strength 1 appends them unchanged, as ComfyUI does; with
    another strength it needs attention masks in the model, which this project does not run."""
    if strength_type not in ("multiply", "attn_bias"):
        raise ValueError(f"strength_type must be 'multiply' or 'attn_bias', got {strength_type!r}")
    if strength_type == "attn_bias" and strength != 1.0:
        raise ValueError("strength_type 'attn_bias' with a strength other than 1 biases the model's attention "
                         "(attention masks), which is not supported; use strength_type 'multiply'")
    cond = style.get_cond(clip_vision_output).flatten(0, 1).unsqueeze(0)
    if strength_type == "multiply":
        cond = cond * strength
    out = []
    for txt, keys in conditioning:
        if "attention_mask" in keys:
            raise ValueError("the conditioning carries an attention mask, which is not supported")
        if txt.shape[-1] != cond.shape[-1]:
            raise ValueError(f"the style model gives {cond.shape[-1]}-wide tokens but the conditioning is "
                             f"{txt.shape[-1]} wide (a style model for another model family?)")
        tokens = cond.to(device=txt.device, dtype=txt.dtype).expand(txt.shape[0], -1, -1)
        out.append([torch.cat([txt, tokens], dim=1), dict(keys)])
    return out


__all__ = ["ReduxEncoder", "StyleModel", "StyleModelError", "T2IStyleAdapter", "apply_style", "load_style_model",
           "style_model_from_state"]
