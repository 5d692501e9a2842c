"""ComfyUI's own editor as our page, when `comfyui-frontend-package` is installed (optional; its own licence,
never vendored), and the small set of endpoints it needs to start: settings, user data (saved workflows,
templates it keeps), the users and extensions lists, i18n and a few empty catalogues.

User data lives in `OUTPUT_DIR/.twosamplers/user/default/` (settings in `comfy.settings.json` there), every path
checked to stay inside it; `/view` never serves it (hidden folders are refused). Files are written atomically.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from urllib.parse import unquote

from .._files import atomic_write
from .files import FileAreaError

SETTINGS_FILE = "comfy.settings.json"
MAX_USERDATA_BYTES = 64 * 1024 * 1024


def frontend_root() -> Path | None:
    """The static folder of the installed `comfyui_frontend_package`, or None."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(comfyui_frontend_package.__file__).parent / "static"
    return root if (root / "index.html").is_file() else None


def frontend_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("comfyui_frontend_package")
    except Exception:  # not installed, or installed without metadata
        return None


def extension_scripts(root: Path | None) -> list[str]:
    """The frontend's own extension scripts, as ComfyUI lists them (/extensions/...js)."""
    if root is None or not (root / "extensions").is_dir():
        return []
    return sorted("/" + p.relative_to(root).as_posix() for p in (root / "extensions").rglob("*.js"))


class UserData:
    """One user's files (ComfyUI's single-user mode: the "default" user)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = threading.Lock()

    def path(self, rel: str, must_exist: bool = False) -> Path:
        rel = unquote(rel) if "%" in rel else rel
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or any(p == ".." or "\0" in p for p in parts) or rel.startswith("/"):
            raise FileAreaError(403, f"user data path {rel!r} must stay inside the user folder")
        target = self.root.joinpath(*parts)
        real_root = self.root.resolve()
        real = target.resolve()
        if real_root not in real.parents:
            raise FileAreaError(403, f"user data path {rel!r} must stay inside the user folder")
        if must_exist and not real.is_file():
            raise FileAreaError(404, f"no user data file {rel!r}")
        return target

    def info(self, path: Path) -> dict:
        st = path.stat()
        return {"path": path.relative_to(self.root).as_posix(), "size": st.st_size,
                "modified": int(st.st_mtime * 1000), "created": int(st.st_ctime * 1000)}

    def listing(self, directory: str, recurse: bool, full_info: bool, split: bool) -> list:
        base = self.path(directory)
        if not base.is_dir():
            raise FileAreaError(404, f"no user data folder {directory!r}")
        files = sorted(p for p in (base.rglob("*") if recurse else base.glob("*")) if p.is_file())
        out = []
        for p in files:
            if full_info:
                out.append({**self.info(p), "path": p.relative_to(base).as_posix()})
            else:
                rel = p.relative_to(base).as_posix()
                out.append([rel, *rel.split("/")] if split else rel)
        return out

    def write(self, rel: str, data: bytes, overwrite: bool) -> Path:
        if len(data) > MAX_USERDATA_BYTES:
            raise FileAreaError(413, f"user data file over {MAX_USERDATA_BYTES} bytes")
        target = self.path(rel)
        with self.lock:
            if target.exists() and not overwrite:
                raise FileAreaError(409, "File already exists")
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
        return target

    def move(self, src: str, dest: str, overwrite: bool) -> Path:
        a, b = self.path(src, must_exist=True), self.path(dest)
        with self.lock:
            if b.exists() and not overwrite:
                raise FileAreaError(409, "File already exists")
            b.parent.mkdir(parents=True, exist_ok=True)
            os.replace(a, b)
        return b

    def delete(self, rel: str) -> None:
        p = self.path(rel, must_exist=True)
        with self.lock:
            p.unlink()

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict:
        p = self.root / SETTINGS_FILE
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_settings(self, values: dict) -> None:
        with self.lock:
            merged = {**self.settings(), **values}
            self.root.mkdir(parents=True, exist_ok=True)
            text = json.dumps(merged, indent=2).encode("utf-8")
            atomic_write(self.root / SETTINGS_FILE, lambda tmp: Path(tmp).write_bytes(text))


def no_frontend_page(routes: list[str]) -> str:
    """What `/` shows without the frontend package: how to install it, and the API."""
    items = "".join(f"<li><code>{r}</code></li>" for r in routes)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>twosamplers serve</title></head><body>"
            "<h1>twosamplers serve</h1><p>ComfyUI's HTTP and websocket API on the twosamplers engine. "
            "For ComfyUI's graph editor on this page, install its frontend package (optional, its own licence): "
            "<code>pip install comfyui-frontend-package</code>, then restart <code>twosamplers serve</code>.</p>"
            f"<h2>API</h2><ul>{items}</ul><p>Each path is also served under <code>/api</code>.</p></body></html>")


__all__ = ["UserData", "extension_scripts", "frontend_root", "frontend_version", "no_frontend_page"]
