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
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                im.load()  # a truncated file fails here
                return dict(getattr(im, "text", None) or {})
        if path.suffix == ".latent":
            return _safetensors_metadata(path)
    except (OSError, ValueError, SyntaxError, struct.error):
        return None
    return None


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if path.stat().st_size != 8 + n + max(ends, default=0):  # truncated or padded: not a finished file
        return None
    return dict(header.get("__metadata__") or {})
