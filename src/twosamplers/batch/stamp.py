"""Text stamps in finished outputs: the batch hash (and the list of a job's files) inside the files themselves.

A batch decides "done" from the outputs, not from its manifest, so each output carries the hash of the job that
wrote it. Workflow outputs are written by the workflow's own nodes (SaveImage's PNG, SaveLatent's `.latent`),
so the stamp is added to their bytes afterwards without re-encoding anything: a PNG gets `tEXt` chunks before
its `IEND` chunk, a `.latent` (safetensors) gets entries in its header's `__metadata__`. Pixels, tensors and
the workflow's own chunks (`prompt`, `workflow`) stay byte for byte as the node wrote them.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

JOB_HASH_KEY = "twosamplers-job"  # the hash of the job that wrote the file
OUTPUTS_KEY = "twosamplers-outputs"  # a workflow job's files (JSON list of names): all of them make it done
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STAMPABLE = (".png", ".latent")


def stamp(data: bytes, suffix: str, text: dict[str, str]) -> bytes:
    """`data` (a PNG or a .latent file's bytes) with the `text` entries added."""
    if suffix == ".png":
        return _stamp_png(data, text)
    if suffix == ".latent":
        return _stamp_safetensors(data, text)
    raise ValueError(f"cannot stamp a {suffix or 'suffix-less'} file (known: {', '.join(STAMPABLE)})")


def _stamp_png(data: bytes, text: dict[str, str]) -> bytes:
    iend = data.rfind(b"IEND")
    if not data.startswith(PNG_SIGNATURE) or iend < 12:
        raise ValueError("not a PNG file")
    chunks = b""
    for key, value in text.items():
        body = key.encode("latin-1") + b"\0" + value.encode("latin-1")
        chunks += struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    start = iend - 4  # the IEND chunk's length field
    return data[:start] + chunks + data[start:]


def _stamp_safetensors(data: bytes, text: dict[str, str]) -> bytes:
    if len(data) < 8:
        raise ValueError("not a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = {**(header.get("__metadata__") or {}), **text}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def read_stamp(path: str | os.PathLike) -> dict[str, str] | None:
    """The text entries of a complete, readable PNG or .latent file; None for anything else."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file():  # only the batch's own files: ordinary files it renamed there
            return None
        if path.suffix == ".png":
            import warnings

            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()  # a truncated file fails here
                    text = dict(getattr(im, "text", None) or {})
            return {str(k): str(v) for k, v in text.items()}
        if path.suffix == ".latent":
            return _safetensors_metadata(path)
    except Exception:  # a damaged, planted or hostile file is simply not a finished output: the job is redone
        return None
    return None


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100_000_000):
            return None
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        return None
    ends = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offsets = v.get("data_offsets") if isinstance(v, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return None
        ends.append(offsets[1])
    if size != 8 + n + max(ends, default=0):  # truncated or padded: not a finished file
        return None
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else None
