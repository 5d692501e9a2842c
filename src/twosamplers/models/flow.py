"""Flux.1 and SD3/SD3.5 as twosamplers models: a flow-matching transformer (ComfyUI's CONST model type) plus,
when loaded with them, its text encoders and its 16-channel VAE.

`FlowModel` is the engine's protocol (`models/base.py`): `apply_model` calls the transformer the way ComfyUI's
Flux / SD3 model classes do (the model input is x itself, timestep = model_sampling.timestep(sigma), the pooled
text embedding as `y`, Flux dev's guidance embedding fed from the conditioning's "guidance", default 3.5,
denoised = x - v * sigma), `extra_conds` prepares those per-entry inputs, and `with_model_sampling` is what
ComfyUI's ModelSamplingFlux / ModelSamplingSD3 nodes do (a model over the same weights with another sigma
schedule). A transformer loaded alone (UNETLoader) has no text encoders or VAE; a CLIP or VAE loaded alone is a
`FlowTextEncoders` / `FlowVAE` (`flow_text.py`, `flow_vae.py`), each usable where ComfyUI takes a CLIP / VAE.

Latent formats: Flux scale 0.3611, shift 0.1159; SD3 scale 1.5305, shift 0.0609; 16 channels at 1/8.
Default sigma schedules: Flux dev ModelSamplingFlux(shift 1.15), Flux schnell ModelSamplingFlow(shift 1,
multiplier 1), SD3/SD3.5 ModelSamplingFlow(shift 3, multiplier 1000), as ComfyUI's model configs.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from ..engine.schedules import ModelSamplingFlow, ModelSamplingFlux
from .base import DiffusionModel, LatentFormat
from .control import active_controls
from .flow_keys import (
    convert,
    flux_config,
    flux_keymap,
    flux_variant,
    sd3_config,
    sd3_keymap,
    sd3_variant,
    strip,
)
from .flow_nets import FluxNetwork, SD3Network, build_module, cast_on_use

FLUX_LATENT = LatentFormat(scale_factor=0.3611, channels=16, downscale=8, shift_factor=0.1159)
SD3_LATENT = LatentFormat(scale_factor=1.5305, channels=16, downscale=8, shift_factor=0.0609)
LATENT_FORMATS = {"flux": FLUX_LATENT, "sd3": SD3_LATENT}
FLUX_DEFAULT_GUIDANCE = 3.5
VARIANT_NAMES = {"flux-dev": "Flux.1 dev", "flux-schnell": "Flux.1 schnell", "sd3.5-large": "SD3.5 large",
                 "sd3.5-medium": "SD3.5 medium", "sd3-medium": "SD3 medium"}
# the conditioning options these models read; anything else (SDXL's sizes, ...) is ignored as ComfyUI does
_MODEL_INPUTS = ("pooled_output", "guidance")


def default_model_sampling(variant: str):
    """ComfyUI's model-config default for each variant."""
    if variant == "flux-dev":
        return ModelSamplingFlux(shift=1.15)
    if variant == "flux-schnell":
        return ModelSamplingFlow(shift=1.0, multiplier=1.0)
    return ModelSamplingFlow(shift=3.0, multiplier=1000)


def build_transformer(sd: dict[str, torch.Tensor], family: str, *, storage_dtype: torch.dtype | None,
                      compute_dtype: torch.dtype, device: torch.device, what: str = "transformer"):
    """(network, variant) from a prefix-stripped state dict of the given family. Weights are stored in
    `storage_dtype` (None: each in the dtype the file has it in; computing from them gives what ComfyUI gives from
    its one widened copy) and computed in `compute_dtype`."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    if family == "flux":
        cfg = flux_config(sd)
        km, cls, variant = flux_keymap(cfg), FluxTransformer2DModel, flux_variant(cfg)
    else:
        cfg = sd3_config(sd)
        km, cls, variant = sd3_keymap(cfg), SD3Transformer2DModel, sd3_variant(cfg)
        cfg = {**cfg, "dual_attention_layers": list(cfg["dual_attention_layers"])}
    state = convert(sd, km, what)
    if storage_dtype is not None:  # UNETLoader's fp8 weight dtypes: every tensor stored so (as ComfyUI does)
        state = {k: v.to(storage_dtype) for k, v in state.items()}
    module = build_module(cls, cfg, state, what)
    module = cast_on_use(module, storage_dtype, compute_dtype).to(device)
    net = FluxNetwork(module, compute_dtype) if family == "flux" else SD3Network(module, compute_dtype)
    net.storage_dtype = storage_dtype or stored_dtype(state)
    net.key_map = km
    return net.eval().requires_grad_(False), variant


def stored_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype most of a state dict's floating-point elements are stored in."""
    count: dict[torch.dtype, int] = {}
    for v in state.values():
        if v.is_floating_point():
            count[v.dtype] = count.get(v.dtype, 0) + v.numel()
    return max(count, key=count.get) if count else torch.float32


class FlowModel(DiffusionModel):
    """A Flux or SD3 transformer with (optionally) its text encoders and VAE, as a twosamplers model."""

    repeat_context = False  # ComfyUI batches only conditionings of equal length for these (CONDRegular)

    def __init__(self, network, family: str, variant: str, *, model_sampling=None, text=None, vae=None,
                 source: str = "") -> None:
        if family not in LATENT_FORMATS:
            raise ValueError(f"family must be 'flux' or 'sd3', got {family!r}")
        self.network = network
        self.family = family
        self.variant = variant
        self.model_sampling = model_sampling if model_sampling is not None else default_model_sampling(variant)
        self.latent_format = LATENT_FORMATS[family]
        self.text = text
        self.vae = vae
        self.source = source
        self.clip_skip: int | None = None  # the default CLIPSetLastLayer value of encode_prompt
        self._param = next(network.parameters())

    def __repr__(self) -> str:
        parts = ["transformer"] + (["text encoders"] if self.text is not None else []) + (
            ["VAE"] if self.vae is not None else [])
        return (f"FlowModel({VARIANT_NAMES.get(self.variant, self.variant)}, {self.model_sampling!r}, "
                f"{' + '.join(parts)}, device={self.device}, dtype={self.dtype}, source={self.source!r})")

    @property
    def title(self) -> str:
        return VARIANT_NAMES.get(self.variant, self.variant)

    @property
    def device(self) -> torch.device:
        return self._param.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.compute_dtype

    def estimate_memory(self, width: int, height: int, batch: int = 1) -> int:
        """Peak bytes of rendering `batch` images of width x height (job/memory.py): the weights as stored, the
        transformer's working set for a cond + uncond batch (every token of the joint sequence, ~16 hidden-wide
        tensors; attention runs in memory-efficient kernels, no tokens^2 term), and the VAE decoder's feature
        maps at full resolution."""
        seen, weights = set(), 0
        modules = [self.network] + ([m for _, m in self.text.lora_parts()] if self.text is not None else []) + (
            [self.vae.vae] if self.vae is not None else [])
        for m in modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    weights += p.numel() * p.element_size()
        tr = self.network.transformer.config
        hidden = tr.num_attention_heads * tr.attention_head_dim
        tokens = -(-height // 16) * -(-width // 16) + (256 if self.family == "flux" else 154)
        item = torch.empty((), dtype=self.dtype).element_size()
        act = 2 * batch * tokens * hidden * 16 * item
        vae = width * height * batch * 128 * 4 * 4
        return weights + act + vae

    # ------------------------------------------------------------------------------------------ sampling
    def with_model_sampling(self, model_sampling) -> FlowModel:
        """This model over the same weights with another sigma schedule (ComfyUI's ModelSampling* nodes)."""
        out = copy.copy(self)
        out.model_sampling = model_sampling
        return out

    def extra_conds(self, extras: dict, *, latent_image: torch.Tensor, denoise_mask: torch.Tensor | None,
                    prompt_type: str = "", seed: int | None = None) -> dict:
        """The entry's model inputs: the pooled text embedding and, for Flux dev, the guidance as a (1,) tensor
        (3.5 when the conditioning does not set one, as ComfyUI). Other options are dropped, as ComfyUI
        ignores them for these models."""
        out = {k: v for k, v in extras.items() if k in _MODEL_INPUTS or k == "control"}
        if self.family == "flux" and self.network.guidance_embed:
            g = out.get("guidance", FLUX_DEFAULT_GUIDANCE)
            if g is None:
                out.pop("guidance", None)
            elif not isinstance(g, torch.Tensor):
                out["guidance"] = torch.tensor([float(g)], dtype=torch.float32)
        else:
            out.pop("guidance", None)
        if self.family == "flux":  # Fill / Canny / Depth: extra input channels (models/flow_concat.py)
            from .flow_concat import extra_channels, flux_concat

            emb = self.network.transformer.x_embedder
            concat = flux_concat(extras, latent_image=latent_image, denoise_mask=denoise_mask,
                                 process_in=self.latent_format.process_in,
                                 channels_in=extra_channels(emb.weight.shape[-1], 1)[0],
                                 channels_out=latent_image.shape[1])
            if concat is not None:
                out["c_concat"] = concat
        return out

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None, **extras):
        if context is None:
            raise ValueError(f"{self.title} needs text conditioning (context); got None")
        control = extras.pop("control", None)
        batched_number = extras.pop("batched_number", 1)
        if context.shape[-1] != self.network.context_dim:
            raise ValueError(f"{self.title} takes text embeddings of width {self.network.context_dim}, got "
                             f"{context.shape[-1]} (a conditioning made by another model's text encoder?)")
        ms = self.model_sampling
        dtype = self.dtype
        xc = ms.calculate_input(sigma, x)
        concat = extras.get("c_concat")
        if concat is not None:
            xc = torch.cat([xc, concat.to(device=xc.device, dtype=xc.dtype)], dim=1)
        xc = xc.to(dtype)
        t = ms.timestep(sigma).float()
        y = extras.get("pooled_output")
        if y is None and self.family == "sd3":
            raise ValueError("SD3 needs 'pooled_output' in the conditioning (encode the prompt with the SD3 text "
                             "encoders)")
        if y is not None:
            y = y.to(device=x.device, dtype=dtype)
        context = context.to(device=x.device, dtype=dtype)
        residuals = None
        if control is not None:  # the ControlNets whose step window holds this sigma (ComfyUI tests the first row's)
            active = active_controls(control, float(sigma.reshape(-1)[0]), ms)
            if active:
                from .flow_control import control_residuals

                residuals = control_residuals(self, active, xc, t, context, {**extras, "pooled_output": y},
                                              batched_number)
        out = self.network(xc, t, context, y=y, guidance=extras.get("guidance"), control=residuals)
        return ms.calculate_denoised(sigma, out.float(), x)

    def load_controlnet(self, path, *, allow_pickle: bool = False):
        """A Flux / SD3 ControlNet file loaded for this model (its device and compute dtype); one of the other
        family, an SD ControlNet or a layout not run here is refused with one line."""
        from .flow_control import flow_controlnet_kind, header_keys, load_flow_controlnet
        from .sd_loading import UnsupportedModelError

        p = Path(path).expanduser()
        if not p.is_file() or p.suffix.lower() not in (".safetensors", ".sft"):
            raise UnsupportedModelError(f"{os.fspath(path)}: {self.title} ControlNets are read from .safetensors "
                                        "files (XLabs, Mistoline, InstantX / Union, SD3 and SD3.5 layouts)")
        kind = flow_controlnet_kind(header_keys(p))
        if kind is None:
            raise UnsupportedModelError(f"{os.fspath(path)}: not a Flux or SD3 ControlNet (a Stable Diffusion one?); "
                                        f"it cannot guide this {self.title} model")
        family = "flux" if kind.startswith("flux") else "sd3"
        if family != self.family:
            fam = "an SD3" if family == "sd3" else "a Flux"
            raise UnsupportedModelError(f"{os.fspath(path)} is {fam} ControlNet; it cannot guide this {self.title} "
                                        "model")
        return load_flow_controlnet(p, device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------------------------------ LoRAs
    def lora_modules(self) -> dict[str, torch.nn.Module]:
        """The parts a LoRA patches (models/lora.py): the transformer, then the text encoders."""
        parts = {"unet": self.network.transformer}
        for i, (_, module) in enumerate(self.text.lora_parts() if self.text is not None else []):
            parts[f"clip{i}"] = module
        return parts

    def make_lora_key_map(self) -> dict:
        from .flow_lora import text_keys, transformer_keys

        keys = transformer_keys(self.network, self.family)
        if self.text is not None:
            keys.update(text_keys([("t5xxl" if k == "t5" else k, m) for k, m in self.text.lora_parts()],
                                  self.family))
        return keys

    def convert_lora_keys(self, sd: dict) -> dict:
        from .flow_lora import convert_xlabs, is_xlabs

        return convert_xlabs(sd) if self.family == "flux" and is_xlabs(sd) else sd

    def with_loras(self, loras, *, allow_pickle: bool = False):
        """This model with LoRAs ([Lora(path, strength_model, strength_clip), ...]): a `LoraModel` over the same
        weights, patched only while it samples (transformer) or encodes a prompt (text encoders)."""
        from .lora import with_loras

        return with_loras(self, loras, allow_pickle=allow_pickle)

    # ------------------------------------------------------------------------------------------ text, VAE
    def encode_prompt(self, text: str, **options) -> list:
        if self.text is None:
            raise NotImplementedError(f"this {self.title} model was loaded without text encoders; load them with "
                                      "DualCLIPLoader / TripleCLIPLoader (or use an all-in-one checkpoint)")
        if self.clip_skip is not None:
            options.setdefault("clip_skip", self.clip_skip)
        return self.text.encode_prompt(text, **options)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            raise NotImplementedError(f"this {self.title} model was loaded without a VAE; load one with VAELoader")
        return self.vae.encode_image(pixels)

    def decode_latent(self, samples: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            raise NotImplementedError(f"this {self.title} model was loaded without a VAE; load one with VAELoader")
        return self.vae.decode_latent(samples)


def load_transformer_state(sd: dict[str, torch.Tensor], prefix: str, family: str, *, device, compute_dtype,
                           storage_dtype=None, source: str = "") -> FlowModel:
    """A `FlowModel` (transformer only) from a checkpoint's tensors under `prefix`."""
    net, variant = build_transformer(strip(sd, prefix), family, storage_dtype=storage_dtype,
                                     compute_dtype=compute_dtype, device=device, what=source or "transformer")
    return FlowModel(net, family, variant, source=source)
