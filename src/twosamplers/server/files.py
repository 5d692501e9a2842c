"""The input, output and temp folders as `/view`, `/upload/image` and `/upload/mask` see them.

Every name a client gives is checked before it touches the disk: a file name is one path component (no `/`,
`\\`, NUL, no leading dot), a subfolder is relative with no `..` or hidden component, and the resolved path
(symbolic links followed) must lie inside its folder. Uploads must be images that Pillow decodes (PNG, JPEG,
WebP, BMP, GIF, TIFF), with an image file extension, at most `max_upload_bytes` and MAX_IMAGE_SIDE pixels a
side. An upload never replaces a file this server did not write: `overwrite` applies only to files it
uploaded itself; any other name clash gets ComfyUI's "name (1).png" numbering (or the existing name when the
bytes are the same). Files are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .._checks import MAX_IMAGE_SIDE
from .._files import atomic_write
from ..nodes.folders import IMAGE_EXTENSIONS

KINDS = ("input", "output", "temp")
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
MAX_NAME = 255
MAX_DEPTH = 8
DANGEROUS_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/javascript", "application/javascript",
                   "text/xml", "application/xml", "text/css")
ANNOTATION = re.compile(r"^(.*?)\s*\[(input|output|temp)\]$")


class FileAreaError(Exception):
    """A refused file request: `status` is the HTTP status (400 bad name, 403 outside the folder, 404, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_name(name, what: str = "filename") -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or len(name) > MAX_NAME:
        raise FileAreaError(400, f"{what} must be a non-empty file name of at most {MAX_NAME} characters")
    if any(c in name for c in "/\\\0") or name.startswith("."):
        raise FileAreaError(400, f"{what} {name!r} must be a plain file name (no folders, no leading dot)")
    return name


def check_subfolder(sub) -> str:
    if sub is None or sub == "":
        return ""
    if not isinstance(sub, str) or "\\" in sub or "\0" in sub or sub.startswith("/"):
        raise FileAreaError(400 if not isinstance(sub, str) else 403, f"subfolder {sub!r} is not a relative folder")
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if any(p == ".." or p.startswith(".") for p in parts) or len(parts) > MAX_DEPTH:
        raise FileAreaError(403, f"subfolder {sub!r} must stay inside its folder (no '..', no hidden folders)")
    return "/".join(parts)


def content_type(name: str) -> tuple[str, bool]:
    """(type to send, whether it must be downloaded rather than shown: types a browser would run)."""
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind in DANGEROUS_TYPES:
        return "application/octet-stream", True
    return kind, False


@dataclass
class FileAreas:
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    max_upload_bytes: int = 100 * 1024 * 1024
    created: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def folder(self, kind) -> Path:
        if kind in (None, ""):
            kind = "output"
        if kind not in KINDS:
            raise FileAreaError(400, f"type must be one of {', '.join(KINDS)}, got {kind!r}")
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}[kind]

    def path(self, kind, subfolder, filename, must_exist: bool = True) -> Path:
        """The file `filename` in `subfolder` of the folder `kind`, checked to lie inside it."""
        if isinstance(filename, str):
            m = ANNOTATION.match(filename)
            if m:
                filename, kind = m.group(1), m.group(2)
        name = check_name(filename)
        root = self.folder(kind)
        sub = check_subfolder(subfolder)
        target = root / sub / name if sub else root / name
        real_root = root.resolve()
        real = target.resolve()
        if real != real_root and real_root not in real.parents:
            raise FileAreaError(403, f"{sub + '/' if sub else ''}{name} is outside the {kind} folder")
        if must_exist and not real.is_file():
            raise FileAreaError(404, f"no file {sub + '/' if sub else ''}{name} in the {kind} folder")
        return target

    # ------------------------------------------------------------------ uploads
    def check_image(self, data: bytes) -> str:
        """The Pillow format of an uploaded image; refuses anything else."""
        from PIL import Image, UnidentifiedImageError

        if len(data) > self.max_upload_bytes:
            raise FileAreaError(413, f"upload of {len(data)} bytes is over the limit of {self.max_upload_bytes}")
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, size = im.format, im.size
                if fmt not in UPLOAD_FORMATS:
                    raise FileAreaError(400, f"uploads must be images ({', '.join(UPLOAD_FORMATS)}), got {fmt}")
                if max(size) > MAX_IMAGE_SIDE:
                    raise FileAreaError(400, f"image of {size[0]}x{size[1]} is over {MAX_IMAGE_SIDE} pixels a side")
                im.verify()
        except FileAreaError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise FileAreaError(400, f"the upload is not a readable image: {' '.join(str(e).split())}") from None
        return fmt

    def save_upload(self, data: bytes, filename, kind="input", subfolder="", overwrite: bool = False,
                    writer=None) -> dict:
        """Store an uploaded image; returns ComfyUI's {"name", "subfolder", "type"}. `writer(tmp_path)` writes
        something else than `data` (the mask upload's composited image)."""
        kind = kind or "input"
        name = check_name(filename)
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            raise FileAreaError(400, f"{name!r}: uploads must have an image file extension "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
        self.check_image(data)
        sub = check_subfolder(subfolder)
        self.path(kind, sub, name, must_exist=False)  # inside the folder
        with self.lock:
            folder = self.folder(kind) / sub if sub else self.folder(kind)
            folder.mkdir(parents=True, exist_ok=True)
            target = self.path(kind, sub, name, must_exist=False)
            stem, ext = Path(name).stem, Path(name).suffix
            i = 1
            while target.exists():
                if overwrite and target.resolve() in self.created:
                    break
                if writer is None and target.is_file() and _digest(target.read_bytes()) == _digest(data):
                    return {"name": target.name, "subfolder": sub, "type": kind}
                target = folder / f"{stem} ({i}){ext}"
                i += 1
            atomic_write(target, writer or (lambda tmp: Path(tmp).write_bytes(data)))
            self.created.add(target.resolve())
        return {"name": target.name, "subfolder": sub, "type": kind}

    def save_mask(self, data: bytes, filename, kind, subfolder, overwrite: bool, original_ref) -> dict:
        """ComfyUI's mask upload: the original image (`original_ref`) with the upload's alpha channel."""
        from PIL import Image, PngImagePlugin

        try:
            ref = json.loads(original_ref) if isinstance(original_ref, str) else original_ref
        except ValueError:
            raise FileAreaError(400, "original_ref must be JSON {filename, subfolder, type}") from None
        if not isinstance(ref, dict):
            raise FileAreaError(400, "original_ref must be JSON {filename, subfolder, type}")
        original = self.path(ref.get("type", "output"), ref.get("subfolder", ""), ref.get("filename"))
        self.check_image(data)

        def write(tmp: str) -> None:
            with Image.open(original) as im, Image.open(io.BytesIO(data)) as mask:
                info = PngImagePlugin.PngInfo()
                for k, v in (getattr(im, "text", None) or {}).items():
                    info.add_text(k, v)
                out = im.convert("RGBA")
                alpha = mask.convert("RGBA").getchannel("A")
                out.putalpha(alpha if alpha.size == out.size else alpha.resize(out.size))
                out.save(tmp, format="PNG", compress_level=4, pnginfo=info)

        return self.save_upload(data, filename, kind, subfolder, overwrite, writer=write)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["FileAreaError", "FileAreas", "KINDS", "check_name", "check_subfolder", "content_type"]
