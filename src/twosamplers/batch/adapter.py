"""The one place where batch meets the render layer: parse a job, hash it, render it to bytes.

Everything else in `twosamplers.batch` (jobs files, grids, planning, the process pool, Ray, the manifest) only
uses this module's small interface:

- `parse(fields, base_dir) -> BatchJob`: validate one job (the fields of `twosamplers generate` / of the PNG
  metadata it writes), raising `ValueError` with the reason; input files must exist and be readable.
- `BatchJob.digest`: sha256 of the normalised settings and the contents of its input files; names the output.
- `BatchJob.model_key`: jobs with the same key share a loaded model (the pool groups them).
- `read_inputs(job) -> {path: bytes}`: what the driver ships to a worker (no shared filesystem needed).
- `render(job, inputs, cache) -> {"image": png_bytes}`: runs in a worker; `ModelCache` loads each model once.
- `output_matches(path, job)`: the PNG at `path` is this job's finished output (resume / idempotence).

TEMPORARY: today this sits on the CLI's `run_job` and PNG settings. When the Job layer (issue 9) lands it is
the single source of validation, normalisation and hashing, and this module becomes a thin wrapper over it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT_NAMES = ("image",)
_PATH_KEYS = ("mask", "image")  # input files: hashed by content, shipped as bytes
_LOAD_KEYS = ("dtype", "allow_pickle")  # model loading options a job may carry
_IGNORED = ("twosamplers_version", "job_hash")  # present in PNG metadata; not settings


def known_fields() -> tuple[str, ...]:
    from ..cli import GLOBAL_KEYS, PASS_KEYS

    both = tuple(PASS_KEYS)
    per_pass = tuple(f"{w}_{k}" for w in ("base", "mask") for k in PASS_KEYS)
    return (*GLOBAL_KEYS, *both, *per_pass, *_LOAD_KEYS, "from")


@dataclass(frozen=True)
class BatchJob:
    """One validated render: resolved settings (the PNG metadata's keys), input paths and their hashes."""

    settings: dict
    inputs: dict[str, str] = field(default_factory=dict)  # "mask"/"image" -> absolute path
    input_sha256: dict[str, str] = field(default_factory=dict)  # "mask"/"image" -> sha256 of the file
    load_options: dict = field(default_factory=dict)
    digest: str = ""

    @property
    def model_key(self) -> str:
        return json.dumps([self.settings["model"], self.load_options], sort_keys=True)

    def to_dict(self) -> dict:
        """The normalised job as JSON-able fields (what the manifest records)."""
        return {**self.settings, **self.load_options}


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_identity(model: str) -> str:
    """Built-in models by name; checkpoints by file name and size (hashing gigabytes per batch start is too slow)."""
    from ..models.registry import BUILTIN_MODELS

    if model.strip().lower() in BUILTIN_MODELS:
        return model.strip().lower()
    p = Path(model)
    if p.is_dir():
        return f"{p.name}/" + ",".join(f"{q.relative_to(p)}:{q.stat().st_size}" for q in sorted(p.rglob("*"))
                                      if q.is_file())
    return f"{p.name}:{p.stat().st_size}"


def parse(fields: dict, base_dir: str | os.PathLike = ".") -> BatchJob:
    """Validate one job's fields; relative paths are relative to `base_dir` (the jobs file's folder)."""
    from ..cli import BadInput, resolve_settings, validate_settings
    from ..imageio import check_aspect, load_image, load_mask, read_settings
    from ..models.registry import BUILTIN_MODELS

    if not isinstance(fields, dict):
        raise ValueError(f"a job must be a JSON object, got {type(fields).__name__}")
    known = set(known_fields())
    unknown = sorted(k for k in fields if k not in known and k not in _IGNORED)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    base = Path(base_dir)

    def resolve_path(v, key):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{key} must be a file path (string), got {v!r}")
        p = Path(os.path.expanduser(v))
        return str((base / p).resolve() if not p.is_absolute() else p)

    stored, embedded = None, None
    if fields.get("from") is not None:
        stored, embedded = read_settings(resolve_path(fields["from"], "from"))
        stored = {k: v for k, v in stored.items() if k not in _IGNORED}
    ns = argparse.Namespace(**{k: None for k in known})
    for k, v in fields.items():
        if k in known and k != "from":
            setattr(ns, k, v)
    try:
        s = resolve_settings(ns, stored)
        for key in ("base_prompt", "mask_prompt", "base_negative", "mask_negative"):
            if s[key] is not None and not isinstance(s[key], str):
                raise BadInput(f"{key} must be a string, got {s[key]!r}")
        validate_settings(s)
    except BadInput as e:
        raise ValueError(str(e)) from None

    model = s["model"]
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a name or a path, got {model!r}")
    if model.strip().lower() not in BUILTIN_MODELS:
        s["model"] = model = resolve_path(model, "model")
        if not os.path.exists(model):
            raise ValueError(f"model not found: {model} (built-in models: {', '.join(BUILTIN_MODELS)})")

    inputs, shas = {}, {}
    if fields.get("mask") is None and embedded is not None:
        raise ValueError("a job needs a mask file; the mask embedded in a --from PNG is not supported in batch yet")
    if s.get("mask") is None:
        raise ValueError("mask is required (a mask image path)")
    s["mask"] = inputs["mask"] = resolve_path(s["mask"], "mask")
    mask = load_mask(s["mask"], s["mask_channel"], s["invert_mask"])  # exists and is a readable image
    if s.get("image") is not None:
        s["image"] = inputs["image"] = resolve_path(s["image"], "image")
        h, w = load_image(s["image"]).shape[1:3]
    else:
        h, w = s["height"], s["width"]
    if h is not None and w is not None:
        check_aspect(tuple(mask.shape[-2:]), (h, w))
    for role, path in inputs.items():
        shas[role] = _sha256_file(path)

    load_options = {}
    for k in _LOAD_KEYS:
        if fields.get(k) is not None:
            load_options[k] = fields[k]
    if "dtype" in load_options and load_options["dtype"] not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"dtype={load_options['dtype']!r} is not known; valid: fp32, fp16, bf16")
    if "allow_pickle" in load_options and not isinstance(load_options["allow_pickle"], bool):
        raise ValueError(f"allow_pickle must be true or false, got {load_options['allow_pickle']!r}")

    normal = {k: v for k, v in s.items() if k not in _PATH_KEYS and k != "model"}
    normal.update(load_options)
    normal["model"] = _model_identity(model)
    normal["inputs"] = shas
    digest = hashlib.sha256(json.dumps(normal, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return BatchJob(settings=s, inputs=inputs, input_sha256=shas, load_options=load_options, digest=digest)


def read_inputs(job: BatchJob) -> dict[str, bytes]:
    """The input files' bytes, keyed by path, checked against the hashes taken at validation."""
    out = {}
    for role, path in job.inputs.items():
        data = Path(path).read_bytes()
        if hashlib.sha256(data).hexdigest() != job.input_sha256[role]:
            raise ValueError(f"{role} {path} changed since the batch was validated")
        out[path] = data
    return out


class ModelCache:
    """Loads each model once per process and keeps the last `keep` of them (jobs arrive grouped by model)."""

    def __init__(self, keep: int = 1, device: str | None = None):
        self.keep, self.device, self._models, self.loads = keep, device, {}, 0

    def get(self, name, **options):
        from ..models import registry

        key = json.dumps([str(name), {k: str(v) for k, v in options.items()}], sort_keys=True)
        if key not in self._models:
            while len(self._models) >= self.keep:
                self._models.pop(next(iter(self._models)))
            if self.device is not None and "device" not in options:
                options = {**options, "device": self.device}
            self._models[key] = registry.load(name, **options)
            self.loads += 1
        return self._models[key]


def render(job: BatchJob, inputs: dict[str, bytes], cache: ModelCache) -> dict[str, bytes]:
    """Render one job and return its outputs as bytes (the caller writes them)."""
    from .. import cli, models
    from ..imageio import load_mask

    with tempfile.TemporaryDirectory(prefix="twosamplers-job-") as tmp:
        s = dict(job.settings)
        local = {}
        for role, path in job.inputs.items():
            data = inputs[path]
            if os.path.isfile(path) and Path(path).read_bytes() == data:
                local[role] = path
            else:  # no shared filesystem: use the shipped bytes
                local[role] = os.path.join(tmp, f"{role}{Path(path).suffix}")
                Path(local[role]).write_bytes(data)
        mask = load_mask(local["mask"], s["mask_channel"], s["invert_mask"])
        if "image" in local:
            s["image"] = local["image"]
        s["job_hash"] = job.digest  # stored in the PNG metadata: how a rerun recognises a finished output
        out = os.path.join(tmp, "out.png")
        real_load = models.load
        models.load = cache.get  # the CLI's run_job loads through models.load; route it through the cache
        try:
            cli.run_job(s, mask, output=out, quiet=True, load_options=dict(job.load_options))
        except cli.BadInput as e:
            raise ValueError(str(e)) from None
        finally:
            models.load = real_load
        return {"image": Path(out).read_bytes()}


def output_matches(path: str | os.PathLike, job: BatchJob) -> bool:
    """True when `path` is a complete PNG carrying this job's hash in its metadata."""
    from ..imageio import read_settings

    try:
        settings, _ = read_settings(path)
    except (ValueError, OSError):
        return False
    return settings.get("job_hash") == job.digest
