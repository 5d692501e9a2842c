"""The text encoders of Flux.1 (CLIP-L + T5-XXL) and SD3/SD3.5 (CLIP-L + CLIP-G + T5-XXL) as ComfyUI's CLIP:
`encode_prompt(text) -> CONDITIONING`, loaded from the files ComfyUI's DualCLIPLoader / TripleCLIPLoader /
CLIPLoader take or from an all-in-one checkpoint.

What ComfyUI 0.30 makes of a prompt (and what these classes reproduce, tests/test_flow_text.py):
- Flux: the T5 sequence (at least 256 tokens) is the conditioning, CLIP-L's pooled output its "pooled_output";
  CLIPTextEncodeFlux gives CLIP-L and T5 their own texts and sets "guidance".
- SD3: CLIP-L's and CLIP-G's penultimate layers (77 tokens per chunk, no final norm) side by side (768 + 1280),
  zero-padded to the T5 width (4096), then T5's tokens (at least 77) after them along the sequence; pooled =
  CLIP-L pooled ++ CLIP-G projected pooled (2048). A missing encoder leaves its part out (zeros in the pooled).

Weights are kept as ComfyUI keeps text encoders by default (CLIP in float16; T5 in float16, or its file's dtype
when that is smaller) and computed in float32 on the CPU (`text_dtype="fp32"` keeps the file's precision instead,
ComfyUI's --fp32-text-enc).
"""

from __future__ import annotations

import re

import torch

from .embeddings import EMBEDDING_PREFIX, EmbeddingLibrary
from .flow_nets import cast_on_use
from .sd_text import END_TOKEN, ClipTextEncoder, TokenizerSpec, clip_tokenizer, parse_prompt_weights
from .t5 import END_TOKEN as T5_END
from .t5 import (
    FLUX_MIN_LENGTH,
    SD3_MIN_LENGTH,
    T5Encoder,
    build_t5,
    embedding_and_rest,
    is_t5,
    segment_parts,
    t5_tokens,
)

CLIP_L_PREFIXES = ("text_encoders.clip_l.transformer.", "cond_stage_model.clip_l.transformer.")
CLIP_G_PREFIXES = ("text_encoders.clip_g.transformer.", "cond_stage_model.clip_g.transformer.")
T5_PREFIXES = ("text_encoders.t5xxl.transformer.", "cond_stage_model.t5xxl.transformer.")
TEXT_TYPES = ("flux", "sd3")


def _dsize(dt: torch.dtype) -> int:
    return torch.empty((), dtype=dt).element_size()


def storage_dtype(file_dtype: torch.dtype, kind: str, text_dtype: str | None) -> torch.dtype:
    """ComfyUI's default text-encoder weight dtype: CLIP float16; T5 the smaller of its file's dtype and float16.
    `text_dtype` "fp32" keeps the file's dtype (ComfyUI's --fp32-text-enc)."""
    if text_dtype == "fp32":
        return file_dtype
    if kind == "t5" and _dsize(file_dtype) <= 2:
        return file_dtype
    return torch.float16


def _file_dtype(sd: dict, prefix: str) -> torch.dtype:
    for k, v in sd.items():
        if k.startswith(prefix) and v.is_floating_point() and v.ndim == 2:
            return v.dtype
    return torch.float32


def clip_kind(sd: dict, prefix: str) -> str | None:
    """"clip_l" / "clip_g" for a CLIP text tower under `prefix` (transformers' layout), None otherwise. ComfyUI's
    rule: 31 layers or more is CLIP-G; so is a width of 1280 (a truncated G)."""
    key = f"{prefix}text_model.final_layer_norm.weight"
    if key not in sd:
        return None
    if f"{prefix}text_model.encoder.layers.30.mlp.fc1.weight" in sd or sd[key].shape[0] == 1280:
        return "clip_g"
    return "clip_l"


def _clip_config(sd: dict, prefix: str, kind: str):
    from transformers import CLIPTextConfig

    p = prefix + "text_model."
    emb = sd[p + "embeddings.token_embedding.weight"]
    pat = re.compile(re.escape(p) + r"encoder\.layers\.(\d+)\.")
    layers = max(int(m.group(1)) for k in sd if (m := pat.match(k))) + 1
    width = int(emb.shape[1])
    proj = sd.get(prefix + "text_projection.weight")
    return CLIPTextConfig(
        vocab_size=int(emb.shape[0]), hidden_size=width,
        intermediate_size=int(sd[p + "encoder.layers.0.mlp.fc1.weight"].shape[0]), num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=int(sd[p + "embeddings.position_embedding.weight"].shape[0]),
        hidden_act="gelu" if kind == "clip_g" else "quick_gelu", layer_norm_eps=1e-5,
        projection_dim=int(proj.shape[0]) if proj is not None else width,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1)


def build_clip(sd: dict, prefix: str, kind: str, *, storage: torch.dtype, compute: torch.dtype, device):
    """A transformers CLIP text model (with its text projection for CLIP-G) from the tensors under `prefix`."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg = _clip_config(sd, prefix, kind)
    with_proj = kind == "clip_g"
    cls = CLIPTextModelWithProjection if with_proj else CLIPTextModel
    with torch.device("meta"):
        model = cls(cfg)
    own = model.state_dict()
    state = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix):]
        if k.endswith("position_ids") or (k == "text_projection.weight" and not with_proj):
            continue
        state[k] = v.to(storage)
    if not any(k.startswith("text_model.") for k in own):  # transformers >= 5 flattened CLIPTextModel
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{kind} weights do not match: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    model.load_state_dict(state, strict=False, assign=True)
    for m in model.modules():  # position ids are not weights: rebuild them
        for name, b in list(m.named_buffers(recurse=False)):
            if b.is_meta:
                m.register_buffer(name, torch.arange(b.shape[-1]).expand(b.shape).clone(),
                                  persistent=name not in m._non_persistent_buffers_set)
    return cast_on_use(model, storage, compute).to(device).eval().requires_grad_(False)


class SegmentTokenizerSpec(TokenizerSpec):
    """ComfyUI 0.30's CLIP tokenization: each weighted segment is tokenized whole (cut only before `embedding:`
    words), so a segment of 8 tokens or more is split across 77-token chunks where it reaches the end, instead of
    moving word by word to the next chunk."""

    def token_groups(self, text: str, embeddings=None, *, embedding_key: str | None = None,
                     width: int | None = None):
        groups = []
        for segment, weight in parse_prompt_weights(text):
            for part in segment_parts(segment):
                if not part:
                    continue
                if part.startswith(EMBEDDING_PREFIX):
                    emb, part = embedding_and_rest(embeddings, part[len(EMBEDDING_PREFIX):], embedding_key,
                                                   width or 0)
                    if emb is not None:
                        groups.append([(emb[i], weight) for i in range(emb.shape[0])])
                    if not part:
                        continue
                groups.append([(t, weight) for t in self.word_tokens(part)])
        return groups


def clip_l_encoder(model, layer_idx: int | None) -> ClipTextEncoder:
    """ComfyUI's CLIP-L: the last layer for Flux (only its pooled output is used), the penultimate for SD3."""
    return ClipTextEncoder(model, SegmentTokenizerSpec(clip_tokenizer(), END_TOKEN), layer_idx=layer_idx,
                           layer_norm_hidden_state=False, embedding_key="clip_l")


def clip_g_encoder(model) -> ClipTextEncoder:
    """ComfyUI's SDXL/SD3 CLIP-G: penultimate layer, no final norm, projected pooled output, padded with 0."""
    return ClipTextEncoder(model, SegmentTokenizerSpec(clip_tokenizer(), 0), layer_idx=-2,
                           layer_norm_hidden_state=False, projected_pooled=True, embedding_key="clip_g")


def _library(embeddings):
    if embeddings is None or isinstance(embeddings, EmbeddingLibrary):
        return embeddings
    return EmbeddingLibrary(embeddings)


class _TextLoras:
    """LoRA support of the text-encoder objects (models/lora.py): their parts and key names."""

    family: str

    def lora_parts(self) -> list[tuple[str, torch.nn.Module]]:
        return [(k, enc.model) for k in ("clip_l", "clip_g", "t5") if (enc := getattr(self, k, None)) is not None]

    def lora_modules(self) -> dict[str, torch.nn.Module]:
        return {f"clip{i}": m for i, (_, m) in enumerate(self.lora_parts())}

    def make_lora_key_map(self) -> dict:
        from .flow_lora import text_keys

        return text_keys([("t5xxl" if k == "t5" else k, m) for k, m in self.lora_parts()], self.family)

    def with_loras(self, loras, *, allow_pickle: bool = False):
        from .lora import with_loras

        return with_loras(self, loras, allow_pickle=allow_pickle)


class FluxTextEncoders(_TextLoras):
    """CLIP-L + T5-XXL, as ComfyUI's Flux CLIP."""

    family = "flux"

    def __init__(self, clip_l: ClipTextEncoder, t5: T5Encoder) -> None:
        self.clip_l, self.t5 = clip_l, t5

    def __repr__(self) -> str:
        return f"FluxTextEncoders(clip_l, t5xxl width {self.t5.width})"

    def encode_prompt(self, text: str, *, t5_text: str | None = None, guidance: float | None = None,
                      embeddings=None, clip_skip=None, **_ignored) -> list:
        """Prompt -> [[T5 sequence (1, >=256, D), {"pooled_output": CLIP-L pooled (1, 768)[, "guidance"]}]].
        `t5_text` gives T5 its own text (CLIPTextEncodeFlux's t5xxl field); `guidance` sets Flux dev's guidance.
        `clip_skip` (CLIPSetLastLayer) picks T5's layer, as in ComfyUI (CLIP-L's pooled output is unaffected)."""
        emb = _library(embeddings)
        cond = self.t5.encode(text if t5_text is None else t5_text, emb, clip_skip)
        _, pooled = self.clip_l.encode(text, None, emb)
        extras: dict = {"pooled_output": pooled}
        if guidance is not None:
            extras["guidance"] = float(guidance)
        return [[cond, extras]]


class SD3TextEncoders(_TextLoras):
    """Any of CLIP-L, CLIP-G and T5-XXL, as ComfyUI's SD3 CLIP (TripleCLIPLoader, or fewer)."""

    family = "sd3"

    def __init__(self, clip_l: ClipTextEncoder | None, clip_g: ClipTextEncoder | None, t5: T5Encoder | None) -> None:
        if clip_l is None and clip_g is None and t5 is None:
            raise ValueError("SD3 text encoders: none given")
        self.clip_l, self.clip_g, self.t5 = clip_l, clip_g, t5

    def __repr__(self) -> str:
        have = [n for n in ("clip_l", "clip_g", "t5") if getattr(self, n) is not None]
        return f"SD3TextEncoders({', '.join(have)})"

    def encode_prompt(self, text: str, *, clip_g_text: str | None = None, t5_text: str | None = None,
                      empty_padding: str | None = None, embeddings=None, clip_skip=None, **_ignored) -> list:
        """Prompt -> [[cond (1, 77k [+ T5 tokens], 4096), {"pooled_output": (1, 2048)}]] (ComfyUI's SD3 CLIP).
        `clip_g_text` / `t5_text` / `empty_padding`: CLIPTextEncodeSD3's fields (default: `text` for all three,
        as CLIPTextEncode). With empty_padding "none" an empty text leaves its encoder out (an empty CLIP-L and
        CLIP-G, or T5, contribute nothing); CLIP-L and CLIP-G chunk lists of different lengths are evened out
        with the empty prompt's chunks."""
        if empty_padding is not None and empty_padding not in ("none", "empty_prompt"):
            raise ValueError(f"empty_padding must be 'none' or 'empty_prompt', got {empty_padding!r}")
        emb = _library(embeddings)
        g_text = text if clip_g_text is None else clip_g_text
        t_text = text if t5_text is None else t5_text
        no_pad = empty_padding == "none"
        chunks = {"clip_l": [] if no_pad and text == "" else self._chunks("clip_l", text, emb),
                  "clip_g": [] if no_pad and g_text == "" else self._chunks("clip_g", g_text, emb)}
        if len(chunks["clip_l"]) != len(chunks["clip_g"]):
            short = "clip_l" if len(chunks["clip_l"]) < len(chunks["clip_g"]) else "clip_g"
            long = "clip_g" if short == "clip_l" else "clip_l"
            empty = self._chunks(short, "", None)
            while len(chunks[short]) < len(chunks[long]):
                chunks[short] = chunks[short] + empty
        width = self.t5.width if self.t5 is not None else 4096
        out, pooled = None, None
        if chunks["clip_l"] or chunks["clip_g"]:
            lg = None
            if self.clip_l is not None:
                lg, l_pooled = _encode_chunks(self.clip_l, chunks["clip_l"], clip_skip)
            else:
                l_pooled = torch.zeros((1, 768))
            if self.clip_g is not None:
                g_out, g_pooled = _encode_chunks(self.clip_g, chunks["clip_g"], clip_skip)
                if lg is not None:
                    n = min(lg.shape[1], g_out.shape[1])
                    lg = torch.cat([lg[:, :n], g_out[:, :n]], dim=-1)
                else:
                    lg = torch.nn.functional.pad(g_out, (768, 0))
            else:
                g_pooled = torch.zeros((1, 1280))
            if lg is not None:
                if lg.shape[-1] > width:
                    raise ValueError(f"SD3 text encoders: CLIP width {lg.shape[-1]} exceeds the T5 width {width}")
                out = torch.nn.functional.pad(lg, (0, width - lg.shape[-1]))
            pooled = torch.cat([l_pooled, g_pooled], dim=-1)
        if self.t5 is not None:
            tokens = [] if no_pad and t_text == "" else t5_tokens(t_text, min_length=self.t5.min_length,
                                                                  embeddings=emb, width=self.t5.width)
            t5_out = self.t5.encode_tokens(tokens or [(T5_END, 1.0)], clip_skip)
            out = torch.cat([out, t5_out], dim=-2) if out is not None else t5_out
        if out is None:
            out = torch.zeros((1, 77, 4096))
        if pooled is None:
            pooled = torch.zeros((1, 768 + 1280))
        return [[out, {"pooled_output": pooled}]]

    def _chunks(self, kind: str, text: str, embeddings):
        enc = getattr(self, kind)
        if enc is None:  # only the chunk count matters (CLIP-L and CLIP-G are evened out)
            spec, width, key = SegmentTokenizerSpec(clip_tokenizer(), END_TOKEN), 768, kind
        else:
            spec, key = enc.spec, enc.embedding_key
            width = int(enc._token_embedding().weight.shape[1])
        return spec.tokenize(text, embeddings, embedding_key=key, width=width)


def _encode_chunks(enc: ClipTextEncoder, chunks, clip_skip):
    """ComfyUI's encoding of a chunk list; none at all encodes the bare start + end tokens."""
    if not chunks:
        chunks = [[(enc.spec.start_token, 1.0), (enc.spec.end_token, 1.0)]]
    return enc.encode_tokens(chunks, clip_skip)


# ------------------------------------------------------------------------------------------------ loading
def find_text_encoders(sd: dict) -> dict[str, str]:
    """{"clip_l" | "clip_g" | "t5xxl": prefix} of the text encoders a state dict holds (a single encoder file's
    keys have the prefix "")."""
    found: dict[str, str] = {}
    for prefixes, kind in ((CLIP_L_PREFIXES, "clip_l"), (CLIP_G_PREFIXES, "clip_g"), (T5_PREFIXES, "t5xxl")):
        for p in prefixes:
            if (kind == "t5xxl" and is_t5(sd, p)) or (kind != "t5xxl" and clip_kind(sd, p) is not None):
                found[kind] = p
                break
    if not found:
        kind = clip_kind(sd, "")
        if kind is not None:
            found[kind] = ""
        elif is_t5(sd, ""):
            found["t5xxl"] = ""
    return found


def build_encoders(parts: list[tuple[dict, str, str]], family: str, *, device, compute: torch.dtype,
                   text_dtype: str | None = None):
    """[(state dict, prefix, kind), ...] -> FluxTextEncoders / SD3TextEncoders. Two CLIP-L-looking towers for SD3
    (tiny or truncated files): the wider one is CLIP-G."""
    if family not in TEXT_TYPES:
        raise ValueError(f"text encoder type must be one of {', '.join(TEXT_TYPES)}, got {family!r}")
    clips = [(sd, p, k) for sd, p, k in parts if k != "t5xxl"]
    if family == "sd3" and len(clips) == 2 and clips[0][2] == clips[1][2]:
        widths = [sd[p + "text_model.final_layer_norm.weight"].shape[0] for sd, p, _ in clips]
        if widths[0] != widths[1]:
            small = 0 if widths[0] < widths[1] else 1
            clips = [(clips[i][0], clips[i][1], "clip_l" if i == small else "clip_g") for i in range(2)]
    kinds = [k for _, _, k in clips] + [k for _, _, k in parts if k == "t5xxl"]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"text encoders: two of the same kind ({', '.join(kinds)})")
    built: dict[str, object] = {}
    for sd, p, k in clips + [x for x in parts if x[2] == "t5xxl"]:
        fdt = _file_dtype(sd, p)
        if k == "t5xxl":
            model = build_t5(sd, p, storage=storage_dtype(fdt, "t5", text_dtype), compute=compute, device=device)
            built[k] = T5Encoder(model, compute, FLUX_MIN_LENGTH if family == "flux" else SD3_MIN_LENGTH)
        else:
            model = build_clip(sd, p, k, storage=storage_dtype(fdt, "clip", text_dtype), compute=compute,
                               device=device)
            if k == "clip_g":
                built[k] = clip_g_encoder(model)
            else:
                built[k] = clip_l_encoder(model, None if family == "flux" else -2)
    if family == "flux":
        if set(built) != {"clip_l", "t5xxl"}:
            raise ValueError(f"Flux needs CLIP-L and T5-XXL text encoders; got {', '.join(sorted(built)) or 'none'}")
        return FluxTextEncoders(built["clip_l"], built["t5xxl"])
    return SD3TextEncoders(built.get("clip_l"), built.get("clip_g"), built.get("t5xxl"))
