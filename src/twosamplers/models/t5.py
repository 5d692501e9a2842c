"""The T5 v1.1 text encoder of Flux.1 and SD3/SD3.5 (transformers' T5EncoderModel) with ComfyUI 0.30's prompt
conventions, and the shipped T5 tokenizer (data/t5/, Apache-2.0; loaded offline).

ComfyUI's T5 prompts, as measured against it (tests/test_flow_text.py):
- emphasis as for CLIP (`(text:1.2)`, `(text)` = 1.1, `\\(` literal); each weighted segment is tokenized whole
  (SentencePiece, its end token dropped), `embedding:name` words (with an embeddings folder) become vectors;
- one sequence of any length (no 77-token chunks): the tokens, the end token `</s>` (1), then pad tokens (0) up
  to `min_length` (256 for Flux, 77 for SD3);
- no attention mask (the pad tokens are attended to); the output is the last layer after the final norm;
- weights != 1: an "empty" row (end token, then pads) is encoded too and a weighted token becomes
  empty + (token - empty) * weight.
"""

from __future__ import annotations

import functools
import gzip
import re
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import torch

from .embeddings import EMBEDDING_PREFIX, embedding_for_word
from .flow_nets import cast_on_use
from .sd_text import _put_vectors, parse_prompt_weights

END_TOKEN = 1
PAD_TOKEN = 0
FLUX_MIN_LENGTH = 256
SD3_MIN_LENGTH = 77
_T5_FILES = ("tokenizer_config.json", "special_tokens_map.json")


@functools.lru_cache(maxsize=1)
def t5_tokenizer():
    """A `transformers.T5TokenizerFast` from the shipped T5 tokenizer files (the class and files ComfyUI uses)."""
    from transformers import T5TokenizerFast

    data = resources.files("twosamplers").joinpath("data/t5")
    with tempfile.TemporaryDirectory(prefix="twosamplers-t5-") as d:
        Path(d, "tokenizer.json").write_bytes(gzip.decompress(data.joinpath("tokenizer.json.gz").read_bytes()))
        for name in _T5_FILES:
            Path(d, name).write_bytes(data.joinpath(name).read_bytes())
        tok = T5TokenizerFast.from_pretrained(d)
    if tok.convert_tokens_to_ids("</s>") != END_TOKEN or tok.convert_tokens_to_ids("<pad>") != PAD_TOKEN:
        raise RuntimeError("the shipped T5 tokenizer is damaged")
    return tok


def t5_tokens(text: str, *, min_length: int, embeddings=None, width: int = 4096) -> list[tuple]:
    """Prompt -> [(token id or embedding vector, weight), ...] the way ComfyUI 0.30's T5 tokenizer makes them."""
    tok = t5_tokenizer()
    out: list[tuple] = []
    for segment, weight in parse_prompt_weights(text):
        for part in segment_parts(segment):
            if not part:
                continue
            if part.startswith(EMBEDDING_PREFIX):
                emb, leftover = embedding_and_rest(embeddings, part[len(EMBEDDING_PREFIX):], "t5xxl", width)
                if emb is not None:
                    out += [(emb[i], weight) for i in range(emb.shape[0])]
                if not leftover:
                    continue
                part = leftover
            out += [(t, weight) for t in tok(part)["input_ids"][:-1]]
    out.append((END_TOKEN, 1.0))
    if len(out) < min_length:
        out += [(PAD_TOKEN, 1.0)] * (min_length - len(out))
    return out


def segment_parts(segment: str) -> list[str]:
    """A weighted segment cut before every `embedding:` that follows whitespace (ComfyUI 0.30 tokenizes each part
    whole, not word by word)."""
    pieces = re.split(r"(?<=\s)" + re.escape(EMBEDDING_PREFIX), segment)
    return [pieces[0]] + [EMBEDDING_PREFIX + p for p in pieces[1:]]


def embedding_and_rest(embeddings, text: str, key: str, width: int) -> tuple[torch.Tensor | None, str]:
    """(vectors or None, the text to tokenize after them) for `embedding:NAME rest`: the name is the first word,
    cut at a '<' or '[' (ComfyUI); a missing embedding is dropped with a warning and the rest is tokenized."""
    words = text.strip("\n").split()
    name = words[0] if words else ""
    rest = " ".join(words[1:])
    m = re.search(r"[<\[]", name)
    if m is not None:
        rest = name[m.start():] + (" " + rest if rest else "")
        name = name[:m.start()]
    emb, commas = embedding_for_word(embeddings, name, key, width)
    if commas:
        rest = f"{commas} {rest}"
    return emb, rest


def _t5_config(sd: dict[str, torch.Tensor], prefix: str):
    from transformers import T5Config

    def n_blocks() -> int:
        pat = re.compile(re.escape(prefix) + r"encoder\.block\.(\d+)\.")
        return max(int(m.group(1)) for k in sd if (m := pat.match(k))) + 1

    emb = sd.get(prefix + "shared.weight", sd.get(prefix + "encoder.embed_tokens.weight"))
    bias = sd[prefix + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    heads = int(bias.shape[1])
    inner = int(sd[prefix + "encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0])
    if f"{prefix}encoder.block.0.layer.1.DenseReluDense.wi_0.weight" not in sd:
        raise ValueError("a T5 without gated feed-forward (wi_0/wi_1) is not T5 v1.1 (Flux/SD3's T5-XXL)")
    cfg = T5Config(vocab_size=int(emb.shape[0]), d_model=int(emb.shape[1]), d_kv=inner // heads,
                   d_ff=int(sd[prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]),
                   num_layers=n_blocks(), num_heads=heads, relative_attention_num_buckets=int(bias.shape[0]),
                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False,
                   use_cache=False, tie_word_embeddings=False)
    cfg.dense_act_fn = "gelu_pytorch_tanh"  # ComfyUI's (transformers' "gated-gelu" means the tanh GELU too)
    return cfg


def is_t5(sd, prefix: str = "") -> bool:
    return f"{prefix}encoder.block.0.layer.0.SelfAttention.k.weight" in sd


def build_t5(sd: dict[str, torch.Tensor], prefix: str, *, storage: torch.dtype, compute: torch.dtype, device):
    """transformers' T5EncoderModel from a T5 state dict under `prefix` (t5xxl_*.safetensors keys)."""
    from transformers import T5EncoderModel

    cfg = _t5_config(sd, prefix)
    state = {k[len(prefix):]: v.to(storage) for k, v in sd.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if k.startswith(("shared.", "encoder."))}
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:  # saved tied the other way
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    with torch.device("meta"):
        model = T5EncoderModel(cfg)
    own = model.state_dict()
    if "encoder.embed_tokens.weight" in own and "encoder.embed_tokens.weight" not in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"T5 weights do not match: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} "
                         f"unexpected (e.g. {unexpected[:3]})")
    model.load_state_dict(state, strict=True, assign=True)
    model.encoder.embed_tokens = model.shared
    if storage != compute:
        from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

        for m in model.modules():
            if type(m) is T5DenseGatedActDense:
                m.__class__ = _gated_ff_class()
    return cast_on_use(model, storage, compute).to(device).eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def _gated_ff_class():
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

    class GatedFeedForward(T5DenseGatedActDense):
        """T5's gated feed-forward without transformers' cast of the hidden state to `wo`'s stored dtype: with
        weights cast on use, the product stays in the compute dtype (as in ComfyUI)."""

        def forward(self, hidden_states):
            h = self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states)
            return self.wo(self.dropout(h))

    return GatedFeedForward


class T5Encoder:
    """A T5 encoder with ComfyUI's prompt conventions; `min_length` 256 (Flux) or 77 (SD3)."""

    def __init__(self, model, compute_dtype: torch.dtype, min_length: int = FLUX_MIN_LENGTH) -> None:
        self.model = model
        self.compute_dtype = compute_dtype
        self.min_length = min_length
        self.width = int(model.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_tokens(self, tokens: list[tuple], clip_skip: int | None = None) -> torch.Tensor:
        """[(token or vector, weight), ...] -> (1, L, D) float32 on the CPU. `clip_skip` (CLIPSetLastLayer's
        value, which ComfyUI applies to T5 too): -2 is the output of the second-to-last block, through the final
        norm; -1, None or a value deeper than the model: the last."""
        rows, vectors = [[]], []
        for t, _ in tokens:
            if isinstance(t, torch.Tensor):
                if t.shape[-1] != self.width:
                    warnings.warn(f"an embedding vector of width {t.shape[-1]} does not fit T5 (width {self.width});"
                                  " it is left out", stacklevel=3)
                    continue
                vectors.append((0, len(rows[0]), t))
                rows[0].append(PAD_TOKEN)
            else:
                rows[0].append(int(t))
        rows[0] += [PAD_TOKEN] * (len(tokens) - len(rows[0]))
        weighted = any(w != 1.0 for _, w in tokens)
        if weighted:
            rows.append([END_TOKEN] + [PAD_TOKEN] * (len(tokens) - 1))
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        hook = None
        if vectors:
            hook = self.model.shared.register_forward_hook(_put_vectors(vectors))
        layers = int(self.model.config.num_layers)
        deep = clip_skip is not None and -layers <= clip_skip <= -2
        try:
            out = self.model(input_ids=ids, output_hidden_states=deep)
            z = (self.model.encoder.final_layer_norm(out.hidden_states[clip_skip]) if deep
                 else out.last_hidden_state).float()
        finally:
            if hook is not None:
                hook.remove()
        out = z[0].clone()
        if weighted:
            empty = z[1]
            w = torch.tensor([wt for _, wt in tokens], dtype=out.dtype, device=out.device)[:, None]
            sel = w[:, 0] != 1.0
            out[sel] = (out[sel] - empty[sel]) * w[sel] + empty[sel]
        return out[None].cpu()

    def encode(self, text: str, embeddings=None, clip_skip: int | None = None) -> torch.Tensor:
        return self.encode_tokens(t5_tokens(text, min_length=self.min_length, embeddings=embeddings,
                                            width=self.width), clip_skip)
