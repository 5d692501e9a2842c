"""Model merging with ComfyUI's numbers: merges are weight patches applied while a model samples, like LoRAs.

What ComfyUI does (ModelMergeSimple / Blocks / Add / Subtract, CLIPMergeSimple / Add / Subtract), and so what
this module does:
- A merge adds, for every weight of model2 that model1 also has, one patch (strength, model2's weight,
  strength_model) to model1's list for that weight. When the weight is computed (at sampling time, in float32,
  in the order the patches were added, LoRAs included): W <- W * strength_model (when it is not 1), then
  W <- W + strength * W2 where W2 is model2's own weight with model2's own patches applied (in float32, not
  rounded). A W2 of another shape is skipped with a warning (after the multiplication). The sum is cast back to
  the weight's dtype once.
- ModelMergeSimple(ratio): strength 1 - ratio, strength_model ratio: W = ratio * W1 + (1 - ratio) * W2.
  ModelMergeBlocks: the same with a ratio per UNet block, chosen by the longest of "input", "middle", "out"
  that starts the weight's LDM name (input_blocks.*, middle_block.*, output_blocks.* and out.*; other weights
  such as time_embed take the first ratio). ModelMergeSD1 / SDXL: the same with one ratio per LDM block prefix.
  ModelMergeAdd: W1 + W2 (1, 1). ModelMergeSubtract(m): m * W1 - m * W2 (-m, m).
- CLIP merges do the same on the text encoders (position ids and logit scale excepted).

Models keep one network each: a merged MODEL is a `LoraModel` whose stack holds a `MergePatches` (the same
machinery patches LoRAs), so model1's network is patched while it samples and restored after. Model2 is kept
by reference; its weights are read when model1 is patched.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .lora import LoraModel
from .lora_keys import UNET_PART, Target, ldm_unet_names
from .model_sampling import network_model
from .packed_conv import unpack as unpack_convolutions

MERGE_CLIP_SKIP = (".position_ids", ".logit_scale")


# --------------------------------------------------------------------------------------- weights of a model
def weight_stack(model) -> tuple[object, tuple]:
    """(the network model holding the weights, the weight-patch stack applied to them) of a MODEL or CLIP:
    the stack is a LoraModel's [(patch file, strength_model, strength_clip), ...], empty for a bare model."""
    stack: tuple = ()
    inner = model
    while True:
        if isinstance(inner, LoraModel):
            stack = tuple(inner.loras) + stack
            inner = inner.base
            continue
        nxt = inner.__dict__.get("base", None) or inner.__dict__.get("model", None) if hasattr(inner, "__dict__") \
            else None
        if nxt is None:
            break
        inner = nxt
    net = network_model(inner) if network_model(inner) is not None else inner
    if not hasattr(net, "unet") or not hasattr(net, "text_encoders"):
        raise TypeError(f"merging needs Stable Diffusion models (a checkpoint's MODEL / CLIP); got "
                        f"{type(net).__name__}")
    return net, stack


def modules_of(net) -> dict[str, torch.nn.Module]:
    """{part: module}: "unet" and "clip0", "clip1", ... (the text encoders), as LoRA targets name them."""
    parts = {UNET_PART: net.unet}
    for i, enc in enumerate(net.text_encoders):
        parts[f"clip{i}"] = enc.model
    return parts


def target_of(part: str, name: str) -> Target:
    """The Target of a state-dict parameter name (".weight" -> the module, ".bias" -> module#bias)."""
    if name.endswith(".weight"):
        return Target(part, name[: -len(".weight")])
    if name.endswith(".bias"):
        return Target(part, name[: -len(".bias")] + "#bias")
    return Target(part, name + "#raw")


def param_name(target: Target) -> str:
    if target.param.endswith("#bias"):
        return target.param[: -len("#bias")] + ".bias"
    if target.param.endswith("#raw"):
        return target.param[: -len("#raw")]
    return target.param + ".weight"


def _stack_patches(stack: tuple, target: Target) -> list[tuple[object, float]]:
    out = []
    for f, s_model, s_clip in stack:
        s = s_model if target.part == UNET_PART else s_clip
        ad = f.patches.get(target)
        if ad is not None and (s != 0.0 or getattr(ad, "always", False)):
            out.append((ad, s))
    return out


@torch.no_grad()
def effective_weight(net, stack: tuple, target: Target, params: dict | None = None) -> torch.Tensor:
    """A weight of `net` with `stack`'s patches applied, in float32 (not rounded back), as ComfyUI computes a
    patched model's weight for use inside another patch."""
    module = modules_of(net)[target.part]
    unpack_convolutions(module)  # the ordinary weights, not a packed pass's placeholders
    if params is None:
        params = dict(module.named_parameters())
    w = params[param_name(target)].detach().to(torch.float32, copy=True)
    for ad, s in _stack_patches(stack, target):
        w = ad.add_to(w, s, target)
    return w


def effective_state(model, part: str) -> dict[str, torch.Tensor]:
    """Every parameter of one part of a MODEL / CLIP with its patches, cast back to the parameter's dtype (what
    ComfyUI writes when it saves a patched model)."""
    net, stack = weight_stack(model)
    module = modules_of(net)[part]
    unpack_convolutions(module)
    params = dict(module.named_parameters())
    out = {}
    for name, p in module.state_dict().items():
        if name in params and _stack_patches(stack, target_of(part, name)):
            out[name] = effective_weight(net, stack, target_of(part, name), params).to(p.dtype)
        else:
            out[name] = p.detach()
    return out


# --------------------------------------------------------------------------------------- the patches
@dataclass(eq=False)
class MergeAdapter:
    """One weight's merge patch: W <- W * strength_model; W <- W + strength * (model2's weight)."""

    source: object  # (network model, stack) of model2
    target: Target
    strength: float
    strength_model: float
    warned: set = field(default_factory=set)
    kind: str = "merge"
    reads_weights: bool = True  # models.lora._apply then works on a copy (model2 may share model1's network)
    always: bool = True  # applied even when the stack strength is 0 (its strengths are its own)

    def add_to(self, w: torch.Tensor, strength: float = 1.0, target: Target | None = None) -> torch.Tensor:
        if self.strength_model != 1.0:
            w *= self.strength_model
        if self.strength != 0.0:
            net, stack = self.source
            src = effective_weight(net, stack, self.target).to(w.device)
            if src.shape != w.shape:
                if self.target not in self.warned:
                    self.warned.add(self.target)
                    warnings.warn(f"merge: {param_name(self.target)} has shape {tuple(src.shape)} in model2 and "
                                  f"{tuple(w.shape)} in model1; not merged (as ComfyUI does)", stacklevel=2)
            else:
                w += self.strength * src
        return w


@dataclass(eq=False)
class MergePatches:
    """A merge as one entry of a LoraModel stack: per target weight, its MergeAdapter."""

    name: str
    patches: dict[Target, MergeAdapter]
    unmatched: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:  # LoraModel's repr names stack entries by file name
        return Path(self.name)


_LDM_NAMES: dict[int, tuple] = {}  # id(unet) -> (weakref(unet), names)
_LDM_LOCK = threading.Lock()


def unet_ldm_names(net) -> dict[str, str]:
    """diffusers UNet parameter name -> its LDM name ("input_blocks.1.1.proj_in.weight") for a model's UNet."""
    return ldm_names_of(net.unet)


def ldm_names_of(unet) -> dict[str, str]:
    """diffusers UNet parameter name -> its LDM name, cached per UNet (the class embedding of unCLIP UNets, which
    the LoRA table leaves out, as label_emb.0.*)."""
    with _LDM_LOCK:
        hit = _LDM_NAMES.get(id(unet))
    if hit is not None and hit[0]() is unet:
        return hit[1]
    names = dict(ldm_unet_names(unet))
    for k in unet.state_dict():
        if k.startswith("class_embedding.linear_"):
            _, lin, t = k.split(".")
            names[k] = f"label_emb.0.{0 if lin == 'linear_1' else 2}.{t}"
    with _LDM_LOCK:
        _LDM_NAMES[id(unet)] = (weakref.ref(unet), names)
    return names


def _check_families(net1, net2, what: str) -> None:
    f1, f2 = getattr(net1, "family", None), getattr(net2, "family", None)
    if f1 != f2:
        raise ValueError(f"{what}: cannot merge a {f2} model into a {f1} model (ComfyUI would merge only the "
                         "weights that happen to have the same names and shapes)")


def merge(model1, model2, strengths: Callable[[str], tuple[float, float]], *, part: str = "unet", name: str = "merge"):
    """model1 with model2 merged in: strengths(LDM or parameter name) -> (strength, strength_model) per weight.
    part "unet" merges MODELs, "clip" the text encoders of CLIPs."""
    net1, _ = weight_stack(model1)
    net2, stack2 = weight_stack(model2)
    _check_families(net1, net2, name)
    parts1, parts2 = modules_of(net1), modules_of(net2)
    chosen = [UNET_PART] if part == "unet" else [p for p in parts1 if p != UNET_PART]
    ldm = unet_ldm_names(net1) if part == "unet" else {}
    patches: dict[Target, MergeAdapter] = {}
    unmatched: list[str] = []
    for p in chosen:
        if p not in parts2:
            continue
        own = dict(parts1[p].named_parameters())
        for pname, _ in parts2[p].named_parameters():
            if part != "unet" and pname.endswith(MERGE_CLIP_SKIP):
                continue
            if pname not in own:
                unmatched.append(pname)
                continue
            strength, strength_model = strengths(ldm.get(pname, pname) if part == "unet" else pname)
            t = target_of(p, pname)
            patches[t] = MergeAdapter((net2, stack2), t, float(strength), float(strength_model))
    return LoraModel(model1, [(MergePatches(name, patches, unmatched), 1.0, 1.0)])


def block_ratio(ratios: dict[str, float]) -> Callable[[str], float]:
    """ComfyUI's block rule: the ratio of the longest key that starts the LDM name; else the first ratio."""
    default = next(iter(ratios.values()))

    def ratio(ldm_name: str) -> float:
        best, size = default, 0
        for prefix, r in ratios.items():
            if ldm_name.startswith(prefix) and len(prefix) > size:
                best, size = r, len(prefix)
        return best

    return ratio


__all__ = ["MergeAdapter", "MergePatches", "block_ratio", "effective_state", "effective_weight", "merge",
           "modules_of", "target_of", "unet_ldm_names", "weight_stack"]
