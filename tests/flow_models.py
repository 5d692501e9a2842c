"""Seeded tiny random Flux.1 / SD3.5 models in the real key layouts (as ComfyUI's users keep the files), built at
test time: transformers (BFL layout for Flux, Stability's MMDiT layout for SD3), CLIP-L, CLIP-G and T5 text
encoders (transformers' layout, as clip_l.safetensors / clip_g.safetensors / t5xxl_*.safetensors), the 16-channel
VAE (ae.safetensors layout) and all-in-one checkpoints.

Everything is drawn from torch.Generator(seed) in a fixed key order, so the files are the same on every machine;
`tests/comfy_oracle/` makes ComfyUI's reference numbers from the same files.

    python tests/flow_models.py OUT_DIR     # writes every tiny model file into OUT_DIR (for the oracle scripts)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

# Widths of the tiny text encoders: CLIP-L 32, CLIP-G 48 (the oracle tells the two apart by it), T5 128 (two heads of
# 64; SD3 puts CLIP-L ++ CLIP-G, 80 wide, zero-padded to the T5 width before the T5 tokens).
CLIP_L_WIDTH, CLIP_G_WIDTH, T5_WIDTH = 32, 48, 128
T5_VOCAB = 32128


class _Draw:
    """Seeded tensors: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2), norm scales ~ 1 + N(0, 0.1^2)."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.sd: dict[str, torch.Tensor] = {}

    def w(self, key: str, *shape: int, std: float | None = None) -> None:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        std = std if std is not None else fan_in ** -0.5
        self.sd[key] = torch.randn(shape, generator=self.g) * std

    def b(self, key: str, n: int, std: float = 0.02) -> None:
        self.sd[key] = torch.randn((n,), generator=self.g) * std

    def lin(self, key: str, out: int, inp: int, bias: bool = True, std: float | None = None) -> None:
        self.w(key + ".weight", out, inp, std=std)
        if bias:
            self.b(key + ".bias", out)

    def norm(self, key: str, n: int) -> None:
        self.sd[key] = 1.0 + torch.randn((n,), generator=self.g) * 0.1

    def ln(self, key: str, n: int) -> None:
        self.norm(key + ".weight", n)
        self.b(key + ".bias", n)


# ------------------------------------------------------------------------------------------------ transformers
def flux_transformer(variant: str = "dev", *, hidden: int = 256, depth: int = 1, single: int = 1,
                     context_dim: int = T5_WIDTH, vec_dim: int = CLIP_L_WIDTH, seed: int = 0) -> dict:
    """A Flux.1 transformer in Black Forest Labs' layout (flux1-dev.safetensors keys). dev has guidance_in."""
    d = _Draw(seed)
    h, mlp, head = hidden, 4 * hidden, 128
    d.lin("img_in", h, 64)
    d.lin("time_in.in_layer", h, 256)
    d.lin("time_in.out_layer", h, h)
    d.lin("vector_in.in_layer", h, vec_dim)
    d.lin("vector_in.out_layer", h, h)
    if variant == "dev":
        d.lin("guidance_in.in_layer", h, 256)
        d.lin("guidance_in.out_layer", h, h)
    d.lin("txt_in", h, context_dim)
    for i in range(depth):
        p = f"double_blocks.{i}."
        for s in ("img", "txt"):
            d.lin(p + f"{s}_mod.lin", 6 * h, h, std=0.3 * h ** -0.5)
            d.lin(p + f"{s}_attn.qkv", 3 * h, h)
            d.norm(p + f"{s}_attn.norm.query_norm.scale", head)
            d.norm(p + f"{s}_attn.norm.key_norm.scale", head)
            d.lin(p + f"{s}_attn.proj", h, h)
            d.lin(p + f"{s}_mlp.0", mlp, h)
            d.lin(p + f"{s}_mlp.2", h, mlp)
    for i in range(single):
        p = f"single_blocks.{i}."
        d.lin(p + "linear1", 3 * h + mlp, h)
        d.lin(p + "linear2", h, h + mlp)
        d.norm(p + "norm.query_norm.scale", head)
        d.norm(p + "norm.key_norm.scale", head)
        d.lin(p + "modulation.lin", 3 * h, h, std=0.3 * h ** -0.5)
    d.lin("final_layer.linear", 64, h)
    d.lin("final_layer.adaLN_modulation.1", 2 * h, h, std=0.3 * h ** -0.5)
    return d.sd


def sd3_transformer(variant: str = "large", *, heads: int = 2, layers: int = 2, context_dim: int = 4096,
                    pooled_dim: int = CLIP_L_WIDTH + CLIP_G_WIDTH, pos_max: int = 16, seed: int = 0) -> dict:
    """An SD3.5 MMDiT in Stability's layout (sd3.5_large.safetensors keys): "large" has q/k RMS norms, "medium"
    (MMDiT-X) also a second attention in the image block of layer 0."""
    d = _Draw(seed)
    h = 64 * heads
    d.w("x_embedder.proj.weight", h, 16, 2, 2)
    d.b("x_embedder.proj.bias", h)
    d.sd["pos_embed"] = torch.randn((1, pos_max * pos_max, h), generator=d.g) * 0.1
    d.lin("t_embedder.mlp.0", h, 256)
    d.lin("t_embedder.mlp.2", h, h)
    d.lin("y_embedder.mlp.0", h, pooled_dim)
    d.lin("y_embedder.mlp.2", h, h)
    d.lin("context_embedder", h, context_dim)
    for i in range(layers):
        p = f"joint_blocks.{i}."
        last = i == layers - 1
        dual = variant == "medium" and i == 0
        d.lin(p + "x_block.adaLN_modulation.1", (9 if dual else 6) * h, h, std=0.3 * h ** -0.5)
        d.lin(p + "x_block.attn.qkv", 3 * h, h)
        d.lin(p + "x_block.attn.proj", h, h)
        d.norm(p + "x_block.attn.ln_q.weight", 64)
        d.norm(p + "x_block.attn.ln_k.weight", 64)
        if dual:
            d.lin(p + "x_block.attn2.qkv", 3 * h, h)
            d.lin(p + "x_block.attn2.proj", h, h)
            d.norm(p + "x_block.attn2.ln_q.weight", 64)
            d.norm(p + "x_block.attn2.ln_k.weight", 64)
        d.lin(p + "x_block.mlp.fc1", 4 * h, h)
        d.lin(p + "x_block.mlp.fc2", h, 4 * h)
        d.lin(p + "context_block.adaLN_modulation.1", (2 if last else 6) * h, h, std=0.3 * h ** -0.5)
        d.lin(p + "context_block.attn.qkv", 3 * h, h)
        d.norm(p + "context_block.attn.ln_q.weight", 64)
        d.norm(p + "context_block.attn.ln_k.weight", 64)
        if not last:
            d.lin(p + "context_block.attn.proj", h, h)
            d.lin(p + "context_block.mlp.fc1", 4 * h, h)
            d.lin(p + "context_block.mlp.fc2", h, 4 * h)
    d.lin("final_layer.linear", 2 * 2 * 16, h)
    d.lin("final_layer.adaLN_modulation.1", 2 * h, h, std=0.3 * h ** -0.5)
    return d.sd


# ------------------------------------------------------------------------------------------------ text encoders
def clip_text(width: int, layers: int, *, projection: bool, seed: int) -> dict:
    """A CLIP text tower in transformers' layout (clip_l.safetensors / clip_g.safetensors keys), 49408 tokens,
    77 positions."""
    d = _Draw(seed)
    p = "text_model."
    d.w(p + "embeddings.token_embedding.weight", 49408, width, std=0.02)
    d.w(p + "embeddings.position_embedding.weight", 77, width, std=0.01)
    for i in range(layers):
        q = f"{p}encoder.layers.{i}."
        d.ln(q + "layer_norm1", width)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            d.lin(q + f"self_attn.{n}", width, width)
        d.ln(q + "layer_norm2", width)
        d.lin(q + "mlp.fc1", 4 * width, width)
        d.lin(q + "mlp.fc2", width, 4 * width)
    d.ln(p + "final_layer_norm", width)
    if projection:
        d.w("text_projection.weight", width, width)
    return d.sd


def t5_encoder(width: int = T5_WIDTH, layers: int = 2, heads: int = 2, d_ff: int = 96, seed: int = 0) -> dict:
    """A T5 v1.1 encoder in transformers' layout (t5xxl_fp16.safetensors keys): gated-GELU, relative position
    bias in block 0, 32128 tokens."""
    d = _Draw(seed)
    d.w("shared.weight", T5_VOCAB, width, std=1.0)
    inner = heads * (width // heads)
    for i in range(layers):
        p = f"encoder.block.{i}.layer."
        for n in ("q", "k", "v"):
            d.w(p + f"0.SelfAttention.{n}.weight", inner, width)
        d.w(p + "0.SelfAttention.o.weight", width, inner)
        if i == 0:
            d.w(p + "0.SelfAttention.relative_attention_bias.weight", 32, heads, std=0.5)
        d.norm(p + "0.layer_norm.weight", width)
        d.w(p + "1.DenseReluDense.wi_0.weight", d_ff, width)
        d.w(p + "1.DenseReluDense.wi_1.weight", d_ff, width)
        d.w(p + "1.DenseReluDense.wo.weight", width, d_ff)
        d.norm(p + "1.layer_norm.weight", width)
    d.norm("encoder.final_layer_norm.weight", width)
    return d.sd


def clip_l(seed: int = 10) -> dict:
    return clip_text(CLIP_L_WIDTH, 3, projection=False, seed=seed)


def clip_g(seed: int = 11) -> dict:
    return clip_text(CLIP_G_WIDTH, 3, projection=True, seed=seed)


def t5(seed: int = 12) -> dict:
    return t5_encoder(seed=seed)


# ------------------------------------------------------------------------------------------------ VAE
def flow_vae(*, ch: int = 32, mult=(1, 2, 2, 2), res: int = 1, seed: int = 20) -> dict:
    """A 16-channel KL VAE in the ae.safetensors layout (no quant convs), `ch * mult` channels per level."""
    d = _Draw(seed)

    def resnet(p: str, cin: int, cout: int) -> None:
        d.ln(p + "norm1", cin)
        d.w(p + "conv1.weight", cout, cin, 3, 3)
        d.b(p + "conv1.bias", cout)
        d.ln(p + "norm2", cout)
        d.w(p + "conv2.weight", cout, cout, 3, 3, std=0.3 * (cout * 9) ** -0.5)
        d.b(p + "conv2.bias", cout)
        if cin != cout:
            d.w(p + "nin_shortcut.weight", cout, cin, 1, 1)
            d.b(p + "nin_shortcut.bias", cout)

    def attn(p: str, c: int) -> None:
        d.ln(p + "norm", c)
        for n in ("q", "k", "v", "proj_out"):
            d.w(p + f"{n}.weight", c, c, 1, 1)
            d.b(p + f"{n}.bias", c)

    chans = [ch * m for m in mult]
    d.w("encoder.conv_in.weight", ch, 3, 3, 3)
    d.b("encoder.conv_in.bias", ch)
    cin = ch
    for i, c in enumerate(chans):
        for j in range(res):
            resnet(f"encoder.down.{i}.block.{j}.", cin, c)
            cin = c
        if i < len(chans) - 1:
            d.w(f"encoder.down.{i}.downsample.conv.weight", c, c, 3, 3)
            d.b(f"encoder.down.{i}.downsample.conv.bias", c)
    resnet("encoder.mid.block_1.", cin, cin)
    attn("encoder.mid.attn_1.", cin)
    resnet("encoder.mid.block_2.", cin, cin)
    d.ln("encoder.norm_out", cin)
    d.w("encoder.conv_out.weight", 32, cin, 3, 3)
    d.b("encoder.conv_out.bias", 32)
    top = chans[-1]
    d.w("decoder.conv_in.weight", top, 16, 3, 3)
    d.b("decoder.conv_in.bias", top)
    resnet("decoder.mid.block_1.", top, top)
    attn("decoder.mid.attn_1.", top)
    resnet("decoder.mid.block_2.", top, top)
    cin = top
    for i in reversed(range(len(chans))):
        c = chans[i]
        for j in range(res + 1):
            resnet(f"decoder.up.{i}.block.{j}.", cin, c)
            cin = c
        if i > 0:
            d.w(f"decoder.up.{i}.upsample.conv.weight", c, c, 3, 3)
            d.b(f"decoder.up.{i}.upsample.conv.bias", c)
    d.ln("decoder.norm_out", cin)
    d.w("decoder.conv_out.weight", 3, cin, 3, 3)
    d.b("decoder.conv_out.bias", 3)
    return d.sd


# ------------------------------------------------------------------------------------------------ LoRAs
def _lora(d: _Draw, prefix: str, out: int, inp: int, rank: int = 4, names=("lora_down", "lora_up"),
          alpha: float | None = 2.0) -> None:
    d.w(f"{prefix}.{names[0]}.weight", rank, inp, std=0.5 * inp ** -0.5)
    d.w(f"{prefix}.{names[1]}.weight", out, rank, std=0.5 * rank ** -0.5)
    if alpha is not None:
        d.sd[f"{prefix}.alpha"] = torch.tensor(alpha)


def flux_lora(fmt: str, *, hidden: int = 128, seed: int = 30) -> dict:
    """A Flux LoRA for flux_transformer(hidden=128, depth 1, single 1) and the tiny CLIP-L / T5 in one of the
    formats ComfyUI reads: "kohya" (BFL names, lora_unet_ / lora_te1_ / lora_te2_), "diffusers"
    (transformer.<diffusers names>, lora_A / lora_B), "comfy" (diffusion_model.<BFL names>, with linear1_qkv,
    a LoHa and a .diff), "xlabs" (double_blocks.N.processor.qkv_lora1..., down / up)."""
    d = _Draw(seed)
    h = hidden
    if fmt == "kohya":
        _lora(d, "lora_unet_double_blocks_0_img_attn_qkv", 3 * h, h)
        _lora(d, "lora_unet_double_blocks_0_txt_mlp_0", 4 * h, h)
        _lora(d, "lora_unet_single_blocks_0_linear1", 7 * h, h, alpha=None)
        _lora(d, "lora_unet_single_blocks_0_linear2", h, 5 * h)
        _lora(d, "lora_unet_final_layer_adaLN_modulation_1", 2 * h, h)
        _lora(d, "lora_unet_txt_in", h, T5_WIDTH)
        _lora(d, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", CLIP_L_WIDTH, CLIP_L_WIDTH)
        _lora(d, "lora_te1_text_model_encoder_layers_1_mlp_fc1", 4 * CLIP_L_WIDTH, CLIP_L_WIDTH)
        _lora(d, "lora_te2_encoder_block_0_layer_0_SelfAttention_q", T5_WIDTH, T5_WIDTH)
        _lora(d, "lora_te2_encoder_block_1_layer_1_DenseReluDense_wi_0", 96, T5_WIDTH)
    elif fmt == "diffusers":
        ab = ("lora_A", "lora_B")
        _lora(d, "transformer.transformer_blocks.0.attn.to_q", h, h, names=ab, alpha=None)
        _lora(d, "transformer.transformer_blocks.0.attn.add_v_proj", h, h, names=ab, alpha=None)
        _lora(d, "transformer.transformer_blocks.0.ff.net.0.proj", 4 * h, h, names=ab, alpha=None)
        _lora(d, "transformer.single_transformer_blocks.0.attn.to_k", h, h, names=ab, alpha=None)
        _lora(d, "transformer.single_transformer_blocks.0.proj_mlp", 4 * h, h, names=ab, alpha=None)
        _lora(d, "transformer.single_transformer_blocks.0.proj_out", h, 5 * h, names=ab, alpha=None)
        _lora(d, "transformer.norm_out.linear", 2 * h, h, names=ab, alpha=None)
        _lora(d, "transformer.x_embedder", h, 64, names=ab, alpha=None)
    elif fmt == "comfy":
        _lora(d, "diffusion_model.double_blocks.0.txt_attn.qkv", 3 * h, h)
        _lora(d, "diffusion_model.single_blocks.0.linear1_qkv", 3 * h, h)
        _lora(d, "diffusion_model.double_blocks.0.img_mod.lin", 6 * h, h)
        p = "diffusion_model.double_blocks.0.img_attn.proj"
        for n, shape in (("hada_w1_a", (h, 2)), ("hada_w1_b", (2, h)), ("hada_w2_a", (h, 2)), ("hada_w2_b", (2, h))):
            d.w(f"{p}.{n}", *shape, std=0.2)
        d.sd[f"{p}.alpha"] = torch.tensor(2.0)
        d.w("diffusion_model.double_blocks.0.img_attn.norm.query_norm.diff", 128, std=0.05)
        d.w("diffusion_model.single_blocks.0.linear1.diff_b", 7 * h, std=0.05)
        _lora(d, "text_encoders.clip_l.transformer.text_model.encoder.layers.2.self_attn.out_proj", CLIP_L_WIDTH,
              CLIP_L_WIDTH)
    elif fmt == "xlabs":
        ud = ("down", "up")
        _lora(d, "double_blocks.0.processor.qkv_lora1", 3 * h, h, names=ud, alpha=None)
        _lora(d, "double_blocks.0.processor.proj_lora2", h, h, names=ud, alpha=None)
    else:
        raise ValueError(fmt)
    return d.sd


def sd3_lora(fmt: str, *, heads: int = 2, seed: int = 31) -> dict:
    """An SD3 LoRA for sd3_transformer(heads=2, layers=2, context T5_WIDTH): "kohya" (MMDiT names) or
    "diffusers" (transformer.<diffusers names>)."""
    d = _Draw(seed)
    h = 64 * heads
    if fmt == "kohya":
        _lora(d, "lora_unet_joint_blocks_0_x_block_attn_qkv", 3 * h, h)
        _lora(d, "lora_unet_joint_blocks_1_context_block_attn_qkv", 3 * h, h)
        _lora(d, "lora_unet_joint_blocks_1_context_block_adaLN_modulation_1", 2 * h, h)
        _lora(d, "lora_unet_joint_blocks_0_x_block_mlp_fc2", h, 4 * h)
        _lora(d, "lora_unet_context_embedder", h, T5_WIDTH)
    elif fmt == "diffusers":
        ab = ("lora_A", "lora_B")
        _lora(d, "transformer.transformer_blocks.0.attn.to_v", h, h, names=ab, alpha=None)
        _lora(d, "transformer.transformer_blocks.0.attn.add_q_proj", h, h, names=ab, alpha=None)
        _lora(d, "transformer.transformer_blocks.1.norm1_context.linear", 2 * h, h, names=ab, alpha=None)
        _lora(d, "transformer.proj_out", 64, h, names=ab, alpha=None)
    else:
        raise ValueError(fmt)
    return d.sd


# ------------------------------------------------------------------------------------------------ files
def digest(sd: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys and the raw bytes of a state dict (tells whether a rebuild is identical)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def flux_checkpoint(variant: str = "dev") -> dict:
    """An all-in-one Flux checkpoint as ComfyUI saves them (model.diffusion_model., text_encoders.clip_l/t5xxl
    .transformer., vae.)."""
    return {**prefixed(flux_transformer(variant), "model.diffusion_model."),
            **prefixed(clip_l(), "text_encoders.clip_l.transformer."),
            **prefixed(t5(), "text_encoders.t5xxl.transformer."),
            **prefixed(flow_vae(), "vae.")}


def sd3_checkpoint(variant: str = "large") -> dict:
    """An all-in-one SD3.5 checkpoint as Stability ships them (model.diffusion_model., text_encoders.clip_l/
    clip_g/t5xxl.transformer., first_stage_model.)."""
    return {**prefixed(sd3_transformer(variant, context_dim=T5_WIDTH), "model.diffusion_model."),
            **prefixed(clip_l(), "text_encoders.clip_l.transformer."),
            **prefixed(clip_g(), "text_encoders.clip_g.transformer."),
            **prefixed(t5(), "text_encoders.t5xxl.transformer."),
            **prefixed(flow_vae(seed=21), "first_stage_model.")}


FILES = {
    "diffusion_models/flux_dev.safetensors": lambda: flux_transformer("dev"),
    "diffusion_models/flux_schnell.safetensors": lambda: flux_transformer("schnell", seed=1),
    "diffusion_models/sd35_large.safetensors": lambda: sd3_transformer("large", context_dim=T5_WIDTH),
    "diffusion_models/sd35_medium.safetensors": lambda: sd3_transformer("medium", context_dim=T5_WIDTH, seed=2),
    "diffusion_models/sd35_large_4096.safetensors": lambda: sd3_transformer("large", context_dim=4096, seed=3),
    "text_encoders/clip_l.safetensors": clip_l,
    "text_encoders/clip_g.safetensors": clip_g,
    "text_encoders/t5xxl.safetensors": t5,
    "vae/ae.safetensors": flow_vae,
    "vae/sd35_vae.safetensors": lambda: flow_vae(seed=21),
    "diffusion_models/flux_dev_bf16.safetensors": lambda: _to(flux_transformer("dev"), torch.bfloat16),
    "diffusion_models/sd35_large_fp16.safetensors": lambda: _to(sd3_transformer("large", context_dim=T5_WIDTH),
                                                                torch.float16),
    "checkpoints/flux_dev_aio.safetensors": lambda: flux_checkpoint("dev"),
    "diffusion_models/flux_lora_base.safetensors": lambda: flux_transformer("dev", hidden=128, seed=5),
    "loras/flux_kohya.safetensors": lambda: flux_lora("kohya"),
    "loras/flux_diffusers.safetensors": lambda: flux_lora("diffusers"),
    "loras/flux_comfy.safetensors": lambda: flux_lora("comfy"),
    "loras/flux_xlabs.safetensors": lambda: flux_lora("xlabs"),
    "loras/sd3_kohya.safetensors": lambda: sd3_lora("kohya"),
    "loras/sd3_diffusers.safetensors": lambda: sd3_lora("diffusers"),
    "checkpoints/sd35_large_aio.safetensors": lambda: sd3_checkpoint("large"),
}


def _to(sd: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) for k, v in sd.items()}


def write_models(root: Path, names=None, dtype: torch.dtype | None = None) -> dict[str, Path]:
    """Write the tiny model files (all, or `names`) under `root` (ComfyUI's models/ layout); -> {name: path}."""
    from safetensors.torch import save_file

    out = {}
    for name, make in FILES.items():
        if names is not None and name not in names:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = make()
        if dtype is not None:
            sd = {k: v.to(dtype) for k, v in sd.items()}
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        out[name] = path
    return out


def digests() -> dict[str, str]:
    """`digest` of every file in FILES (what tests/data/flow_models.json records for the stored references)."""
    return {name: digest(make()) for name, make in FILES.items()}


if __name__ == "__main__":
    import json

    for name, path in write_models(Path(sys.argv[1])).items():
        print(name, path.stat().st_size)
    if len(sys.argv) > 2:  # the digests the references were made from
        Path(sys.argv[2]).write_text(json.dumps(digests(), indent=1, sort_keys=True) + "\n")
