"""Where node classes find files and write outputs: ComfyUI's models/, input/ and output/ folders.

`Folders` answers "which file is checkpoint X" (search folders per model kind, as ComfyUI's folder_paths and
extra_model_paths.yaml describe them), loads each model once per Folders object, and collects the files that
output nodes write. A workflow is someone else's document: every name it gives (ckpt_name, lora_name, an input
image) stays inside its folders, and the folders are listed once per Folders object (a workflow of thousands of
loader nodes lists them once, not once per node). Writes go through `Folders.write`: by default a file is
written at once (atomically); the workflow runner sets `defer_writes` so that nothing is written until every
node has run, and a failing workflow leaves no output; the queue is then written together (all files, then all
renames). Each output name is claimed by creating it exclusively, so two runs (or two SaveImage nodes) writing
the same prefix at once take different numbers instead of replacing each other's file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._files import atomic_write_all
from .._paths import name_in_folder, read_regular
from ..models.listing import MODEL_EXTENSIONS, model_files

MODEL_KINDS = ("checkpoints", "loras", "vae", "controlnet", "embeddings", "upscale_models", "clip", "unet",
               "diffusion_models", "text_encoders", "clip_vision", "configs", "wildcards", "hypernetworks", "gligen",
               "style_models")
CHECKPOINT_EXTENSIONS = MODEL_EXTENSIONS  # the one listing rule, shared with the web page (models/listing.py)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def embedded_models() -> tuple[str, ...]:
    """The models CheckpointLoaderSimple takes by name, without a file (the model registry's names)."""
    from ..models.registry import REGISTRY

    return tuple(REGISTRY)


def embedded_name(name: str) -> str | None:
    if isinstance(name, str) and name.strip().lower() in embedded_models():
        return name.strip().lower()
    return None


@dataclass
class PendingWrite:
    """One output file: `folder/prefix_NNNNN_.ext` once the counter is known."""

    subfolder: str
    filename: str
    extension: str
    write: Callable[[str], None]
    node_id: str | None = None
    kind: str = "image"
    path: Path | None = None


@dataclass
class Folders:
    """Search folders per model kind, the input folder, the output folder, and loaded models."""

    model_dirs: dict[str, list[Path]] = field(default_factory=dict)
    input_dir: Path = Path("input")
    output_dir: Path = Path(".")
    load_options: dict = field(default_factory=dict)
    preloaded: dict[str, object] = field(default_factory=dict)
    defer_writes: bool = False
    disable_pbar: bool | None = None
    pending: list[PendingWrite] = field(default_factory=list)
    cache: object = None  # a twosamplers.models.ModelCache (made on first use)
    listings: dict = field(default_factory=dict)  # (what, kind, extensions) -> names: each folder listed once
    _embeddings: object = None  # the EmbeddingLibrary of the embeddings folders (made on first use)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, models: str | os.PathLike | Mapping | None = None, comfyui: str | os.PathLike | None = None,
               input_dir: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None,
               extra_model_paths: str | os.PathLike | None = None, **kw) -> Folders:
        """models: a folder holding checkpoints/, loras/, ... (or a mapping ckpt_name -> loaded model);
        comfyui: a ComfyUI install (its models/, input/ and extra_model_paths.yaml)."""
        f = cls(**kw)
        if comfyui is not None:
            root = Path(comfyui).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(f"--comfyui folder not found: {root}")
            f.add_models_root(root / "models")
            f.input_dir = root / "input"
            yaml_path = root / "extra_model_paths.yaml"
            if yaml_path.is_file() and extra_model_paths is None:
                extra_model_paths = yaml_path
        if isinstance(models, Mapping):
            f.preloaded.update({str(k): v for k, v in models.items()})
        elif models is not None:
            root = Path(models).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(f"--models folder not found: {root}")
            f.add_models_root(root)
        if extra_model_paths is not None:
            f.add_extra_model_paths(extra_model_paths)
        if input_dir is not None:
            f.input_dir = Path(input_dir).expanduser()
        if output_dir is not None:
            f.output_dir = Path(output_dir).expanduser()
        return f

    def add_models_root(self, root: Path) -> None:
        """root/checkpoints, root/loras, ... become search folders (ComfyUI's models/ layout)."""
        for kind in MODEL_KINDS:
            self.model_dirs.setdefault(kind, []).append(root / kind)

    def add_extra_model_paths(self, path: str | os.PathLike) -> None:
        """Read ComfyUI's extra_model_paths.yaml: sections of `kind: folder(s)` relative to `base_path`."""
        try:
            import yaml
        except ImportError as e:
            raise ImportError("reading extra_model_paths.yaml needs PyYAML: pip install 'twosamplers[workflow]'") \
                from e
        path = Path(path)
        try:
            data = yaml.safe_load(read_regular(path, "extra_model_paths.yaml", 16 << 20).decode("utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:
            raise ValueError(f"{path} is not a readable extra_model_paths.yaml: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected sections of 'kind: folder' entries")
        for section in data.values():
            if not isinstance(section, dict):
                continue
            base = Path(os.path.expandvars(str(section.get("base_path", "")))).expanduser()
            if not base.is_absolute():
                base = path.parent / base
            for kind, value in section.items():
                if kind in ("base_path", "is_default") or not isinstance(value, str):
                    continue
                for line in value.splitlines():
                    line = line.strip()
                    if line:
                        p = Path(os.path.expandvars(line)).expanduser()
                        self.model_dirs.setdefault(kind, []).append(p if p.is_absolute() else base / p)

    # ------------------------------------------------------------------ files
    def search_dirs(self, kind: str) -> list[Path]:
        return list(self.model_dirs.get(kind, []))

    def list_models(self, kind: str, extensions: tuple[str, ...] = CHECKPOINT_EXTENSIONS,
                    marker: str = "model_index.json") -> list[str]:
        """Relative names of the model files (and diffusers folders) under the search folders of `kind`, listed
        once per Folders object."""
        key = ("models", kind, tuple(extensions), marker)
        if key not in self.listings:
            names = {n for d in self.search_dirs(kind) for n in model_files(d, tuple(extensions), marker)}
            self.listings[key] = sorted(names)
        return list(self.listings[key])

    def find_model(self, kind: str, name: str, marker: str = "model_index.json") -> Path | None:
        """The first file (or diffusers folder, a folder holding `marker`) called `name` under the search
        folders of `kind`. The name is read as a workflow stores it (`model_relpath`: subfolders, Windows
        backslashes); a name that would leave the folders ('..', '~', a drive, a NUL) is a ValueError."""
        if not isinstance(name, str) or not name:
            return None
        rel = model_relpath(name)
        if rel is None:
            raise ValueError(f"{kind} name {name!r} must be a name inside the {kind} folder (no '..', no '~', "
                             "no drive)")
            return None
        for d in self.search_dirs(kind):
            p = d / rel
            if p.is_file() or p.is_dir() and (p / marker).is_file():
                return p
        return None

    def resolve_checkpoint(self, name: str) -> Path | str:
        """ckpt_name -> a path, or the name of an embedded model / a preloaded model; clear error otherwise."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"ckpt_name must be a non-empty string, got {name!r}")
        if name in self.preloaded or embedded_name(name):
            return name
        return self.resolve_model("checkpoints", name, "checkpoint",
                                  f"; the embedded models {', '.join(embedded_models())} need no file")

    def resolve_model(self, kind: str, name: str, what: str, note: str = "") -> Path:
        """The file `name` (as the workflow names it: a subfolder, Windows backslashes) under the `kind` folders;
        a FileNotFoundError naming the workflow's own name, the folders searched and a same-named file
        elsewhere in them otherwise."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
        p = self.find_model(kind, name)
        if p is not None:
            return p
        dirs = self.search_dirs(kind)
        where = ", ".join(str(d) for d in dirs) or f"no {kind} folder given (use --models DIR or --comfyui DIR)"
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        others = [n for n in self.list_models(kind) if n.rsplit("/", 1)[-1] == base] if base else []
        hint = f"; a file of that name is at {kind}/{others[0]} (put that name in the workflow)" if others else ""
        raise FileNotFoundError(f"{what} {name!r} not found in {kind}/ (searched: {where}){hint}{note}")

    def load_vae(self, name: str):
        """VAELoader's file, through the ModelCache's process-wide VAE cache (`models.vae_file`)."""
        from ..models.vae_file import load_vae_file

        path = self.resolve_model("vae", name, "VAE")
        opts = {k: v for k, v in self.load_options.items() if k in ("device", "dtype", "allow_pickle")}
        with named_errors(path, name):
            return load_vae_file(path, **opts)

    def load_checkpoint(self, name: str, **options):
        """The model for ckpt_name, through the ModelCache (each model loaded once per cache; one per run unless
        the caller shares a cache between runs). `options` (prediction=...) apply to checkpoint files only."""
        if name in self.preloaded:
            return self.preloaded[name]
        resolved = self.resolve_checkpoint(name)
        if self.cache is None:
            from ..models import ModelCache

            self.cache = ModelCache()
        if isinstance(resolved, str):
            return self.cache.get(embedded_name(resolved), device=self.load_options.get("device"))
        with named_errors(resolved, name):
            return self.cache.get(resolved, **self.load_options, **options)

    def embeddings(self):
        """The `embeddings` folders as one EmbeddingLibrary (searched in order; folders that do not exist are
        left out, and with none every `embedding:NAME` is dropped with a warning, as ComfyUI drops it)."""
        if self._embeddings is None:
            from ..models.embeddings import EmbeddingLibrary

            self._embeddings = EmbeddingLibrary.of_folders(self.search_dirs("embeddings"),
                                                           allow_pickle=bool(self.load_options.get("allow_pickle")))
        return self._embeddings

    def input_path(self, name: str) -> Path:
        """A file in the input folder ("name [input]" annotations as ComfyUI writes them are accepted)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"file name must be a non-empty string, got {name!r}")
        name = re.sub(r"\s*\[(input|output|temp)\]$", "", name)
        try:
            p = name_in_folder(name, self.input_dir, "input file")
        except ValueError:
            raise ValueError(f"{name!r} must be a file name inside the input folder {self.input_dir}") from None
        if not p.is_file():
            raise FileNotFoundError(f"input file {name!r} not found in {self.input_dir} (use --input-dir DIR)")
        return p

    def list_inputs(self, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
        key = ("inputs", str(self.input_dir), tuple(extensions))
        if key not in self.listings:
            d = self.input_dir
            self.listings[key] = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix.lower()
                                        in extensions) if d.is_dir() else []
        return list(self.listings[key])

    # ------------------------------------------------------------------ outputs
    def write(self, item: PendingWrite) -> PendingWrite:
        """Write `item` now, or queue it when `defer_writes` is set (then `commit` writes the queue)."""
        if self.defer_writes:
            self.pending.append(item)
            return item
        return self._write(item)

    def commit(self) -> list[PendingWrite]:
        """Write every queued file together (`_files.atomic_write_all`: all written, then all renamed)."""
        items, self.pending = self.pending, []
        return self._write_all(items)

    def _write(self, item: PendingWrite) -> PendingWrite:
        return self._write_all([item])[0]

    def _write_all(self, items: list[PendingWrite]) -> list[PendingWrite]:
        """Claim a name for every item (created exclusively: a name another run took meanwhile is skipped), then
        write them together over the claimed (empty) files; on failure the claimed names are removed again."""
        claimed: list[Path] = []
        try:
            for item in items:
                folder = self.output_dir / item.subfolder
                folder.mkdir(parents=True, exist_ok=True)
                item.path = claim_name(folder, item.filename, item.extension)
                claimed.append(item.path)
            atomic_write_all([(item.path, item.write) for item in items])
        except BaseException:
            for p in claimed:
                with contextlib.suppress(OSError):
                    if p.is_file() and p.stat().st_size == 0:
                        p.unlink()
            raise
        return items


@contextlib.contextmanager
def named_errors(path: Path, name: str):
    """Loading errors that name the file by the workflow's own name (`name`), not the path it resolved to."""
    try:
        yield
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        msg = str(e)
        for form in (str(path), str(Path(path).resolve())):
            msg = msg.replace(form, name)
        if name not in msg:  # the bare file name (not inside the workflow's name already put in)
            msg = msg.replace(Path(path).name, name)
        if name not in msg:
            msg = f"{name}: {msg}"
        try:
            err = type(e)(msg)
        except TypeError:
            err = ValueError(msg)
        raise err from None


def model_relpath(name: str) -> Path | None:
    """A model name as a workflow stores it -> a path relative to a models folder, as ComfyUI resolves it:
    Windows backslashes are separators ("SD1.5\\model.safetensors" is the subfolder SD1.5), "." parts and
    a leading "/" drop out (the name stays inside the folder); None for a name that would leave it ("..", a
    leading "~", a drive such as "C:", a NUL)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or re.match(r"^[A-Za-z]:$", parts[0]) or parts[0].startswith("~"):
        return None
    return Path(*parts)


MAX_COUNTER_TRIES = 100_000


def claim_name(folder: Path, filename: str, extension: str) -> Path:
    """`folder/filename_NNNNN_.extension` with the next free number, created empty and exclusively (never
    through a symbolic link), so no other writer can take the same name; the caller replaces it atomically."""
    counter = next_counter(folder, filename)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(MAX_COUNTER_TRIES):
        path = folder / f"{filename}_{counter:05}_.{extension}"
        try:
            os.close(os.open(path, flags, 0o666))
            return path
        except FileExistsError:
            counter += 1
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            counter += 1  # a symbolic link holds the name: skip it, never write through it
    raise OSError(errno.EEXIST, f"no free output name for {filename!r} in {folder}")


MAX_NAME_BYTES = 200  # one path component of an output name (file systems allow 255; the counter needs some)


def split_prefix(prefix: str) -> tuple[str, str]:
    """filename_prefix "sub/dir/name" -> ("sub/dir", "name"); refuses paths that leave the output folder, NUL
    bytes and components too long for a file name."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError(f"filename_prefix must be a non-empty string, got {prefix!r}")
    p = Path(prefix)
    if p.is_absolute() or ".." in p.parts or prefix.startswith("~") or "\0" in prefix:
        raise ValueError(f"filename_prefix {prefix!r} must stay inside the output folder")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in p.parts):
        raise ValueError(f"filename_prefix {prefix[:40]!r}...: a folder or file name in it is longer than "
                         f"{MAX_NAME_BYTES} bytes")
    if p.name in ("", ".", ".."):
        raise ValueError(f"filename_prefix {prefix!r} must end with a file name")
    return (p.parent.as_posix() if str(p.parent) != "." else ""), p.name


def next_counter(folder: Path, filename: str) -> int:
    """1 + the highest NNNNN of the files `filename_NNNNN_*` in `folder` (1 when there are none), as ComfyUI
    numbers its outputs, so a new run continues the sequence."""
    pattern = re.compile(re.escape(filename) + r"_(\d+)_")
    best = 0
    if folder.is_dir():
        for p in folder.iterdir():
            m = pattern.match(p.name)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1


__all__ = ["Folders", "PendingWrite", "claim_name", "embedded_models", "embedded_name", "model_relpath",
           "next_counter", "split_prefix"]
