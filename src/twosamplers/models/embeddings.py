"""Textual-inversion embeddings: `embedding:name` in a prompt, resolved from an embeddings directory.

ComfyUI's behaviour, which this follows:
- `embedding:name`, `embedding:name.safetensors` or `embedding:sub/name` (at a segment's start or after
  whitespace): the file is looked up inside the directory as given, then with `.safetensors`, `.pt`, `.bin`
  appended; nothing outside the directory is read. The name ends at whitespace, `<` or `[`; a name with
  commas around it (`embedding:name,`) is tried without them and the commas are read as text.
- The vectors come from `string_to_param` (A1111 .pt files), a list of dicts (vectors of the encoder's width),
  the encoder's own key (`clip_l`, `clip_h`, `clip_g`: SDXL files hold one per encoder), or else the
  file's first tensor. A vector of the wrong width for an encoder is skipped with a warning.
- An unknown name is dropped with a warning (ComfyUI: "embedding:... does not exist, ignoring").
- Pickle files (.pt/.bin) are read only with allow_pickle, then with torch.load(weights_only=True).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

from .sd_loading import CheckpointError, PickleNotAllowedError

EMBEDDING_PREFIX = "embedding:"
EXTENSIONS = (".safetensors", ".pt", ".bin")
_EMBEDDING_SPLIT = re.compile(r"(?<=\s)" + re.escape(EMBEDDING_PREFIX))


class EmbeddingError(CheckpointError):
    """An embeddings directory or file that cannot be used."""


class EmbeddingLibrary:
    """The embeddings of one directory (or of several, searched in order, as ComfyUI searches every
    `embeddings` folder), read on first use and kept."""

    def __init__(self, directory: str | os.PathLike | list | tuple, *, allow_pickle: bool = False) -> None:
        dirs = list(directory) if isinstance(directory, (list, tuple)) else [directory]
        resolved = []
        for item in dirs:
            d = Path(item).expanduser()
            if not d.is_dir():
                raise EmbeddingError(f"embeddings directory not found: {d}")
            resolved.append(d.resolve())
        self.directories: tuple[Path, ...] = tuple(resolved)
        self.allow_pickle = allow_pickle
        self._files: dict[Path, object] = {}

    @classmethod
    def of_folders(cls, folders, *, allow_pickle: bool = False) -> EmbeddingLibrary:
        """A library over those of `folders` that exist (none may: every name is then unknown, and dropped
        with a warning, as ComfyUI drops it)."""
        return cls([d for d in folders if Path(d).expanduser().is_dir()], allow_pickle=allow_pickle)

    @property
    def directory(self) -> Path | None:
        """The first directory searched (None for a library without any)."""
        return self.directories[0] if self.directories else None

    def __repr__(self) -> str:
        if len(self.directories) == 1:
            return f"EmbeddingLibrary({str(self.directories[0])!r})"
        return f"EmbeddingLibrary({[str(d) for d in self.directories]!r})"

    def where(self) -> str:
        """The searched directories, for messages."""
        return ", ".join(str(d) for d in self.directories) or "no embeddings folder"

    def find(self, name: str) -> Path | None:
        """The file `name` names inside a directory (as given, then with each extension), or None."""
        for directory in self.directories:
            for candidate in [name] + [name + ext for ext in EXTENSIONS]:
                try:
                    p = (directory / candidate).resolve()
                except (OSError, ValueError):
                    continue
                if p.is_relative_to(directory) and p.is_file():
                    return p
        return None

    def _read(self, path: Path):
        if path in self._files:
            return self._files[path]
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            try:
                obj = load_file(str(path), device="cpu")
            except Exception as e:  # safetensors raises several types for damaged files
                raise EmbeddingError(f"embedding {path}: cannot be read ({type(e).__name__}: {e})") from None
        else:
            if not self.allow_pickle:
                raise PickleNotAllowedError(
                    f"embedding {path} is a pickle file, which can run code when loaded; refused. Convert it to "
                    ".safetensors, or pass --allow-pickle (allow_pickle=True) if you trust it (it is then loaded "
                    "with torch.load(weights_only=True)).")
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises several types for bad pickles
                raise EmbeddingError(f"embedding {path}: cannot be read as a weights-only torch file "
                                     f"({type(e).__name__})") from None
        self._files[path] = obj
        return obj

    def vectors(self, name: str, key: str | None, width: int) -> torch.Tensor | None:
        """(n, width) float32 vectors of embedding `name` for the encoder whose file key is `key`; None when
        no such file exists."""
        path = self.find(name)
        if path is None:
            return None
        emb = _select(self._read(path), key, width, path)
        emb = emb.reshape(-1, emb.shape[-1]).float() if emb.ndim > 1 else emb.float()[None]
        for i in range(emb.shape[0]):
            if not bool(torch.isfinite(emb[i]).all()):
                raise EmbeddingError(f"embedding {path}: vector {i} holds NaN or infinite values")
        return emb


def _select(obj, key: str | None, width: int, path: Path) -> torch.Tensor:
    if isinstance(obj, dict) and "string_to_param" in obj:
        values = list(obj["string_to_param"].values())
        if values and isinstance(values[0], torch.Tensor):
            return values[0]
    if isinstance(obj, list):
        rows = [t.reshape(-1, t.shape[-1]) for item in obj if isinstance(item, dict) for t in item.values()
                if isinstance(t, torch.Tensor) and t.shape[-1] == width]
        if rows:
            return torch.cat(rows, dim=0)
    if isinstance(obj, dict):
        if key is not None and isinstance(obj.get(key), torch.Tensor):
            return obj[key]
        for v in obj.values():
            if isinstance(v, torch.Tensor):
                return v
    raise EmbeddingError(f"embedding {path}: no embedding vectors found in the file")


def split_embedding_words(segment: str) -> list[str]:
    """A prompt segment cut before every `embedding:` that follows whitespace (ComfyUI 0.30): the text before
    the first, then pieces that start with `embedding:`; empty pieces dropped."""
    parts = _EMBEDDING_SPLIT.split(segment)
    pieces = [parts[0]] + [EMBEDDING_PREFIX + p for p in parts[1:]]
    return [p for p in pieces if p != ""]


def embedding_for_word(library: EmbeddingLibrary | None, text: str, key: str | None,
                       width: int) -> tuple[torch.Tensor | None, str]:
    """(vectors or None, leftover text) for the text after `embedding:`, as ComfyUI 0.30 resolves it: the name
    is the first whitespace-separated word, cut before a `<` or `[` (the rest joins the leftover); a name not
    found is tried without its surrounding commas (the commas then start the leftover). An unknown name is
    dropped with a warning; without a library every name is unknown."""
    words = text.split()
    name = words[0] if words else ""
    leftover = " ".join(words[1:])
    cut = re.search(r"[<\[]", name)
    if cut is not None:
        leftover = name[cut.start():] + (" " + leftover if leftover else "")
        name = name[:cut.start()]
    emb = _lookup(library, name, key, width)
    if emb is None:
        stripped = name.strip(",")
        if len(stripped) < len(name):
            emb = _lookup(library, stripped, key, width)
            leftover = f"{name[len(stripped):]} {leftover}"
    if emb is None:
        if library is None:
            warnings.warn(f"no embeddings directory was given: {EMBEDDING_PREFIX}{name} is dropped, as ComfyUI drops "
                          "an embedding it cannot find", stacklevel=4)
        else:
            warnings.warn(f"embedding {EMBEDDING_PREFIX}{name} does not exist (searched: {library.where()}); the "
                          "word is dropped, as ComfyUI drops it", stacklevel=4)
    elif emb.shape[-1] != width:
        warnings.warn(f"embedding {EMBEDDING_PREFIX}{name} has vectors of width {emb.shape[-1]}, this text encoder "
                      f"takes {width}; ignored for it", stacklevel=4)
        emb = None
    return emb, leftover


def _lookup(library: EmbeddingLibrary | None, name: str, key: str | None, width: int) -> torch.Tensor | None:
    if library is None or not name:
        return None
    return library.vectors(name, key, width)
