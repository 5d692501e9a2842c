"""Prompt text -> CLIP token chunks -> CONDITIONING, following ComfyUI's conventions.

Written from the description of ComfyUI's behaviour (docs/sd-backend.md), not from its code:
- Emphasis: `(text)` multiplies the weight by 1.1 per level of nesting, `(text:1.3)` sets it to 1.3 (the
  number replaces the weight, it does not multiply the outer one), `\\(` and `\\)` are literal brackets.
  Square brackets are plain text, as in ComfyUI (A1111's `[word]` de-emphasis is not a ComfyUI feature).
- Each weighted segment is cut before every `embedding:` that follows whitespace, and each piece is tokenized
  whole (no start/end tokens; ComfyUI 0.30 no longer splits on spaces first); chunks are start token, up to 75
  tokens, end token, padded to 77. A piece that does not fit in the current chunk starts the next one, unless
  it is 8 tokens or longer, then it is split across chunks.
- Each chunk is encoded with an extra "empty" row (start, end, pad...) when any weight differs from 1, and a
  weighted token becomes empty + (token - empty) * weight. Chunks are concatenated along the token axis;
  the pooled output is the first chunk's.
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .embeddings import EMBEDDING_PREFIX, embedding_for_word, split_embedding_words

START_TOKEN = 49406
END_TOKEN = 49407
MAX_LENGTH = 77
MAX_WORD_LENGTH = 8
EMPHASIS = 1.1

Token = tuple[int | torch.Tensor, float]  # a token id, or a textual-inversion vector, with its weight


# ---------------------------------------------------------------------------------------------- weights
def _split_top_level(text: str) -> list[str]:
    """Split `text` into plain runs and top-level "(...)" groups, as ComfyUI does: an unclosed group runs to
    the end, and an unmatched ")" drives the depth negative, so brackets after it stay plain text."""
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            if depth == 0 and cur:
                parts.append(cur)
                cur = ""
            cur += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            cur += ch
            if depth == 0:
                parts.append(cur)
                cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _split_top_level(text):
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner = part[1:-1]
            w = weight * EMPHASIS
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    w = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out.extend(_weights(inner, w))
        else:
            out.append((part, weight))
    return out


_ESC = {"\\(": "\0\1", "\\)": "\0\2"}


def parse_prompt_weights(text: str) -> list[tuple[str, float]]:
    """ComfyUI-style emphasis: [(segment, weight), ...] with escapes resolved in the segments."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    for k, v in _ESC.items():
        text = text.replace(k, v)
    out = []
    for seg, w in _weights(text, 1.0):
        out.append((seg.replace("\0\1", "(").replace("\0\2", ")"), w))
    return out


# -------------------------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    # The reversible byte -> printable character table of GPT-2/CLIP BPE.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order: the printable bytes first, then the remapped ones


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's 49408-token vocabulary and its 48894 merges, from the shipped merge list."""
    data = resources.files("twosamplers").joinpath("data/clip/bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base] + ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab_list)}, merges


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """A `transformers.CLIPTokenizer` built offline from the shipped CLIP merge list."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory(prefix="twosamplers-clip-") as d:
        Path(d, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(d, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tok = CLIPTokenizer.from_pretrained(d)
    if tok.convert_tokens_to_ids("<|endoftext|>") != END_TOKEN:
        raise RuntimeError("the shipped CLIP vocabulary is damaged")
    return tok


@dataclass(frozen=True)
class TokenizerSpec:
    """How one text encoder's prompts are chunked (ComfyUI: CLIP-L pads with the end token, OpenCLIP with 0)."""

    tokenizer: object
    pad_token: int = END_TOKEN
    start_token: int = START_TOKEN
    end_token: int = END_TOKEN
    max_length: int = MAX_LENGTH
    max_word_length: int = MAX_WORD_LENGTH

    def word_tokens(self, word: str) -> list[int]:
        return list(self.tokenizer(word, add_special_tokens=False)["input_ids"])

    def tokenize(self, text: str, embeddings=None, *, embedding_key: str | None = None,
                 width: int | None = None) -> list[list[Token]]:
        """Prompt -> chunks of (token, weight), each `max_length` long, as ComfyUI 0.30 forms them: each weighted
        segment is cut before every `embedding:` that follows a space; an `embedding:NAME` piece becomes the
        vectors of that embedding in `embeddings` (an EmbeddingLibrary; `embedding_key` and `width` pick an
        encoder's vectors in multi-encoder files; an unknown name is dropped with a warning) and the text after
        the name is tokenized on; every other piece is tokenized whole and kept in one chunk unless it is
        `max_word_length` tokens or longer."""
        return self.chunks(self.token_groups(text, embeddings, embedding_key=embedding_key, width=width))

    def token_groups(self, text: str, embeddings=None, *, embedding_key: str | None = None,
                     width: int | None = None) -> list[list[Token]]:
        """The prompt's tokens in the groups that chunking keeps together (here: one per word)."""
        groups: list[list[Token]] = []
        for segment, weight in parse_prompt_weights(text):
            for piece in split_embedding_words(segment):
                if piece.startswith(EMBEDDING_PREFIX):
                    emb, leftover = embedding_for_word(embeddings, piece[len(EMBEDDING_PREFIX):].strip("\n"),
                                                       embedding_key, width or 0)
                    if emb is not None:
                        groups.append([(emb[i], weight) for i in range(emb.shape[0])])
                    if not leftover:
                        continue
                    piece = leftover
                groups.append([(t, weight) for t in self.word_tokens(piece)])
        return groups

    def chunks(self, groups: list[list[Token]]) -> list[list[Token]]:
        """Token groups -> chunks of `max_length`: start token, tokens, end token, padding. A group that does not
        fit moves to the next chunk, unless it has `max_word_length` tokens or more: then it is split."""
        body = self.max_length - 1  # room before the end token
        chunks: list[list[Token]] = []
        chunk: list[Token] = [(self.start_token, 1.0)]
        for group in groups:
            long_word = len(group) >= self.max_word_length
            while group:
                if len(chunk) + len(group) > body:
                    room = body - len(chunk)
                    if long_word:
                        chunk += group[:room]
                        group = group[room:]
                        chunk.append((self.end_token, 1.0))
                    else:
                        chunk.append((self.end_token, 1.0))
                        chunk += [(self.pad_token, 1.0)] * room
                    chunks.append(chunk)
                    chunk = [(self.start_token, 1.0)]
                else:
                    chunk += group
                    group = []
        chunk.append((self.end_token, 1.0))
        chunk += [(self.pad_token, 1.0)] * (self.max_length - len(chunk))
        chunks.append(chunk)
        return chunks

    def empty_tokens(self, length: int) -> list[int]:
        return [self.start_token, self.end_token] + [self.pad_token] * (length - 2)


# ---------------------------------------------------------------------------------------------- encoder
class ClipTextEncoder:
    """One CLIP text model (transformers `CLIPTextModel` or `CLIPTextModelWithProjection`) with ComfyUI's
    layer choice.

    layer_idx None: the last layer's output after the final layer norm; a negative int: the output of that
    layer (-1 last, -2 penultimate, ...), passed through the final layer norm when `layer_norm_hidden_state`.
    `dropped_layers` counts trailing layers a diffusers folder removed (SD2 keeps 23 of OpenCLIP's 24), so
    that layer indices keep meaning the same as on the full model. `projected_pooled`: pooled output through
    the text projection (SDXL's CLIP-G).
    """

    def __init__(self, model, spec: TokenizerSpec, layer_idx: int | None = None, layer_norm_hidden_state: bool = True,
                 projected_pooled: bool = False, dropped_layers: int = 0, embedding_key: str | None = None) -> None:
        self.model = model
        self.embedding_key = embedding_key
        self.spec = spec
        self.layer_idx = layer_idx
        self.layer_norm_hidden_state = layer_norm_hidden_state
        self.projected_pooled = projected_pooled
        self.dropped_layers = dropped_layers

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers) + self.dropped_layers

    def _hidden(self, out, layer_idx: int | None) -> torch.Tensor:
        text_model = getattr(self.model, "text_model", self.model)  # transformers 5 flattened CLIPTextModel
        if layer_idx is None or abs(layer_idx) > self.num_layers:
            # ComfyUI: a CLIPSetLastLayer value deeper than the model falls back to the last layer
            return out.last_hidden_state
        if layer_idx >= 0:
            raise ValueError(f"clip_skip must be negative (-1 last layer, -2 penultimate, ...), got {layer_idx}")
        idx = layer_idx + self.dropped_layers
        if idx >= 0:
            raise ValueError(f"clip_skip {layer_idx} needs layers this model folder dropped; "
                             f"use -{self.dropped_layers + 1} or lower")
        h = out.hidden_states[idx]
        return text_model.final_layer_norm(h) if self.layer_norm_hidden_state else h

    @torch.no_grad()
    def encode_tokens(self, chunks: list[list[Token]], clip_skip: int | None = None):
        """-> (cond (1, 77 * n_chunks, D) float32 on CPU, pooled (1, P) float32 on CPU)."""
        layer_idx = self.layer_idx if clip_skip is None else clip_skip
        weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
        rows, vectors = self._rows(chunks)
        if weighted:
            rows.append(self.spec.empty_tokens(max(len(r) for r in rows)))
        device = self.model.device
        ids = torch.tensor(rows, dtype=torch.long, device=device)
        hook = None
        if vectors:
            hook = self._token_embedding().register_forward_hook(_put_vectors(vectors))
        try:
            out = self.model(input_ids=ids, output_hidden_states=True)
        finally:
            if hook is not None:
                hook.remove()
        z = self._hidden(out, layer_idx).float()
        if self.projected_pooled:
            pooled = out.text_embeds
        else:
            pooled = out.pooler_output
        pooled = pooled[0:1].float().cpu()
        pieces = []
        for k, chunk in enumerate(chunks):
            zk = z[k].clone()
            if weighted:
                empty = z[-1]
                w = torch.tensor([wt for _, wt in chunk], dtype=zk.dtype, device=zk.device)[:, None]
                sel = w[:, 0] != 1.0
                zk[sel] = (zk[sel] - empty[sel]) * w[sel] + empty[sel]
            pieces.append(zk)
        return torch.cat(pieces, dim=0)[None].cpu(), pooled

    def _token_embedding(self) -> torch.nn.Module:
        return getattr(self.model, "text_model", self.model).embeddings.token_embedding

    def _rows(self, chunks: list[list[Token]]) -> tuple[list[list[int]], list[tuple[int, int, torch.Tensor]]]:
        """Token ids per chunk, and (row, column, vector) for the embedding vectors. Vectors go in through the
        token-embedding layer's output; their id slot holds a placeholder. A vector of the wrong width is left
        out of its row, which is padded at the end (ComfyUI; the weights stay by position)."""
        width = int(self._token_embedding().weight.shape[1])
        rows, vectors = [], []
        for r, chunk in enumerate(chunks):
            row: list[int] = []
            for t, _ in chunk:
                if isinstance(t, torch.Tensor):
                    if t.shape[-1] != width:
                        warnings.warn(f"an embedding vector of width {t.shape[-1]} does not fit this text encoder "
                                      f"(width {width}); it is left out", stacklevel=4)
                        continue
                    vectors.append((r, len(row), t))
                    row.append(0)
                else:
                    row.append(int(t))
            row += [self.spec.pad_token] * (len(chunk) - len(row))
            rows.append(row)
        return rows, vectors

    def tokens(self, text: str, embeddings=None) -> list[list[Token]]:
        """The prompt's chunks for this encoder (embedding vectors of this encoder's width)."""
        width = int(self._token_embedding().weight.shape[1])
        return self.spec.tokenize(text, embeddings, embedding_key=self.embedding_key, width=width)

    def encode(self, text: str, clip_skip: int | None = None, embeddings=None):
        return self.encode_tokens(self.tokens(text, embeddings), clip_skip)


def _put_vectors(vectors: list[tuple[int, int, torch.Tensor]]):
    """A forward hook for the token-embedding layer that writes the embedding vectors into their slots."""
    def hook(module, args, out):
        out = out.clone()
        for r, c, v in vectors:
            out[r, c] = v.to(device=out.device, dtype=out.dtype)
        return out
    return hook


def normalize_clip_skip(clip_skip: int | None) -> int | None:
    """ComfyUI's CLIPSetLastLayer value (-1 last, -2 penultimate, ...); a positive n means -n (A1111 style)."""
    if clip_skip is None:
        return None
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip == 0:
        raise ValueError(f"clip_skip must be a non-zero int (-1 last layer, -2 penultimate, ...), got {clip_skip!r}")
    return clip_skip if clip_skip < 0 else -clip_skip
