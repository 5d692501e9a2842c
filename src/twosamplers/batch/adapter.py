"""Where batch meets the Job layer: a batch line becomes a `Job`, a worker renders it to bytes.

Everything else in `twosamplers.batch` (jobs files, grids, planning, the process pool, Ray, the manifest) uses
only this module's small interface, which a workflow line (`workflow_line.WorkflowJob`) offers too:

- `parse(fields, base_dir) -> BatchJob | WorkflowJob`: one line's fields -> a validated `Job` (`Job.from_dict`,
  or `Job.from_png` for a `"from"` line), its input files read once (so a missing or unreadable mask, image or
  model file is reported before any work) and its hash (`Job.hash()`: normalised settings + input file contents);
  a line with a `"workflow"` field goes to `workflow_line.parse`.
- `job.read_inputs() -> {key: bytes}`: what the driver ships to a worker (no shared filesystem needed).
- `job.render(inputs, cache, device) -> {file name: bytes}`: runs in a worker with a `ModelCache`.
- `job.done_outputs(folder, names)`: the job's finished files in the batch folder, or None (resume).

Validation, normalisation, the plain-key shorthand (`"seed"` sets every pass) and hashing are the Job layer's;
this module only resolves a line's relative paths (its regions' masks, models and ControlNets too), adds the two
loading options a line may carry, and stores the hash in the output PNG. A line's regions are a `regions` list of
region objects; each field inside a region may be a grid too (jobs_file.expand).

A line is someone else's document (docs/security.md): every file or folder it names (in every region too) must
lie inside the jobs file's folder or a folder the user gave on the command line (`roots`); its LoRA entries are
names inside its `lora_dir`; its models are never downloaded; a PNG it names (`"from"`) that this user did not
render does not choose files either; and it cannot allow pickle files on its own (`allow_pickle` needs the
batch's `--allow-pickle`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._paths import read_regular
from ..job import Job, JobError, ModelCache, load_masks, metadata, prepare_job, resolve_size
from ..job import render as render_job
from .line_paths import resolve as _resolve
from .stamp import JOB_HASH_KEY  # PNG text chunk: the hash of the job that wrote the file

LOAD_KEYS = ("dtype", "allow_pickle")  # how a worker loads a checkpoint; not part of the render's settings
HASH_CHARS = 20  # output names: the first 20 hex digits of the job's hash


def shipped(key: str) -> bool:
    """Inputs sent to workers as bytes: the image and every region's mask file (model, LoRA and ControlNet files
    load from the workers' own paths)."""
    return key in ("image", "mask") or (key.startswith("regions[") and key.endswith("].mask"))


@dataclass(frozen=True)
class BatchJob:
    """A validated Job, its hash and the loading options its line gave."""

    job: Job
    digest: str
    load_options: tuple[tuple[str, object], ...] = ()
    stamps: tuple = ()  # (path, size, mtime) of the input files when hashed

    @property
    def model_key(self) -> str:
        """Jobs with equal keys share loaded models (the pool hands them to the same worker): the set of models
        the job loads (the job's model and the passes' own) and the loading options."""
        return json.dumps([sorted(self.job.models()), list(self.load_options)])

    @property
    def inputs(self) -> dict[str, str]:
        """The input files shipped to workers as bytes, by field."""
        return {k: v for k, v in self.job.input_files().items() if shipped(k)}

    @property
    def output(self) -> str:
        return f"{self.digest[:HASH_CHARS]}.png"

    def to_dict(self) -> dict:
        return {**self.job.to_dict(), **dict(self.load_options)}

    def read_inputs(self) -> dict[str, bytes]:
        return read_inputs(self)

    def render(self, inputs: dict[str, bytes], cache: ModelCache, device: str | None = None) -> dict[str, bytes]:
        return {self.output: render(self, inputs, cache, device)["image"]}

    def done_outputs(self, folder: Path, names: set[str]) -> list[str] | None:
        return [self.output] if self.output in names and output_matches(folder / self.output, self) else None


def known_fields() -> tuple[str, ...]:
    from ..job import SHARED_KEYS, job_keys

    return (*job_keys(), *SHARED_KEYS, "regions", *LOAD_KEYS, "from")


def nested_fields() -> frozenset[str]:
    """Fields whose value is an object of settings, each entry of which may be a grid (a workflow line's set)."""
    return frozenset({"set"})


def nested_list_fields() -> frozenset[str]:
    """Fields whose value is a list of objects of settings, each entry of which may be a grid (a job's regions)."""
    return frozenset({"regions"})


def list_fields() -> frozenset[str]:
    """Job fields whose value is a list (LoRAs, ControlNets, regions): a plain list there is a value, not a grid
    (inside a region object too)."""
    from dataclasses import fields

    from ..job import PASSES, PassSpec

    names = [f.name for f in fields(PassSpec) if isinstance(f.default, tuple)]
    return frozenset([*names, *(f"{w}_{n}" for w in PASSES for n in names), "regions"])


def _job_fields(fields: dict, base: Path, roots=None) -> dict:
    """A line's fields as a job dict: relative paths (masks, image, checkpoints, folders, ControlNet files and
    hints; a region's mask, model and ControlNets too: `forms.map_files`) made absolute against the jobs file's
    folder, checked to exist and (with `roots`) to stay inside those folders."""
    from ..job.forms import map_files
    from ..models.registry import CHECKPOINT, loader_for

    unknown = sorted(set(fields) - set(known_fields()))
    if unknown:
        raise JobError(unknown[0], f"unknown field (known: {', '.join(sorted(known_fields()))})")

    def line_file(kind: str, key: str, value):
        if kind == "model" and loader_for(value) is not CHECKPOINT:  # a built-in model: no file
            return value
        path = _resolve(value, key, base, roots)
        if kind in ("mask", "image", "model") and not os.path.exists(path):
            raise JobError(key, f"file not found: {path}")
        return path

    return map_files({k: v for k, v in fields.items() if k not in LOAD_KEYS and k != "from" and v is not None},
                     line_file)


def parse(fields: dict, base_dir: str | os.PathLike = ".", roots=None, allow_pickle: bool = False):
    """Validate one batch line (already grid-expanded) -> BatchJob, or WorkflowJob for a line with "workflow";
    raises JobError (a ValueError) naming the field. `roots`: the folders the line may name files in (None:
    anywhere, for trusted callers); `allow_pickle`: the batch's --allow-pickle (a line alone cannot allow it)."""
    if not isinstance(fields, dict):
        raise JobError("job", f"must be a JSON object, got {type(fields).__name__}")
    base = Path(base_dir)
    if fields.get("allow_pickle") and not allow_pickle:
        raise JobError("allow_pickle", "a jobs line cannot allow pickle files on its own; run the batch with "
                       "--allow-pickle if you trust the files")
    if "workflow" in fields:
        from . import workflow_line

        return workflow_line.parse(fields, base, roots, allow_pickle)
    d = _job_fields(fields, base, roots)
    untrusted = roots is not None
    trusted = frozenset() if untrusted else None
    if "from" in fields:
        job = Job.from_png(_resolve(fields["from"], "from", base, roots), overrides=d,
                           untrusted=None if untrusted else False, trusted=trusted)
    else:
        from ..job.forms import merge

        job = Job.from_dict(merge({}, d)[0], trusted=trusted)
    from ..job.loras import check_lora_names

    check_lora_names(job)  # LoRA files found (inside lora_dir for a line's names) before any work
    masks = load_masks(job)  # the files exist and are images
    image_hw = None
    if job.image is not None:
        from ..job.imageio import load_image

        image_hw = tuple(load_image(job.image).shape[1:3])
    # sizes and aspect ratios now (the model's latent grid is checked when its worker loads it)
    resolve_size(job, [tuple(m.shape[-2:]) for m in masks], image_hw, 1)
    options = tuple((k, fields[k]) for k in LOAD_KEYS if fields.get(k) is not None)
    if allow_pickle and "allow_pickle" not in fields:
        options += (("allow_pickle", True),)
    if dict(options).get("dtype", "fp32") not in ("fp32", "fp16", "bf16"):
        raise JobError("dtype", f"unknown value {fields['dtype']!r}; valid: fp32, fp16, bf16")
    if not isinstance(dict(options).get("allow_pickle", False), bool):
        raise JobError("allow_pickle", f"must be true or false, got {fields['allow_pickle']!r}")
    stamps = _stamps(job)
    return BatchJob(job, job.hash(), options, stamps)


def read_inputs(job: BatchJob) -> dict[str, bytes]:
    """The input files' bytes by path (read by the driver, so workers need no shared filesystem), after checking
    that they are still the files the job's hash (and so its output name) was computed from."""
    if _stamps(job.job) != job.stamps:
        raise ValueError("an input file changed since the batch was validated; run the batch again")
    return {path: read_regular(path, "input file") for path in job.inputs.values()}


def _stamps(job: Job) -> tuple:
    """(path, size, mtime) of every input file: a cheap "unchanged since hashing" check (LoRAs can be big)."""
    out = []
    for path in sorted(job.input_files().values()):
        st = os.stat(path)
        out.append((path, st.st_size, st.st_mtime_ns))
    return tuple(out)


def render(job: BatchJob, inputs: dict[str, bytes], cache: ModelCache, device: str | None = None) -> dict[str, bytes]:
    """Render one job in a worker and return the output PNG's bytes (the driver writes them)."""
    from ..job.imageio import png_writer

    with tempfile.TemporaryDirectory(prefix="twosamplers-job-") as tmp:
        local = {}
        for key, path in job.inputs.items():
            data = inputs[path]
            if not (os.path.isfile(path) and Path(path).read_bytes() == data):  # not on this machine: use the bytes
                local[key] = os.path.join(tmp, f"input-{len(local)}{Path(path).suffix}")
                Path(local[key]).write_bytes(data)
        prepared = prepare_job(job.job.with_input_files(local), cache, load_options=_load_options(job, device))
        if local:  # the metadata names the real paths
            prepared.job = prepared.job.with_input_files({k: job.inputs[k] for k in local})
        result = render_job(prepared, disable_pbar=True)
        out = os.path.join(tmp, "out.png")
        png_writer(result.image[:1], settings=metadata(result.job), masks=list(result.masks),
                   text={JOB_HASH_KEY: job.digest})(out)
        return {"image": Path(out).read_bytes()}


def _load_options(job: BatchJob, device: str | None) -> dict:
    return {**dict(job.load_options), **({"device": device} if device else {})}


def output_matches(path: str | os.PathLike, job: BatchJob) -> bool:
    """True when `path` is a complete, readable PNG that carries this job's hash."""
    from .stamp import read_stamp

    return (read_stamp(path) or {}).get(JOB_HASH_KEY) == job.digest
