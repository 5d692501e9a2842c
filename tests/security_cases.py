"""Helpers of the hostile-input catalogue (tests/test_security*.py): running the CLI with a watchdog, checking
"refused as promised" (exit 2, one line, no traceback), snapshots of the user's files, hostile PNGs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from twosamplers.job.imageio import MASK_KEY, SETTINGS_KEY, encode_mask_png

HANG_S = 120  # far beyond any case's honest run time on the shared 2-core machine; only a hang reaches it


def cli(args, timeout: float = HANG_S, stdin: str | None = None) -> tuple[int, str, str]:
    """`twosamplers ARGS` in-process, in a thread with a watchdog: (exit status, stdout, stderr). A hang fails."""
    from twosamplers.cli import main

    out, err = io.StringIO(), io.StringIO()
    box: dict = {}

    def target():
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                box["code"] = main([str(a) for a in args])
        except BaseException as e:  # noqa: BLE001 (a traceback escaping main is exactly what is tested)
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"twosamplers {' '.join(map(str, args))} hung for {timeout} s"
    assert "error" not in box, f"an exception escaped main: {box.get('error')!r}"
    return box["code"], out.getvalue(), err.getvalue()


def refused(result, *words: str) -> str:
    """The promise for bad input: exit status 2, one line on stderr ("twosamplers: error: ..."), no traceback."""
    code, _out, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("twosamplers: error: "), err
    assert "Traceback" not in err and "RecursionError" not in err, err
    for w in words:
        assert w in err, (w, err)
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every ordinary file under `root` (links not followed) -> its SHA-256: the user's files before and after."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_symlink() or not p.is_file():
                out[str(p)] = "special"
                continue
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def job_dict(**over) -> dict:
    """A small valid job (textures model, 16x16, one step) as a PNG records it, with `over` written over it raw
    (hostile values are not validated here)."""
    from twosamplers.job import Job

    d = {"base_prompt": "grass", "mask_prompt": "brick", "mask": "mask.png", "width": 16, "height": 16,
         "base_steps": 1, "mask_steps": 1}
    out = Job.from_dict(d, mask_tensor=disc(16)).to_dict()
    out.update(over)
    return out


def disc(n: int = 16):
    import torch

    r = torch.arange(n, dtype=torch.float32) + 0.5 - n / 2
    return ((r[:, None] ** 2 + r[None, :] ** 2) < (0.3 * n) ** 2).float()


def someone_elses_png(path: Path, settings: dict | str, *, mask: bool = True, extra: dict | None = None,
                      size: tuple[int, int] = (16, 16)) -> Path:
    """A PNG as someone else could make it: our settings chunk (any JSON, or raw text), the embedded mask, no
    origin tag (it was not rendered by this user)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(SETTINGS_KEY, settings if isinstance(settings, str) else json.dumps(settings))
    if mask:
        info.add_text(MASK_KEY, encode_mask_png(disc(16)), zip=True)
    for k, v in (extra or {}).items():
        info.add_text(k, v)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path, pnginfo=info)
    return path


def bomb_png(path: Path, side: int = 40000, text: dict | None = None) -> Path:
    """A tiny file that decodes to side x side pixels (a decompression bomb): one grey row, repeated by zlib."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\0" * (side + 1) * 64, 9)  # only 64 rows of data: it fails late, if ever decoded
    head = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    texts = b"".join(chunk(b"tEXt", k.encode() + b"\0" + v.encode()) for k, v in (text or {}).items())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + texts + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def write_png(path: Path, value: int = 128, size: int = 16) -> Path:
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def mask_png(path: Path, size: int = 16) -> Path:
    Image.fromarray((disc(size).numpy() * 255).astype(np.uint8)).save(path)
    return path
