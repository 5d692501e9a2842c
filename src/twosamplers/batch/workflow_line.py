"""Batch lines that run a ComfyUI workflow: `{"workflow": "wf.json", "set": {"3.seed": 42}, "models": "..."}`.

Such a line goes through the machinery of job lines (grids, every line checked before any work, hashed outputs,
skip when done, manifest, retries, local workers and Ray actors); this module is its adapter, as `adapter.py`
is for job lines. Checking is the workflow layer's own (`workflow.load`, `apply_overrides`, `graph.plan`:
unsupported nodes, unknown node ids and inputs in `set`, wrong values, checkpoints and input files not found),
done when the batch is planned, so a bad line is reported with its line number and nothing runs.

- Fields: `workflow` (API or UI JSON, or a PNG/WebP carrying one), `set` ({"NODE.input": value}; each entry
  may be a grid), `models` (a folder in ComfyUI's models/ layout: `run --models`), `comfyui` (an install: its
  models/, input/ and extra_model_paths.yaml: `run --comfyui`), `input_dir` (LoadImage's folder: `run
  --input-dir`; default: the install's input/, else `input/` beside the jobs file), `extra_model_paths`,
  `dtype`. Relative paths are relative to the jobs file's folder.
- Hash: the API prompt after the overrides (numbers normalised to their inputs' types, node titles left out),
  dtype, and the contents of the input-folder files the needed nodes read (LoadImage, LoadImageMask,
  LoadLatent). Checkpoints, LoRAs and ControlNets count by the names the workflow gives them, as in ComfyUI;
  the folders they are found in do not.
- Outputs: every file the workflow writes, named `<hash20>-<node id>-<k>.<ext>` and stamped (`stamp.py`) with
  the hash and the list of the job's files. The job is done when one of its files lists the job's files and each
  is there, complete and stamped with the hash; a batch killed between two renames redoes the whole job.
- The UI workflow (the `workflow` chunk) is kept only for lines without `set`: ComfyUI's editor opens that chunk
  first and would show values that did not run. The `prompt` chunk (what ran) is always written; ComfyUI
  opens it when there is no `workflow` chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .._paths import open_regular, read_regular
from ..job import JobError
from ..nodes.core import FolderNode
from ..nodes.folders import Folders
from ..nodes.registry import NODES, input_types
from ..workflow import WorkflowError, apply_overrides
from ..workflow.execute import load as load_workflow
from ..workflow.formats import Workflow
from ..workflow.graph import describe, is_link, spec_of
from ..workflow.graph import plan as plan_graph
from ..workflow.limits import check_memory
from ..workflow.widgets import input_kind
from .line_paths import resolve as _resolve
from .stamp import JOB_HASH_KEY, OUTPUTS_KEY, read_stamp, stamp

HASH_CHARS = 20
FIELDS = ("workflow", "set", "models", "comfyui", "input_dir", "extra_model_paths", "dtype", "allow_pickle")
SAVE_PREFIX = "ComfyUI"  # a batch names outputs by hash: the workflow's own filename_prefix never applies
FOLDER_FIELDS = ("models", "comfyui", "input_dir", "extra_model_paths")
DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True, eq=False)
class WorkflowJob:
    """A checked workflow line: the prompt to run, where its models and inputs are, and its hash."""

    digest: str
    prompt: dict  # API format, overrides applied
    ui: dict | None  # the UI workflow embedded in outputs (None when `set` changed values)
    source: str
    where: tuple[tuple[str, str], ...]  # (folder field, absolute path)
    files: tuple[tuple[str, str], ...]  # (name in the input folder, absolute path): shipped to workers as bytes
    models: tuple[str, ...]  # "input=name" of every model file the needed nodes load
    dtype: str | None
    settings: dict  # the line's fields, paths made absolute (manifest, failures)
    stamps: tuple = ()
    allow_pickle: bool = False

    @property
    def model_key(self) -> str:
        """Jobs with equal keys share loaded models (the scheduler keeps them on the same worker)."""
        return json.dumps(["workflow", list(self.models), [w for w in self.where if w[0] != "input_dir"],
                           self.dtype])

    @property
    def output(self) -> str:
        return f"{self.digest[:HASH_CHARS]}-*"

    @property
    def prefix(self) -> str:
        return f"{self.digest[:HASH_CHARS]}-"

    def to_dict(self) -> dict:
        return dict(self.settings)

    def read_inputs(self) -> dict[str, bytes]:
        if _stamps(self.files) != self.stamps:
            raise ValueError("an input file changed since the batch was validated; run the batch again")
        return {name: read_regular(path, "input file") for name, path in self.files}

    def render(self, inputs: dict[str, bytes], cache, device: str | None = None) -> dict[str, bytes]:
        """Run the workflow in a worker (inputs from `inputs`, outputs to a temporary folder) -> {name: bytes}."""
        from ..workflow import run

        where = dict(self.where)
        with tempfile.TemporaryDirectory(prefix="twosamplers-workflow-") as tmp:
            in_dir, out_dir = Path(tmp, "input"), Path(tmp, "output")
            in_dir.mkdir()
            for name, _ in self.files:
                (in_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (in_dir / name).write_bytes(inputs[name])
            outputs = run(Workflow(_neutral_prefixes(self.prompt), self.ui, self.source), where.get("models"),
                          comfyui=where.get("comfyui"), input_dir=in_dir, output_dir=out_dir,
                          extra_model_paths=where.get("extra_model_paths"), device=device, dtype=self.dtype,
                          cache=cache, quiet=True, allow_pickle=self.allow_pickle)
            written = [(f"{self.prefix}{_safe(o['node'])}-{k}{Path(f).suffix}", f)
                       for o in outputs for k, f in enumerate(o["files"], 1)]
            if not written:
                raise WorkflowError("the workflow wrote no file")
            text = {JOB_HASH_KEY: self.digest, OUTPUTS_KEY: json.dumps([n for n, _ in written])}
            return {name: stamp(Path(f).read_bytes(), Path(f).suffix, text) for name, f in written}

    def done_outputs(self, folder: Path, names: set[str]) -> list[str] | None:
        """The job's files when all are in `folder` (whose entries are `names`), complete and stamped; else None."""
        for name in sorted(n for n in names if n.startswith(self.prefix)):
            text = read_stamp(folder / name)
            if not text or text.get(JOB_HASH_KEY) != self.digest:
                continue
            try:
                listed = json.loads(text.get(OUTPUTS_KEY, ""))
            except ValueError:
                continue
            if not isinstance(listed, list) or name not in listed:
                continue
            for other in listed:
                if other != name and (other not in names or
                                      (read_stamp(folder / other) or {}).get(JOB_HASH_KEY) != self.digest):
                    return None
            return listed
        return None


def _neutral_prefixes(prompt: dict) -> dict:
    """The prompt with each output node's constant filename_prefix that the runner would refuse (it leaves the
    output folder, ...) replaced by SAVE_PREFIX: a batch renames outputs by hash, so the prefix never applies and
    must not fail the job. Acceptable prefixes stay, so the embedded prompt is the workflow's own."""
    from ..nodes.image import check_prefix

    out = {}
    for nid, node in prompt.items():
        names = getattr(NODES.get(node["class_type"]), "OUTPUT_INPUTS", ())
        fixed = {}
        for n in names:
            value = node["inputs"].get(n)
            if n in node["inputs"] and not is_link(value):
                try:
                    check_prefix(value)
                except ValueError:
                    fixed[n] = SAVE_PREFIX
        out[nid] = {**node, "inputs": {**node["inputs"], **fixed}} if fixed else node
    return out


def _safe(node_id) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", str(node_id))


def _paths(fields: dict, base: Path, roots=None) -> dict[str, str]:
    paths = {k: _resolve(fields[k], k, base, roots) for k in ("workflow", *FOLDER_FIELDS) if fields.get(k) is not None}
    if not os.path.isfile(paths["workflow"]):
        raise JobError("workflow", f"file not found: {paths['workflow']}")
    for key in ("models", "comfyui", "input_dir"):
        if key in paths and not os.path.isdir(paths[key]):
            raise JobError(key, f"folder not found: {paths[key]}")
    if "extra_model_paths" in paths and not os.path.isfile(paths["extra_model_paths"]):
        raise JobError("extra_model_paths", f"file not found: {paths['extra_model_paths']}")
    if "input_dir" not in paths and "comfyui" not in paths:
        paths["input_dir"] = str((base / "input").resolve())
    return paths


def _overrides(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JobError("set", f"must be an object {{\"NODE_ID.input\": value, ...}}, got {value!r}")
    for key in value:
        nid, dot, name = key.partition(".")
        if not (dot and nid and name):
            raise JobError("set", f"key {key!r} must look like NODE_ID.input (e.g. \"3.seed\")")
    return dict(value)


@lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int, where: tuple) -> Workflow:
    """A workflow file read once per planning (a grid line checks the same file for each of its jobs)."""
    return load_workflow(path, _folders(where))


def _folders(where: tuple) -> Folders:
    d = dict(where)
    return Folders.create(d.get("models"), comfyui=d.get("comfyui"), input_dir=d.get("input_dir"),
                          extra_model_paths=d.get("extra_model_paths"))


def parse(fields: dict, base: Path, roots=None, allow_pickle: bool = False) -> WorkflowJob:
    """Check one workflow line (grids already expanded); raises a ValueError naming the field or the node.
    `roots`: the folders the line may name files and folders in (None: anywhere); `allow_pickle`: the batch's
    --allow-pickle."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise JobError(unknown[0], f"is not a field of a workflow line (those are: {', '.join(FIELDS)})")
    if not isinstance(fields.get("allow_pickle", False), bool):
        raise JobError("allow_pickle", f"must be true or false, got {fields['allow_pickle']!r}")
    paths = _paths(fields, base, roots)
    overrides = _overrides(fields.get("set"))
    dtype = fields.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise JobError("dtype", f"unknown value {dtype!r}; valid: {', '.join(DTYPES)}")
    where = tuple((k, paths[k]) for k in FOLDER_FIELDS if k in paths)
    st = os.stat(paths["workflow"])
    try:
        folders = _folders(where)
        wf = _load(paths["workflow"], st.st_mtime_ns, st.st_size, where)
        prompt = apply_overrides(wf.prompt, overrides)
        order = plan_graph(_neutral_prefixes(prompt), folders)
        _check_saves(prompt, order.outputs)
        files = _input_files(prompt, order.order, folders)
        check_memory(prompt, order.order, folders, None, dtype)
    except (WorkflowError, FileNotFoundError, ValueError, TypeError, ImportError) as e:
        raise ValueError(f"workflow {fields['workflow']}: {e}") from None
    models = sorted({f"{name}={prompt[nid]['inputs'][name]}" for nid in order.order
                     for name in _model_inputs(NODES[prompt[nid]["class_type"]])
                     if not is_link(prompt[nid]["inputs"].get(name))})
    settings = {**fields, **paths}
    return WorkflowJob(_hash(prompt, dtype, files), prompt, wf.ui if not overrides else None, paths["workflow"],
                       where, files, tuple(models), dtype, settings, _stamps(files),
                       bool(allow_pickle or fields.get("allow_pickle")))


def _check_saves(prompt: dict, outputs: list[str]) -> None:
    if not any(issubclass(NODES[prompt[nid]["class_type"]], FolderNode) for nid in outputs):
        raise WorkflowError("the workflow saves no file: a batch needs a SaveImage or SaveLatent node "
                            "(PreviewImage writes nothing)")


def _model_inputs(cls) -> tuple[str, ...]:
    return tuple(n for n in getattr(cls, "FILE_INPUTS", ()) if n not in getattr(cls, "INPUT_FILES", ()))


def _input_files(prompt: dict, order: list[str], folders: Folders) -> tuple[tuple[str, str], ...]:
    """(name in the input folder, absolute path) of each file the needed nodes read from the input folder."""
    files = {}
    for nid in order:
        for name in getattr(NODES[prompt[nid]["class_type"]], "INPUT_FILES", ()):
            value = prompt[nid]["inputs"].get(name)
            if value is None:
                continue
            if is_link(value):
                raise WorkflowError(f"{describe(prompt, nid)}: input '{name}' comes from another node; a batch "
                                    "needs the file name itself (give it with \"set\")")
            path = folders.input_path(value)
            files[path.relative_to(folders.input_dir).as_posix()] = str(path.resolve())
    return tuple(sorted(files.items()))


def _normalised(prompt: dict) -> dict:
    """The prompt as it runs: INT inputs as integers, FLOAT inputs as floats (3 and 3.0 are one job)."""
    out = {}
    for nid, node in prompt.items():
        cls = NODES.get(node["class_type"])
        types = input_types(cls) if cls is not None else {}
        inputs = {}
        for name, v in node["inputs"].items():
            spec, _ = spec_of(types, name)
            kind = None if spec is None or is_link(v) else input_kind(spec)
            if kind == "INT" and isinstance(v, float) and v.is_integer():
                v = int(v)
            elif kind == "FLOAT" and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            inputs[name] = v
        out[str(nid)] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def _hash(prompt: dict, dtype: str | None, files) -> str:
    h = hashlib.sha256(b"workflow\0" + json.dumps({"prompt": _normalised(prompt), "dtype": dtype},
                                                  sort_keys=True).encode())
    for name, path in files:
        h.update(f"\0{name}\0".encode())
        with open_regular(path, "input file") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _stamps(files) -> tuple:
    out = []
    for _, path in files:
        st = os.stat(path)
        out.append((path, st.st_size, st.st_mtime_ns))
    return tuple(out)
