"""Which LoRA keys address which weights of a Flux / SD3 model: the key formats ComfyUI 0.30 accepts for these
models, mapped onto the diffusers modules we run (models/lora.py does the patching, with ComfyUI's formulas).

Transformer ("unet" part):
- the checkpoint's own layout (BFL for Flux, Stability's MMDiT for SD3), as ComfyUI names it
  (`diffusion_model.double_blocks.0.img_attn.qkv`), as kohya names it (`lora_unet_double_blocks_0_img_attn_qkv`),
  and Flux's `...single_blocks.N.linear1_qkv` (the q/k/v rows of linear1); a patch of a fused weight is formed
  at the fused shape and split over the diffusers parameters (lora_keys.Target pieces);
- diffusers' layout under the prefixes ComfyUI knows: `transformer.` (diffusers / SimpleTuner), `lycoris_`
  (SimpleTuner LyCORIS), `lora_transformer_` (OneTrainer), no prefix (DiffSynth) for Flux; `transformer.`,
  `base_model.model.`, `lora_transformer_`, `lycoris_` for SD3;
- XLabs' Flux format (`double_blocks.N.processor.qkv_lora1.down.weight`, ...; `convert_xlabs`), which ComfyUI
  0.30 converts only for files covering all 19 double and 38 single blocks (USO); we convert any such file.
Text encoders ("clip<i>" parts, in the order clip_l, [clip_g,] t5xxl): kohya's `lora_te1_` (CLIP-L), `lora_te2_`
(CLIP-G), OneTrainer's T5 names (`lora_te2_`/`lora_te3_` for Flux, `lora_te3_` for SD3), diffusers'
`text_encoder.` / `text_encoder_2.` and ComfyUI's `text_encoders.clip_l.transformer.` names.
"""

from __future__ import annotations

import torch

from .lora_keys import UNET_PART, Target, _canonical_clip_name

_XLABS = ((".processor.qkv_lora1.", ".img_attn.qkv."), (".processor.qkv_lora2.", ".txt_attn.qkv."),
          (".processor.proj_lora1.", ".img_attn.proj."), (".processor.proj_lora2.", ".txt_attn.proj."),
          (".processor.qkv_lora.", ".linear1_qkv."), (".processor.proj_lora.", ".linear2."))


def is_xlabs(keys) -> bool:
    return any(".processor.qkv_lora" in k or ".processor.proj_lora" in k for k in keys)


def convert_xlabs(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """XLabs Flux LoRA keys -> ComfyUI's names (`diffusion_model.double_blocks.N.img_attn.qkv.lora_down.weight`)."""
    out = {}
    for k, v in sd.items():
        n = k
        for a, b in _XLABS:
            n = n.replace(a, b)
        n = n.replace(".down.weight", ".lora_down.weight").replace(".up.weight", ".lora_up.weight")
        out["diffusion_model." + n if not n.startswith("diffusion_model.") else n] = v
    return out


def _pieces(km, shapes: dict[str, tuple]) -> dict[str, tuple[Target, ...]]:
    """Source module name + ".weight" / ".bias" -> its diffusers pieces as Targets (source shape from the pieces);
    Flux's RMS norm scales count as weights, as ComfyUI names them."""
    out = {}
    for src, pieces in km.items():
        if src.endswith("_norm.scale"):
            src = src[: -len(".scale")] + ".weight"
        if not src.endswith((".weight", ".bias")):
            continue
        tshapes = [shapes[p.target] for p in pieces]
        rows = max(p.rows[1] for p in pieces) if pieces[0].rows is not None else tshapes[0][0]
        source = (rows, *tshapes[0][1:])
        out[src] = tuple(Target(UNET_PART, p.target.rsplit(".", 1)[0], p.rows, p.swap, source) for p in pieces)
    return out


def transformer_keys(network, family: str) -> dict:
    """The transformer's LoRA prefixes -> Target (a diffusers parameter) or a tuple of piece Targets; a piece
    weight's `.diff_b` patches find their bias pieces under the same prefix + "#bias"."""
    tr = network.transformer
    shapes = {k: tuple(v.shape) for k, v in tr.state_dict().items()}
    pieces = _pieces(network.key_map, shapes)
    keys: dict = {}
    for src, targets in pieces.items():
        if not src.endswith(".weight"):
            continue
        base = src[: -len(".weight")]
        whole = len(targets) == 1 and targets[0].rows is None and not targets[0].swap
        value = Target(UNET_PART, targets[0].param) if whole else targets
        bias = tuple(Target(t.part, t.param + "#bias", t.rows, t.swap, t.source_shape[:1])
                     for t in pieces.get(base + ".bias", ()))
        for alias in ("diffusion_model." + base, "lora_unet_" + base.replace(".", "_")):
            keys[alias] = value
            if not whole and bias:
                keys[alias + "#bias"] = bias
    if family == "flux":  # the q/k/v rows of a single block's linear1
        h = tr.config.num_attention_heads * tr.config.attention_head_dim
        for i in range(tr.config.num_single_layers):
            qkv = tuple(Target(t.part, t.param, t.rows, t.swap, (3 * h, t.source_shape[1]))
                        for t in pieces[f"single_blocks.{i}.linear1.weight"] if t.rows[1] <= 3 * h)
            keys[f"diffusion_model.single_blocks.{i}.linear1_qkv"] = qkv
    prefixes = (("transformer.", "lycoris_", "lora_transformer_", "") if family == "flux" else
                ("transformer.", "base_model.model.", "lora_transformer_", "lycoris_"))
    for name in shapes:
        if not name.endswith(".weight"):
            continue
        base = name[: -len(".weight")]
        t = Target(UNET_PART, base)
        for p in prefixes:
            keys.setdefault(p + (base.replace(".", "_") if p.endswith("_") else base), t)
    return keys


def text_keys(encoders: list[tuple[str, torch.nn.Module]], family: str) -> dict:
    """Text encoders [(kind, module), ...] in part order -> their LoRA prefixes."""
    keys: dict = {}
    kinds = [k for k, _ in encoders]
    for i, (kind, module) in enumerate(encoders):
        part = f"clip{i}"
        if kind == "clip_l":
            kohya, dotted = ["lora_te1_", "lora_te_"], ["text_encoder.", "text_encoders.clip_l.transformer.",
                                                        "clip_l.transformer."]
        elif kind == "clip_g":
            kohya = ["lora_te2_"] if "clip_l" in kinds else ["lora_te_"]
            dotted = ["text_encoder_2." if "clip_l" in kinds else "text_encoder.", "text_encoders.clip_g.transformer.",
                      "clip_g.transformer."]
        else:  # t5xxl: OneTrainer numbers it after the CLIPs (Flux: 2 and 3)
            n = 1 + ("clip_l" in kinds) + ("clip_g" in kinds)
            kohya = [f"lora_te{n}_"] + (["lora_te3_"] if n == 2 else [])
            dotted = ["text_encoders.t5xxl.transformer.", "t5xxl.transformer."]
        for name, _ in module.named_parameters():
            if not name.endswith(".weight"):
                continue
            base = name[: -len(".weight")]
            t = Target(part, base)
            canon = _canonical_clip_name(base) if kind != "t5xxl" else base
            for pre in kohya:
                keys.setdefault(pre + canon.replace(".", "_"), t)
            for pre in dotted:
                keys.setdefault(pre + canon, t)
    return keys
