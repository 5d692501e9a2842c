"""ControlNets for Flux.1 and SD3 / SD3.5, in the layouts ComfyUI 0.30's ControlNetLoader reads for them.

- XLabs Flux (`flux-xlabs`): BFL keys (`double_blocks.0.img_attn.norm.key_norm.scale`, ...) plus
  `controlnet_blocks.N`, `input_hint_block.*`, `pos_embed_input`; the hint image goes through its own pixel
  encoder (no VAE). Mistoline (`flux-mistoline`): the same with `controlnet_blocks.N.linear` (+ SiLU),
  `single_controlnet_blocks.N.linear` and its `input_cond_block.encoder.*` pixel encoder.
- InstantX / Shakker Flux and their Union ControlNets (`flux-instantx`): diffusers' names (`controlnet_x_embedder`,
  `controlnet_blocks`, `controlnet_single_blocks`; Union: `controlnet_mode_embedder`); the hint is VAE-encoded and
  put in the Flux latent scale ((z - 0.1159) x 0.3611).
- SD3 / SD3.5 in diffusers' layout (`sd3`: `pos_embed_input.proj`, `controlnet_blocks`, `transformer_blocks`);
  the hint is VAE-encoded, z x 1.5305 (ComfyUI leaves SD3's shift out for these).
- Inpainting ControlNets of the last two kinds (a 17-channel hint: Alimama's Flux / SD3 inpainting ControlNets):
  the hint latent gets a mask channel, ones under ControlNetApplyAdvanced, 1 - mask under
  ControlNetInpaintingAliMamaApply (which also blanks the masked pixels of the hint image).

The networks are diffusers' `FluxControlNetModel` / `SD3ControlNetModel` (XLabs' BFL keys are mapped onto the
former with the same table as the Flux transformer, plus its pixel hint encoder); the way they are called is
ComfyUI's, checked against ComfyUI 0.30.0 run as an oracle (tests/test_flow_controlnet.py):

- inputs as for the main model (x, the timestep rounded to the network's dtype, the prompt context, the pooled
  text embedding, Flux dev's guidance); SD3 ControlNets get a zero pooled embedding (as ComfyUI feeds them);
- Flux: one residual per double block and per single block, spread over Flux.1's 19 / 38 blocks: XLabs' list
  repeated as a whole (a, b, a, b, ...), InstantX's each repeated in place (a, a, ..., b, b, ...); the main model
  adds residual i after its block i (image tokens only). Union ControlNets with a control type
  (SetUnionControlNetType) put the type's embedding before the text tokens;
- SD3: block i's residual is repeated depth / blocks times (one fewer for the last block), added after the main
  model's joint block i.

Refused with one line: Qwen-Image ControlNets, SD3.5 ControlNets with a second pooled-text embedder, hints of other
channel counts. Stability's SD3.5 ControlNets: models/flow_control_sd35.py.
"""

from __future__ import annotations

import copy
import math
import os
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from .flow_keys import convert, flux_config, flux_keymap, strip
from .flow_nets import _pad_to_patch, _timestep_embedding, build_module, cast_on_use

FLUX_DOUBLE, FLUX_SINGLE = 19, 38  # Flux.1's block counts, over which ComfyUI spreads a Flux ControlNet's outputs
UNION_TYPES = {"openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2, "canny/lineart/anime_lineart/mlsd": 3,
               "normal": 4, "segment": 5, "tile": 6, "repaint": 7}
KIND_TITLES = {"flux-xlabs": "Flux ControlNet (XLabs)", "flux-mistoline": "Flux ControlNet (Mistoline)",
               "flux-instantx": "Flux ControlNet (InstantX / diffusers)",
               "flux-union": "Flux Union ControlNet (InstantX / diffusers)", "sd3": "SD3 ControlNet (diffusers)",
               "sd35": "SD3.5 ControlNet (Stability)"}
SD35_PREPROCESS = {1: "canny", 2: "depth"}  # the file's control_type (0 blur, 1 canny, 2 depth)
# the pixel hint encoders: (kernel, stride) of each conv, SiLU between; 3 -> 16 channels, 1/8 size
_XLABS_CONVS = ("input_hint_block.", ((3, 1), (3, 1), (3, 2), (3, 1), (3, 2), (3, 1), (3, 2), (3, 1)))
_MISTOLINE_CONVS = ("input_cond_block.encoder.", ((3, 1), (1, 1), (3, 1), (3, 2), (3, 1), (3, 2), (3, 1), (3, 2),
                                                  (1, 1), (3, 1)))

_CACHE: dict[tuple, FlowControlNet] = {}
_CACHE_LOCK = threading.Lock()


class UnsupportedControlNetError(ValueError):
    """A ControlNet layout this project does not run (the message says which)."""


def flow_controlnet_kind(keys) -> str | None:
    """"flux-xlabs", "flux-mistoline", "flux-instantx", "sd3" or "sd35" for a Flux / SD3 ControlNet's keys
    (ComfyUI 0.30's order of tests), None for other files (SD ControlNets, ...); an UnsupportedControlNetError for
    the Flux / SD3 kinds not run here."""
    keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    if "controlnet_blocks.0.weight" in keys:
        if "double_blocks.0.img_attn.norm.key_norm.scale" in keys:
            return "flux-xlabs"
        if "pos_embed_input.proj.weight" in keys:
            if "transformer_blocks.0.adaLN_modulation.1.bias" in keys:
                return "sd35"
            return "sd3"
        if "transformer_blocks.0.img_mlp.net.0.proj.weight" in keys:
            raise UnsupportedControlNetError("Qwen-Image ControlNets are not supported (no Qwen-Image models here)")
        if "controlnet_x_embedder.weight" in keys:
            return "flux-instantx"
        return None
    if "controlnet_blocks.0.linear.weight" in keys:
        return "flux-mistoline"
    return None


def header_keys(path: str | os.PathLike) -> set[str]:
    """A safetensors file's tensor names, from its (checked) header alone."""
    from safetensors import safe_open

    from .sd_loading import _check_safetensors_header

    p = Path(path)
    _check_safetensors_header(p)
    with safe_open(str(p), framework="pt") as f:
        return set(f.keys())


def is_flow_controlnet_file(path: str | os.PathLike) -> bool:
    """Whether a ControlNet file is a Flux / SD3 one (from its safetensors header; other files: False). Raises
    UnsupportedControlNetError for the Flux / SD3 layouts not run here."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".safetensors", ".sft"):
        return False
    try:
        keys = header_keys(p)
    except Exception:  # noqa: BLE001 (not a readable safetensors file: the SD loader reports it)
        return False
    return flow_controlnet_kind(keys) is not None


# ------------------------------------------------------------------------------------------------ the handle
class FlowControlNet:
    """A loaded Flux or SD3 ControlNet. `family` is "flux" or "sd3"; `needs_vae` when its hint is a latent (the
    VAE given to ControlNetApplyAdvanced, or the pass model's own); `control_type` the Union type (a list, empty
    for "auto")."""

    def __init__(self, kind: str, network, hint_block, compute_dtype: torch.dtype, source: str) -> None:
        self.kind = kind
        self.family = "sd3" if kind in ("sd3", "sd35") else "flux"
        self.network = network
        self.hint_block = hint_block
        self.compute_dtype = compute_dtype
        self.source = source
        cfg = getattr(network, "config", None)
        self.num_modes = int(cfg.num_mode or 0) if self.family == "flux" else 0
        self.control_type: list[int] = []
        self.needs_vae = kind not in ("flux-xlabs", "flux-mistoline")
        self.concat_mask = False  # an inpainting ControlNet: a mask channel after the hint latent's 16
        if self.family == "flux":
            self.guidance_embed = bool(cfg.guidance_embeds)
            self.vec_in_dim = int(cfg.pooled_projection_dim)
            self.context_dim = int(cfg.joint_attention_dim)
            if kind == "flux-instantx":
                self.concat_mask = int(network.controlnet_x_embedder.weight.shape[1]) // 4 == 17
        elif kind == "sd3":
            self.context_dim = int(cfg.joint_attention_dim)
            self.depth = int(cfg.num_attention_heads * cfg.attention_head_dim) // 64
            self.concat_mask = int(cfg.extra_conditioning_channels) == 1
        else:  # Stability's SD3.5 ControlNets read no text tokens
            self.context_dim = None
            self.preprocess = SD35_PREPROCESS.get(network.control_type)

    def __repr__(self) -> str:
        extra = f", control_type={self.control_type}" if self.num_modes else ""
        return f"ControlNet({self.title}{extra}, source={self.source!r})"

    @property
    def title(self) -> str:
        return KIND_TITLES["flux-union" if self.num_modes else self.kind]

    @property
    def family_title(self) -> str:
        return "Flux" if self.family == "flux" else "SD3"

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def with_control_type(self, name: str) -> FlowControlNet:
        """SetUnionControlNetType: a copy with the Union type `name` ("auto": none) over the same weights. Only
        Union ControlNets use it (others ignore it, as ComfyUI's do)."""
        if name != "auto" and name not in UNION_TYPES:
            raise ValueError(f"type must be 'auto' or one of {sorted(UNION_TYPES)}, got {name!r}")
        out = copy.copy(self)
        out.control_type = [UNION_TYPES[name]] if name != "auto" else []
        if out.control_type and self.num_modes and out.control_type[0] >= self.num_modes:
            raise ValueError(f"this Union ControlNet has {self.num_modes} control types; {name!r} is type "
                             f"{out.control_type[0]}")
        return out

    # ------------------------------------------------------------------------------------------ hints
    def hint_latent(self, pixels: torch.Tensor, vae) -> torch.Tensor:
        """(B, 3, H, W) pixels at the latent's pixel size -> what the network takes: pixels for XLabs; the VAE's
        latent in the family's scale (Flux (z - 0.1159) x 0.3611, SD3 z x 1.5305) for the others."""
        if not self.needs_vae:
            return pixels
        if vae is None:
            raise ValueError(f"this {self.title} encodes its hint image with the VAE: give ControlNetApplyAdvanced "
                             "a vae (or use a model loaded with its VAE)")
        if self.kind == "sd35" and self.preprocess == "canny":  # ComfyUI's mapping for these files, as it is
            pixels = pixels * 255 * 0.5 + 0.5
        elif self.kind == "sd35" and self.preprocess == "depth":
            pixels = 1.0 - pixels
        encode = getattr(vae, "encode_image", None) or getattr(vae, "encode", None)
        z = encode(pixels.movedim(1, -1)).float()
        if self.family == "flux":
            return (z - 0.1159) * 0.3611
        if self.kind == "sd35":
            return (z - 0.0609) * 1.5305
        return z * 1.5305  # ComfyUI feeds diffusers' SD3 ControlNets the SD3 latent scale without its shift

    # ------------------------------------------------------------------------------------------ running
    def residuals(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, hint: torch.Tensor,
                  extras: dict) -> dict[str, list[torch.Tensor]]:
        """{"input": [...], "output": [...]} at strength 1: Flux's per-double-block ("input") and per-single-block
        ("output") residuals, SD3's per-joint-block ("output"). `x` is the model input in the compute dtype,
        `timestep` the main model's (Flux: sigma, SD3: sigma x 1000), `extras` the entry's pooled_output /
        guidance."""
        self._to(x.device)
        dtype = self.compute_dtype
        x, context, hint = x.to(dtype), context.to(device=x.device, dtype=dtype), hint.to(device=x.device,
                                                                                            dtype=dtype)
        t = timestep.to(device=x.device).to(dtype)  # ComfyUI hands its ControlNets the timestep in their dtype
        if self.family == "flux":
            return self._flux(x, t, context, hint, extras)
        if self.kind == "sd35":
            return self.network(x, t, hint, extras.get("pooled_output"), extras["x_embedder"])
        return self._sd3(x, t, context, hint)

    def _to(self, device: torch.device) -> None:
        if self.device != device:
            self.network.to(device)
            if self.hint_block is not None:
                self.hint_block.to(device)

    def _flux(self, x, t, context, hint, extras) -> dict:
        tr = self.network
        b, _, h, w = x.shape
        dtype = x.dtype
        if self.hint_block is not None:  # XLabs, Mistoline: pixels in [-1, 1] through their own encoder
            hint = self.hint_block(hint * 2.0 - 1.0)
        hint = _patchify(_pad_to_patch(hint, 2))
        img = _patchify(_pad_to_patch(x, 2))
        hs = tr.x_embedder(img) + tr.controlnet_x_embedder(hint)
        temb = tr.time_text_embed.timestep_embedder(_timestep_embedding(t * 1000.0).to(dtype))
        if self.guidance_embed:
            g = extras.get("guidance")
            if g is None:
                raise ValueError(f"this {self.title} was made for Flux dev (it has a guidance embedding); the "
                                 "conditioning has no guidance (Flux schnell, or FluxDisableGuidance)")
            g = torch.as_tensor(g).to(device=x.device, dtype=dtype).reshape(-1).expand(b)
            temb = temb + tr.time_text_embed.guidance_embedder(_timestep_embedding(g * 1000.0).to(dtype))
        y = extras.get("pooled_output")
        y = torch.zeros((b, self.vec_in_dim), device=x.device, dtype=dtype) if y is None else y
        temb = temb + tr.time_text_embed.text_embedder(y[:, : self.vec_in_dim].to(device=x.device, dtype=dtype))
        txt = tr.context_embedder(context)
        n_txt = txt.shape[1]
        if self.num_modes and self.control_type:
            mode = tr.controlnet_mode_embedder(torch.tensor(self.control_type, device=x.device)).to(dtype)
            txt = torch.cat([mode.unsqueeze(0).expand(b, -1, -1), txt], dim=1)
            n_txt += len(self.control_type)
        from .flow_nets import FluxNetwork

        ids = torch.cat([torch.zeros((n_txt, 3), device=x.device, dtype=torch.float32),
                         FluxNetwork.image_ids((h + 1) // 2, (w + 1) // 2, x.device)], dim=0)
        rope = tr.pos_embed(ids)
        double, single = [], []
        for block, out in zip(tr.transformer_blocks, tr.controlnet_blocks, strict=True):
            txt, hs = block(hidden_states=hs, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)
            double.append(self._project(out, hs))
        for block, out in zip(tr.single_transformer_blocks, tr.controlnet_single_blocks, strict=True):
            txt, hs = block(hidden_states=hs, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope)
            single.append(self._project(out, hs))
        spread = _stretch if self.kind == "flux-instantx" else _cycle
        res = {"input": spread(double, FLUX_DOUBLE)}
        if single:
            res["output"] = spread(single, FLUX_SINGLE)
        return res

    def _project(self, layer, hs: torch.Tensor) -> torch.Tensor:
        out = layer(hs)
        return F.silu(out) if self.kind == "flux-mistoline" else out

    def _sd3(self, x, t, context, hint) -> dict:
        tr = self.network
        b = x.shape[0]
        dtype = x.dtype
        xp = _pad_to_patch(x, 2)
        pe = tr.pos_embed
        hs = pe.proj(xp).flatten(2).transpose(1, 2)
        hs = hs + pe.cropped_pos_embed(xp.shape[-2], xp.shape[-1]).to(dtype)
        hs = hs + tr.pos_embed_input.proj(_pad_to_patch(hint, 2)).flatten(2).transpose(1, 2)
        temb = tr.time_text_embed.timestep_embedder(_timestep_embedding(t).to(dtype))
        pooled = torch.zeros((b, tr.config.pooled_projection_dim), device=x.device, dtype=dtype)
        temb = temb + tr.time_text_embed.text_embedder(pooled)
        txt = tr.context_embedder(context)
        blocks = len(tr.transformer_blocks)
        out = []
        for i, (block, proj) in enumerate(zip(tr.transformer_blocks, tr.controlnet_blocks, strict=True)):
            txt, hs = block(hidden_states=hs, encoder_hidden_states=txt, temb=temb)
            r = proj(hs)
            count = self.depth // blocks - (1 if i == blocks - 1 else 0)
            out.extend([r] * count)
        return {"output": out}


def _patchify(x: torch.Tensor, p: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p), channels then the patch's rows and columns."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def _cycle(outs: list, n: int) -> list:
    """The list repeated as a whole to n entries (XLabs: a, b, a, b, ...)."""
    return (outs * math.ceil(n / len(outs)))[:n]


def _stretch(outs: list, n: int) -> list:
    """Each entry repeated in place to n entries in all (InstantX: a, a, ..., b, b, ...)."""
    r = math.ceil(n / len(outs))
    return [o for o in outs for _ in range(r)][:n]


def merge_residuals(total: dict | None, res: dict, strength: float, dtype: torch.dtype) -> dict:
    """`res` x strength added to the residuals of the ControlNets before it (ComfyUI's chaining: previous +
    this one, index by index; a list longer than the other keeps its own entries)."""
    scaled: dict[str, list] = {}
    for key, outs in res.items():
        done: dict[int, torch.Tensor] = {}
        scaled[key] = [done.setdefault(id(o), (o * strength).to(dtype)) for o in outs]
    if total is None:
        return scaled
    out = {}
    for key in set(total) | set(scaled):
        a, b = total.get(key, []), scaled.get(key, [])
        out[key] = [a[i] + b[i] if i < len(a) and i < len(b) else (a[i] if i < len(a) else b[i])
                    for i in range(max(len(a), len(b)))]
    return out


# ------------------------------------------------------------------------------------------------ loading
def load_flow_controlnet(source, *, device="cpu", dtype: torch.dtype = torch.float32,
                         cache: bool = True) -> FlowControlNet:
    """A Flux / SD3 ControlNet from a `.safetensors` file (or a state dict). Weights keep their stored dtype and
    compute in `dtype` on `device` (FlowModel.load_controlnet passes the model's; the ControlNetLoader node the
    choice of flow_loading.resolve_flow_device_dtype, as for UNETLoader)."""
    from .sd_loading import read_state_dict

    if isinstance(source, dict):
        sd, name, key = source, "state dict", None
    else:
        p = Path(source).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"ControlNet not found: {os.fspath(source)}")
        p = p.resolve()
        sd, name = None, str(p)
        key = (name, p.stat().st_mtime_ns, str(device), str(dtype))
        if cache:
            with _CACHE_LOCK:
                if key in _CACHE:
                    return _CACHE[key]
        sd = read_state_dict(p)
    kind = flow_controlnet_kind(sd)
    if kind is None:
        raise UnsupportedControlNetError(f"{name}: not a Flux or SD3 ControlNet")
    dev, dt = torch.device(device), dtype
    if dt not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype!r}")
    try:
        if kind in ("flux-xlabs", "flux-mistoline"):
            net, hint_block = _xlabs(sd, name, kind), _pixel_encoder(sd, name, kind)
        elif kind == "flux-instantx":
            net, hint_block = _instantx(sd, name), None
        elif kind == "sd3":
            net, hint_block = _sd3(sd, name), None
        else:
            net, hint_block = _sd35(sd, name), None
    except (KeyError, ValueError, IndexError, RuntimeError) as e:
        if isinstance(e, UnsupportedControlNetError):
            raise
        raise UnsupportedControlNetError(f"{name}: cannot read this {KIND_TITLES[kind]} ({type(e).__name__}: "
                                         f"{e})") from None
    net = cast_on_use(net, None, dt).to(dev)
    if hint_block is not None:
        hint_block = cast_on_use(hint_block, None, dt).to(dev)
    handle = FlowControlNet(kind, net, hint_block, dt, name)
    if key is not None and cache:
        with _CACHE_LOCK:
            handle = _CACHE.setdefault(key, handle)
    return handle


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _quiet_build(cls, config: dict, state: dict, name: str):
    """build_module without diffusers' deprecation notice about its own FluxPosEmbed import."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*FluxPosEmbed.*", category=FutureWarning)
        return build_module(cls, config, state, name)


def _xlabs(sd: dict, name: str, kind: str = "flux-xlabs"):
    """XLabs' (or Mistoline's) BFL-layout transformer part onto a FluxControlNetModel, its output projections as
    controlnet_blocks / controlnet_single_blocks and pos_embed_input as controlnet_x_embedder."""
    from diffusers import FluxControlNetModel

    own = ("controlnet_blocks.", "single_controlnet_blocks.", "input_hint_block.", "input_cond_block.",
           "pos_embed_input.")
    body = {k: v for k, v in strip(sd, "").items() if not k.startswith(own)}
    cfg = flux_config({**body, "final_layer.linear.weight": torch.empty(64, 1, device="meta")})
    if cfg["num_single_layers"] and kind == "flux-xlabs":
        raise UnsupportedControlNetError(f"{name}: an XLabs ControlNet with single blocks is not a layout ComfyUI "
                                         "0.30 runs")
    km = {k: v for k, v in flux_keymap(cfg).items() if not k.startswith("final_layer.")}
    state = convert(body, km, name)
    sub = ".linear" if kind == "flux-mistoline" else ""
    for src, dst, n in (("controlnet_blocks", "controlnet_blocks", cfg["num_layers"]),
                        ("single_controlnet_blocks", "controlnet_single_blocks", cfg["num_single_layers"])):
        for i in range(n):
            for t in ("weight", "bias"):
                state[f"{dst}.{i}.{t}"] = sd[f"{src}.{i}{sub}.{t}"]
    for t in ("weight", "bias"):
        state[f"controlnet_x_embedder.{t}"] = sd[f"pos_embed_input.{t}"]
    config = {k: cfg[k] for k in ("patch_size", "in_channels", "num_layers", "num_single_layers", "attention_head_dim",
                                  "num_attention_heads", "joint_attention_dim", "pooled_projection_dim",
                                  "guidance_embeds", "axes_dims_rope")}
    return _quiet_build(FluxControlNetModel, config, state, name)


def _pixel_encoder(sd: dict, name: str, kind: str) -> torch.nn.Sequential:
    """XLabs' / Mistoline's hint encoder: convs (3 -> 16 channels, three of stride 2) with SiLU between."""
    prefix, spec = _MISTOLINE_CONVS if kind == "flux-mistoline" else _XLABS_CONVS
    layers: list[torch.nn.Module] = []
    for i, (k, stride) in enumerate(spec):
        w = sd[f"{prefix}{2 * i}.weight"]
        if tuple(w.shape[2:]) != (k, k):
            raise UnsupportedControlNetError(f"{name}: unusual hint encoder ({prefix}{2 * i} is {tuple(w.shape)})")
        conv = torch.nn.Conv2d(w.shape[1], w.shape[0], k, stride=stride, padding=k // 2, device="meta")
        conv.load_state_dict({"weight": w, "bias": sd[f"{prefix}{2 * i}.bias"]}, assign=True)
        layers.append(conv)
        if i < len(spec) - 1:
            layers.append(torch.nn.SiLU())
    if f"{prefix}{2 * len(spec)}.weight" in sd:
        raise UnsupportedControlNetError(f"{name}: unusual hint encoder (more than {len(spec)} convs)")
    return torch.nn.Sequential(*layers).eval().requires_grad_(False)


def _instantx(sd: dict, name: str):
    """An InstantX / Shakker (Union) Flux ControlNet: diffusers' own layout."""
    from diffusers import FluxControlNetModel

    hidden, in_ch = sd["x_embedder.weight"].shape
    cond_ch = int(sd["controlnet_x_embedder.weight"].shape[1])
    if cond_ch not in (in_ch, in_ch + 4):
        raise UnsupportedControlNetError(f"{name}: a Flux ControlNet with a {cond_ch // 4}-channel hint is not "
                                         "supported (16, or 17 for inpainting ControlNets)")
    heads = int(hidden) // 128
    cfg = {
        "patch_size": 1, "in_channels": int(in_ch), "attention_head_dim": 128, "num_attention_heads": heads,
        "num_layers": _count(sd, "transformer_blocks."), "num_single_layers": _count(sd, "single_transformer_blocks."),
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in sd, "axes_dims_rope": (16, 56, 56),
    }
    if "controlnet_mode_embedder.weight" in sd:
        cfg["num_mode"] = int(sd["controlnet_mode_embedder.weight"].shape[0])
    if cond_ch != in_ch:
        return _instantx_wide(cfg, sd, name, cond_ch)
    return _quiet_build(FluxControlNetModel, cfg, dict(sd), name)


def _instantx_wide(cfg: dict, sd: dict, name: str, cond_ch: int):
    """A FluxControlNetModel whose controlnet_x_embedder reads `cond_ch` features (the 17-channel inpainting
    ControlNets: diffusers sizes that layer from in_channels)."""
    from diffusers import FluxControlNetModel

    with torch.device("meta"):
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*FluxPosEmbed.*", category=FutureWarning)
            module = FluxControlNetModel.from_config(cfg)
    module.controlnet_x_embedder = torch.nn.Linear(cond_ch, module.inner_dim, device="meta")
    own = module.state_dict()
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"{len(missing)} weights missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}), {len(bad)} of another shape (e.g. {bad[:3]})")
    module.load_state_dict(dict(sd), strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _sd3(sd: dict, name: str):
    """An SD3 ControlNet in diffusers' layout (SD3ControlNetModel)."""
    from diffusers import SD3ControlNetModel

    w = sd["pos_embed.proj.weight"]
    hidden, in_ch, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    cond_ch = int(sd["pos_embed_input.proj.weight"].shape[1])
    if cond_ch not in (in_ch, in_ch + 1):
        raise UnsupportedControlNetError(f"{name}: an SD3 ControlNet with a {cond_ch}-channel hint is not supported "
                                         "(16, or 17 for inpainting ControlNets)")
    if "pos_embed.pos_embed" not in sd:
        raise UnsupportedControlNetError(f"{name}: an SD3 ControlNet without its position table is not supported")
    layers = _count(sd, "transformer_blocks.")
    cfg = {
        "sample_size": 128, "patch_size": patch, "in_channels": in_ch, "num_layers": layers,
        "attention_head_dim": 64, "num_attention_heads": hidden // 64,
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "caption_projection_dim": int(sd["context_embedder.weight"].shape[0]),
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "out_channels": in_ch, "pos_embed_max_size": round(int(sd["pos_embed.pos_embed"].shape[1]) ** 0.5),
        "dual_attention_layers": tuple(i for i in range(layers) if f"transformer_blocks.{i}.attn2.to_q.weight" in sd),
        "qk_norm": "rms_norm" if "transformer_blocks.0.attn.norm_q.weight" in sd else None,
        "extra_conditioning_channels": cond_ch - in_ch,
    }
    return build_module(SD3ControlNetModel, cfg, dict(sd), name)


def _sd35(sd: dict, name: str):
    """Stability's SD3.5 ControlNet (sd3.5_large_controlnet_blur / canny / depth)."""
    from .flow_control_sd35 import SD35ControlNet

    return SD35ControlNet.from_state_dict(sd, name, UnsupportedControlNetError)


def _count(sd, prefix: str) -> int:
    from .flow_keys import _count as count

    return count(sd, prefix)


def prepared_hint(apply, net: FlowControlNet, batch: int, latent_hw: tuple[int, int], batched_number: int,
                  device, vae) -> torch.Tensor:
    """The network's hint for one ControlApply at a latent size, as ComfyUI prepares it: the IMAGE centre-cropped
    and resized (nearest-exact) to the latent's pixel size (x 8), VAE-encoded and scaled when the ControlNet takes
    a latent, cast to its dtype, then spread over the batch. Kept on the ControlApply per size and batch."""
    from .control import broadcast_batch, center_upscale

    vae = apply.vae if apply.vae is not None else vae
    key = ("flow", latent_hw, batch, batched_number, str(device), id(vae), id(net),
           id(getattr(apply, "extra_concat", None)))
    cached = getattr(apply, "_flow_hint_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    h, w = latent_hw
    pixels = center_upscale(apply.image.movedim(-1, 1).float(), h * 8, w * 8)
    hint = net.hint_latent(pixels, vae)
    if net.concat_mask:  # inpainting ControlNets: the mask (ones unless ControlNetInpaintingAliMamaApply gave one)
        mask = getattr(apply, "extra_concat", None)
        mask = torch.ones((1, 1, 1, 1)) if mask is None else mask.float()
        mask = center_upscale(mask.to(hint.device), hint.shape[-2], hint.shape[-1])
        mask = torch.cat([mask] * math.ceil(hint.shape[0] / mask.shape[0]))[: hint.shape[0]]
        hint = torch.cat([hint, mask], dim=1)
    hint = hint.to(device=device, dtype=net.dtype)
    if hint.shape[0] != batch:
        hint = broadcast_batch(hint, batch, batched_number)
    apply._flow_hint_cache = (key, hint)
    return hint


def control_residuals(model, active: list, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                      extras: dict, batched_number: int) -> dict:
    """The summed residuals of a chain's active applications on a Flux / SD3 `model` (a FlowModel), each x its
    strength, in application order."""
    total = None
    for c in active:
        net = c.control_net
        if not isinstance(net, FlowControlNet) or net.family != model.family:
            what = net.title if isinstance(net, FlowControlNet) else f"{getattr(net, 'family_title', 'SD')} ControlNet"
            if getattr(net, "is_t2i_adapter", False):
                what = net.family_title
            raise UnsupportedControlNetError(f"a {what} cannot guide this {model.title} model")
        if net.context_dim is not None and net.context_dim != context.shape[-1]:
            raise UnsupportedControlNetError(f"{net.title} takes text embeddings of width {net.context_dim}; this "
                                             f"{model.title} conditioning has {context.shape[-1]}")
        hint = prepared_hint(c, net, x.shape[0], tuple(x.shape[-2:]), batched_number, x.device, model.vae)
        if net.kind == "sd35":  # it embeds the image with the main model's own patch embedding
            extras = {**extras, "x_embedder": model.network.transformer.pos_embed.proj}
        res = net.residuals(x, timestep, context, hint, extras)
        total = merge_residuals(total, res, c.strength, x.dtype)
    return total


__all__ = ["FlowControlNet", "UnsupportedControlNetError", "control_residuals", "flow_controlnet_kind",
           "is_flow_controlnet_file", "load_flow_controlnet", "merge_residuals", "prepared_hint"]
