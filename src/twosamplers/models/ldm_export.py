"""A loaded model back to a single-file checkpoint in the original (LDM) layout, as ComfyUI's CheckpointSave
writes one: `model.diffusion_model.*` (UNet), the text encoders under their family's prefix
(`cond_stage_model.transformer.*` for SD1.x, `cond_stage_model.model.*` for SD2.x, `conditioner.embedders.0/1.*`
for SDXL), `first_stage_model.*` (VAE). Weights carry their patches (merges, LoRAs) as they are when sampling.
Such a file loads again here (`load_sd`) and in ComfyUI or A1111.

The renaming is the inverse of the loader's (diffusers' LDM conversion): UNet names come from
`lora_keys.ldm_unet_names` (each one checked by sending it through diffusers' own conversion), OpenCLIP's q/k/v
projections are fused back into `in_proj_*`, the VAE's attention linears become 1x1 convolutions again.
"""

from __future__ import annotations

import torch

from .merge import effective_state, unet_ldm_names, weight_stack

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = {"sd1": ["cond_stage_model.transformer."], "sd2": ["cond_stage_model.model."],
                 "sdxl": ["conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."]}
_RESNET_VAE = {"conv_shortcut": "nin_shortcut"}
_ATTN_VAE = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


class ExportError(ValueError):
    """A model this module cannot write as an LDM checkpoint."""


def unet_state(model) -> dict[str, torch.Tensor]:
    net, _ = weight_stack(model)
    names = unet_ldm_names(net)
    state = effective_state(model, "unet")
    missing = [k for k in state if k not in names]
    if missing:
        raise ExportError(f"cannot name {len(missing)} UNet weights in the LDM layout (e.g. {missing[:3]})")
    return {UNET_PREFIX + names[k]: v for k, v in state.items()}


def _canonical(name: str) -> str:
    return name if name.startswith(("text_model.", "text_projection")) else "text_model." + name


def _open_clip(state: dict[str, torch.Tensor], prefix: str, layers: int) -> dict[str, torch.Tensor]:
    sd = {_canonical(k): v for k, v in state.items()}
    emb = "text_model.embeddings."
    out = {prefix + "token_embedding.weight": sd[emb + "token_embedding.weight"],
           prefix + "positional_embedding": sd[emb + "position_embedding.weight"],
           prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"]}
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].t()
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for t in ("weight", "bias"):
            out[dst + f"attn.in_proj_{t}"] = torch.cat([sd[src + f"self_attn.{q}_proj.{t}"] for q in "qkv"])
            for a, b in names.items():
                out[dst + f"{b}.{t}"] = sd[src + f"{a}.{t}"]
    return out


def clip_state(clip) -> dict[str, torch.Tensor]:
    net, _ = weight_stack(clip)
    prefixes = CLIP_PREFIXES.get(getattr(net, "family", None))
    if prefixes is None or len(prefixes) != len(net.text_encoders):
        raise ExportError(f"cannot save the text encoders of a {getattr(net, 'family', '?')} model")
    out = {}
    for i, (enc, prefix) in enumerate(zip(net.text_encoders, prefixes, strict=True)):
        state = {k: v for k, v in effective_state(clip, f"clip{i}").items() if not k.endswith("position_ids")}
        if prefix.endswith(".model."):
            out.update(_open_clip(state, prefix, int(enc.model.config.num_hidden_layers)))
        else:
            out.update({prefix + _canonical(k): v for k, v in state.items()})
    return out


def vae_state(vae_module) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL weights -> LDM `first_stage_model.*`."""
    levels = len(vae_module.config.block_out_channels)
    out = {}
    for k, v in vae_module.state_dict().items():
        side, part, *rest = k.split(".")
        if part in ("down_blocks", "up_blocks"):
            i = int(rest[0]) if part == "down_blocks" else levels - 1 - int(rest[0])
            where = "down" if part == "down_blocks" else "up"
            if rest[1] == "resnets":
                name = f"{side}.{where}.{i}.block.{rest[2]}." + ".".join(rest[3:])
            else:  # downsamplers.0.conv / upsamplers.0.conv
                name = f"{side}.{where}.{i}.{'downsample' if where == 'down' else 'upsample'}.conv." + \
                    ".".join(rest[4:])
        elif part == "mid_block":
            if rest[0] == "resnets":
                name = f"{side}.mid.block_{int(rest[1]) + 1}." + ".".join(rest[2:])
            else:
                tail = ".".join(rest[2:])
                for a, b in _ATTN_VAE.items():
                    if tail.startswith(a + "."):
                        tail = b + tail[len(a):]
                name = f"{side}.mid.attn_1.{tail}"
                if v.ndim == 2:
                    v = v[:, :, None, None]
        elif part == "conv_norm_out":
            name = f"{side}.norm_out." + ".".join(rest)
        else:
            name = k
        for a, b in _RESNET_VAE.items():
            name = name.replace(a, b)
        out[VAE_PREFIX + name] = v
    return out


def check_exportable(model, clip) -> None:
    """What `checkpoint_state` would refuse, found without computing any weight (families, UNet names)."""
    net, _ = weight_stack(model)
    clip_net, _ = weight_stack(clip)
    if getattr(clip_net, "family", None) != getattr(net, "family", None):
        raise ExportError(f"the CLIP ({getattr(clip_net, 'family', '?')}) is not of the MODEL's family "
                          f"({getattr(net, 'family', '?')})")
    prefixes = CLIP_PREFIXES.get(getattr(clip_net, "family", None))
    if prefixes is None or len(prefixes) != len(clip_net.text_encoders):
        raise ExportError(f"cannot save the text encoders of a {getattr(clip_net, 'family', '?')} model")
    names = unet_ldm_names(net)
    missing = [k for k in net.unet.state_dict() if k not in names]
    if missing:
        raise ExportError(f"cannot name {len(missing)} UNet weights in the LDM layout (e.g. {missing[:3]})")


def checkpoint_state(model, clip, vae_module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the checkpoint ComfyUI's CheckpointSave writes for these MODEL, CLIP and VAE."""
    check_exportable(model, clip)
    net, _ = weight_stack(model)
    tensors = {**unet_state(model), **clip_state(clip), **vae_state(vae_module)}
    meta: dict[str, str] = {}
    if net.family == "sdxl":
        meta.update({"modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.sai_model_spec": "1.0.0",
                     "modelspec.implementation": "sgm"})
    prediction = net.model_sampling.prediction  # the checkpoint's own type, not a sampling patch's (as ComfyUI)
    if prediction == "v":
        meta["modelspec.predict_key"] = "v"
        tensors["v_pred"] = torch.tensor([])
        if getattr(model.model_sampling, "zsnr", False):
            tensors["ztsnr"] = torch.tensor([])
    elif prediction == "eps":
        meta["modelspec.predict_key"] = "epsilon"
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, meta


__all__ = ["ExportError", "check_exportable", "checkpoint_state", "clip_state", "unet_state", "vae_state"]
