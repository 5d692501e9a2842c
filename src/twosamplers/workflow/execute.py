"""Running a checked workflow: each needed node once, in dependency order, outputs written at the end.

Node outputs are cached by node id for the run. Output nodes queue their files (`Folders.defer_writes`) and
the queue is written only after every node has run, each file atomically: a workflow that fails part-way
leaves no output behind. An empty latent (EmptyLatentImage's zeros) that reaches a node together with a
model of another latent format is re-made for that model (`latent.remake_empty_latent`).

Lazy inputs (an input spec with `{"lazy": True}`, ComfyUI's convention; Impact's ImpactConditionalBranch and
ImpactSwitch): a node that only lazy inputs need is not run in order; the lazy node's `check_lazy_status(**inputs)`
(its other inputs evaluated, the lazy ones None until asked for) names the lazy inputs it needs, and only those
are computed (asked again until it names none that is missing). So the branch not taken runs nothing.

Lists, as ComfyUI runs them: an output a node declares a list (`OUTPUT_IS_LIST`, e.g. ImpactMakeImageList) holds a
`ValueList`; a node given one (and not `INPUT_IS_LIST`) runs once per item (shorter lists repeat their last item),
and its outputs become lists of the results; an `INPUT_IS_LIST` node gets every input as a list, once.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .._checks import check_depth
from ..engine.latent import remake_empty_latent
from ..nodes.folders import Folders, PendingWrite
from ..nodes.handles import model_of
from ..nodes.impact_switch import BLOCKED
from ..nodes.registry import ALIASES, NODES, input_types, node_class
from .errors import WorkflowError
from .formats import Workflow, read_workflow
from .graph import describe, is_link, plan, spec_of
from .widgets import WIDGET_TYPES, input_kind, input_options


def _input_types_of(class_type: str, folders: Folders | None = None):
    cls = node_class(class_type)
    return None if cls is None else input_types(cls, folders)


def _legacy_layouts(class_type: str):
    return getattr(node_class(class_type), "LEGACY_WIDGETS", None)


def load(workflow, folders: Folders | None = None) -> Workflow:
    """A path / JSON string / dict / Workflow -> Workflow (the UI format converted to the API format; node types
    registered under an older name, e.g. "ConditioningAverage " with its trailing space, renamed)."""
    wf = read_workflow(workflow, lambda t: _input_types_of(t, folders), _legacy_layouts)
    prompt = {nid: {**n, "class_type": ALIASES.get(n["class_type"], n["class_type"])} for nid, n in wf.prompt.items()}
    return Workflow(_with_boolean_labels(_with_new_widget_defaults(prompt, folders), folders), wf.ui, wf.source)


def _with_boolean_labels(prompt: dict, folders: Folders | None) -> dict:
    """A BOOLEAN widget saved as one of its labels (Impact's use_tiled_vae as "enabled" / "disabled", from the
    versions whose toggle was a combo of those words) reads as True / False; each one is reported in a warning."""
    fixed = []
    for nid, node in prompt.items():
        types = _input_types_of(node["class_type"], folders) or {}
        for name, spec in {**(types.get("required") or {}), **(types.get("optional") or {})}.items():
            value, opts = node["inputs"].get(name), input_options(spec)
            if input_kind(spec) != "BOOLEAN" or not isinstance(value, str):
                continue
            if value in (opts.get("label_on"), opts.get("label_off")):
                node = prompt[nid] = {**node, "inputs": {**node["inputs"], name: value == opts.get("label_on")}}
                fixed.append(f"{describe(prompt, nid)}.{name} = {value!r}")
    if fixed:
        warnings.warn("boolean inputs saved as their labels read as true / false: " + ", ".join(fixed), stacklevel=3)
    return prompt


def _with_new_widget_defaults(prompt: dict, folders: Folders | None) -> dict:
    """Required widget inputs that a node type gained after the workflow was saved (an API prompt of an older
    ComfyUI has no value for them) take the widget's default, as ComfyUI's frontend gives them when it loads
    such a workflow; each one is reported in a warning."""
    filled = []
    for nid, node in prompt.items():
        types = _input_types_of(node["class_type"], folders)
        for name, spec in ((types or {}).get("required") or {}).items():
            if name in node["inputs"] or input_kind(spec) not in WIDGET_TYPES or "default" not in input_options(spec):
                continue
            node = prompt[nid] = {**node, "inputs": {**node["inputs"], name: input_options(spec)["default"]}}
            filled.append(f"{describe(prompt, nid)}.{name} = {input_options(spec)['default']!r}")
    if filled:
        warnings.warn("inputs the workflow has no value for (added to their node types after it was saved) take "
                      "their defaults: " + ", ".join(filled), stacklevel=3)
    return prompt


def parse_value(text: str):
    """A --set VALUE: JSON when it parses (numbers, true/false, quoted strings), else the text itself."""
    try:
        return check_depth(json.loads(text), "the --set value")
    except (json.JSONDecodeError, RecursionError):
        return text


def apply_overrides(prompt: dict, overrides: Mapping | None) -> dict:
    """{"3.seed": 5} or {"3": {"seed": 5}} -> a new prompt with those input values (the node and the input must
    exist in the node type's inputs)."""
    prompt = copy.deepcopy(prompt)
    flat: dict[tuple[str, str], object] = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and "." not in str(key):
            for name, v in value.items():
                flat[(str(key), str(name))] = v
            continue
        nid, dot, name = str(key).partition(".")
        if not dot or not nid or not name:
            raise WorkflowError(f"override {key!r} must look like NODE_ID.INPUT (e.g. 3.seed)")
        flat[(nid, name)] = value
    for (nid, name), value in flat.items():
        if nid not in prompt:
            raise WorkflowError(f"override {nid}.{name}: there is no node {nid} (nodes: {', '.join(prompt)})")
        cls = NODES.get(prompt[nid]["class_type"])
        if cls is not None:
            spec, _ = spec_of(input_types(cls), name)
            if spec is None:
                names = [n for s in ("required", "optional") for n in (input_types(cls).get(s) or {})]
                raise WorkflowError(f"override {nid}.{name}: {describe(prompt, nid)} has no input '{name}' "
                                    f"(inputs: {', '.join(names)})")
        prompt[nid]["inputs"][name] = value
    return prompt


def _model_in(values: dict):
    for v in values.values():
        m = model_of(v)
        if m is not None:
            return m
    return None


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def execute(wf: Workflow, folders: Folders, *, progress: Callable[[int, int, str, str], None] | None = None,
            quiet: bool = True, known: Mapping[str, tuple[tuple, dict]] | None = None,
            on_node: Callable[[str, tuple, dict], None] | None = None, check_memory: bool = True) -> list[dict]:
    """Run a Workflow (already overridden) and return the outputs; see `run`. `check_memory`: refuse, while
    planning, a workflow whose estimated memory exceeds what the machine has (`limits.check_memory`).

    For a long-lived caller (`twosamplers serve`): `known` gives {node id: (outputs, ui)} of nodes that are not
    run again (their results from an earlier prompt with the same inputs; they do not count in the memory
    estimate); `on_node(node id, outputs, ui)` is called after each node that ran; `progress` is called before
    each node that runs (it may raise to stop)."""
    prompt = wf.prompt
    p = plan(prompt, folders)
    if check_memory:
        from .limits import check_memory as memory_check

        order = [nid for nid in p.order if nid not in (known or {})]
        memory_check(prompt, order, folders, folders.load_options.get("device"), folders.load_options.get("dtype"))
    hidden = {"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": wf.ui} if wf.ui is not None else {}}
    cache: dict[str, tuple] = {}
    ui: dict[str, dict] = {}
    deferred = lazy_only(prompt, p.order, p.outputs, p.types)
    position = {nid: i for i, nid in enumerate(p.order)}
    bar = None

    def run_one(nid: str) -> None:
        """One node run (or its result taken from `known`), with the progress reports around it."""
        if known is not None and nid in known:
            cache[nid], ui[nid] = known[nid]
            return
        if bar is not None:
            bar.set_postfix_str(f"{nid} {prompt[nid]['class_type']}")
        if progress is not None:
            progress(position[nid], len(p.order), nid, prompt[nid]["class_type"])
        cache[nid], ui[nid] = run_node(prompt, nid, p.types[nid], cache, folders, hidden, demand)
        if on_node is not None:
            on_node(nid, cache[nid], ui[nid])

    def demand(nid: str) -> None:
        """Run `nid` (deferred: only lazy inputs need it) and the deferred nodes it needs, inputs first."""
        todo, stack = set(), [nid]
        while stack:
            cur = stack.pop()
            if cur in cache or cur in todo:
                continue
            todo.add(cur)
            stack.extend(src for src in _eager_sources(prompt, cur, p.types[cur]) if src in deferred)
        for cur in sorted(todo, key=position.__getitem__):
            if cur not in cache:  # a lazy node among them may have asked for it already
                run_one(cur)

    folders.defer_writes, folders.pending = True, []
    folders.disable_pbar = True if quiet else None
    if not quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(p.order), desc="nodes", unit="node", disable=None)
    try:
        for nid in p.order:
            if nid not in deferred:  # a node only lazy inputs need runs when (if) its node asks for it
                run_one(nid)
            if bar is not None:
                bar.update(1)
        folders.commit()
    finally:
        if bar is not None:
            bar.close()
        folders.pending, folders.defer_writes = [], False
    return [_output_entry(prompt, nid, ui.get(nid) or {}, cache) for nid in p.outputs]


class ValueList(list):
    """A node output that is a list of items (see the module doc); a one-item result is the item itself."""


def _calls(cls, kwargs: dict) -> list[dict] | None:
    """The keyword sets to call the node with: one per list item (None: the node takes its inputs as they are)."""
    if getattr(cls, "INPUT_IS_LIST", False):
        return [{k: list(v) if isinstance(v, ValueList) else [v] for k, v in kwargs.items()}]
    lists = [len(v) for v in kwargs.values() if isinstance(v, ValueList)]
    if not lists:
        return None
    return [{k: (v[min(i, len(v) - 1)] if isinstance(v, ValueList) else v) for k, v in kwargs.items()}
            for i in range(max(lists))]


def _merge(cls, results: list[tuple]) -> tuple:
    """The outputs of one node run several times (or of a list output): lists of the results, as ComfyUI merges
    them (a list output's items concatenated; one result of another output is that result)."""
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", ())) + (False,) * len(cls.RETURN_TYPES)
    out = []
    for i in range(len(cls.RETURN_TYPES)):
        if is_list[i]:
            out.append(ValueList(x for r in results for x in r[i]))
        else:
            out.append(results[0][i] if len(results) == 1 else ValueList(r[i] for r in results))
    return tuple(out)


def run_node(prompt: dict, nid: str, types: dict, cache: dict, folders: Folders, hidden: dict,
             demand: Callable[[str], None] | None = None) -> tuple[tuple, dict]:
    """One node: its inputs from the cache and constants, its function called -> (outputs, ui). `demand(node id)`
    runs a node that only lazy inputs need (see the module doc); without it every lazy input must be cached."""
    cls = NODES[prompt[nid]["class_type"]]
    obj = cls(folders) if _takes_folders(cls) else cls()
    lazy = _lazy_links(prompt, nid, types)
    kwargs = _gather(prompt, nid, types, cache, skip=lazy)
    if lazy:
        kwargs = _resolve_lazy(prompt, nid, types, cache, obj, kwargs, lazy, demand)
    if any(v is BLOCKED for v in kwargs.values()):  # downstream of a switch output that was not chosen: skipped
        return (BLOCKED,) * len(cls.RETURN_TYPES), {}
    fn = getattr(obj, cls.FUNCTION)
    extra = {}
    if _accepts(fn, "disable_pbar") and "disable_pbar" not in kwargs:
        extra["disable_pbar"] = folders.disable_pbar
    for name, value in (types.get("hidden") or {}).items():
        if _accepts(fn, name):
            extra[name] = nid if value == "UNIQUE_ID" else hidden.get(value)
    calls = _calls(cls, kwargs)
    if calls == []:  # an empty list: ComfyUI runs the node zero times, its outputs are empty lists
        return tuple(ValueList() for _ in cls.RETURN_TYPES), {}
    results, ui = [], {}
    for kw in calls or [kwargs]:
        result, part = _call(prompt, nid, cls, fn, {**kw, **extra})
        results.append(result)
        for key, items in part.items():
            ui[key] = list(ui.get(key) or []) + list(items) if len(results) > 1 else items
    if calls is None and not any(getattr(cls, "OUTPUT_IS_LIST", ())):
        return results[0], ui
    return _merge(cls, results), ui


def _call(prompt: dict, nid: str, cls, fn, kwargs: dict) -> tuple[tuple, dict]:
    try:
        result = fn(**kwargs)
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError, ImportError) as e:
        raise WorkflowError(f"{describe(prompt, nid)}: {e}") from e
    ui = {}
    if isinstance(result, dict):
        ui = result.get("ui") or {}
        result = result.get("result") or ()
    result = tuple(result)
    if len(result) != len(cls.RETURN_TYPES):
        raise WorkflowError(f"{describe(prompt, nid)} returned {len(result)} values for {len(cls.RETURN_TYPES)} "
                            "outputs")
    return result, ui


def _output_entry(prompt: dict, nid: str, ui: dict, cache: dict) -> dict:
    node = prompt[nid]
    items = [it for v in ui.values() for it in v if isinstance(it, PendingWrite)]
    entry = {"node": nid, "class_type": node["class_type"], "files": [str(it.path) for it in items]}
    for name in ("images", "samples"):
        if name in node["inputs"] and is_link(node["inputs"][name]):
            src = node["inputs"][name]
            value = cache[str(src[0])][src[1]]
            if isinstance(value, ValueList):  # images of a list: one batch where their sizes agree
                same = value and all(isinstance(v, torch.Tensor) and v.shape[1:] == value[0].shape[1:] for v in value)
                value = torch.cat(list(value), dim=0) if same and name == "images" else list(value)
            if value is not BLOCKED:
                entry[name] = value
    return entry


def _takes_folders(cls) -> bool:
    from ..nodes.core import FolderNode

    return isinstance(cls, type) and issubclass(cls, FolderNode)


def _gather(prompt: dict, nid: str, types: dict, cache: dict, skip=()) -> dict:
    kwargs = {}
    latents = []
    for name, value in prompt[nid]["inputs"].items():
        spec, _ = spec_of(types, name)
        if spec is None or name in skip:
            continue
        kind = input_kind(spec)
        if is_link(value):
            v = cache[str(value[0])][value[1]]
        elif kind == "INT":
            v = int(value)
        elif kind == "FLOAT":
            v = float(value)
        else:
            v = value
        kwargs[name] = v
        if kind == "LATENT" and isinstance(v, dict) and "samples" in v:
            latents.append(name)
    if latents:
        model = _model_in(kwargs)
        if model is not None:
            for name in latents:
                kwargs[name] = remake_empty_latent(kwargs[name], model.latent_format)
    return kwargs


def _lazy_links(prompt: dict, nid: str, types: dict) -> set[str]:
    """The node's linked inputs declared lazy."""
    out = set()
    for name, value in prompt[nid]["inputs"].items():
        spec, _ = spec_of(types, name)
        if spec is not None and is_link(value) and input_options(spec).get("lazy"):
            out.add(name)
    return out


def _eager_sources(prompt: dict, nid: str, types: dict) -> list[str]:
    """The nodes `nid` needs whatever its lazy inputs decide (its links that are not lazy)."""
    lazy = _lazy_links(prompt, nid, types)
    return [str(v[0]) for k, v in prompt[nid]["inputs"].items()
            if is_link(v) and k not in lazy and str(v[0]) in prompt and spec_of(types, k)[0] is not None]


def lazy_only(prompt: dict, order: list[str], outputs: list[str], types: dict) -> set[str]:
    """The nodes of `order` that the outputs reach only through lazy inputs (run on demand, if at all)."""
    eager, stack = set(), list(outputs)
    while stack:
        nid = stack.pop()
        if nid in eager:
            continue
        eager.add(nid)
        stack.extend(_eager_sources(prompt, nid, types[nid]))
    return {nid for nid in order if nid not in eager}


def _resolve_lazy(prompt, nid, types, cache, obj, kwargs, lazy, demand) -> dict:
    """Ask the node which lazy inputs it needs (check_lazy_status), compute those, until it asks for no more."""
    values = {name: None for name in lazy}
    check = getattr(obj, "check_lazy_status", None)
    wanted = set(lazy) if check is None else None
    for _ in range(len(lazy) + 1):
        if wanted is None:
            asked = set()
            now = {**kwargs, **values}
            try:
                for kw in _calls(type(obj), now) or [now]:  # a list input: asked for each item, as ComfyUI
                    asked.update(check(**kw) or [])
            except (ValueError, TypeError) as e:
                raise WorkflowError(f"{describe(prompt, nid)}: {e}") from e
            wanted = {name for name in asked if name in lazy and values[name] is None}
        if not wanted:
            break
        for name in sorted(wanted):
            src = prompt[nid]["inputs"][name]
            if str(src[0]) not in cache:
                if demand is None:
                    raise WorkflowError(f"{describe(prompt, nid)}: lazy input '{name}' was not computed")
                demand(str(src[0]))
        values.update(_gather(prompt, nid, types, cache, skip=set(lazy) - wanted))
        values = {k: values[k] for k in lazy}
        wanted = None if check is not None else set()
    return {**kwargs, **values}


def run(workflow, models: str | os.PathLike | Mapping | None = None, overrides: Mapping | None = None, *,
        comfyui: str | os.PathLike | None = None, input_dir: str | os.PathLike | None = None,
        output_dir: str | os.PathLike | None = None, extra_model_paths: str | os.PathLike | None = None,
        device=None, dtype=None, cache=None, quiet: bool = True,
        progress: Callable[[int, int, str, str], None] | None = None, allow_pickle: bool = False,
        check_memory: bool = True, fp32_text_enc: bool = False) -> list[dict]:
    """Run a ComfyUI workflow headless and return its outputs.

    workflow: a path (API- or UI-format JSON, or a PNG/WebP carrying one), a JSON string, or a dict.
    models: a folder with checkpoints/, loras/, ... (ComfyUI's models/ layout), or a mapping ckpt_name -> a
    loaded model; CheckpointLoaderSimple also takes the embedded models "textures" and "ideal" by name.
    overrides: {"NODE_ID.input": value} set before the run (like `--set`).
    comfyui: a ComfyUI install: its models/, input/ and extra_model_paths.yaml.
    input_dir / output_dir: LoadImage's folder / where SaveImage and SaveLatent write (default: the current
    folder). cache: a `twosamplers.models.ModelCache` to share loaded models between runs (default: a new
    one, so each model is loaded once per run). allow_pickle: load pickle checkpoints, LoRAs and ControlNets
    (.ckpt/.pt/.bin; weights only) the workflow names; refused otherwise. check_memory: refuse, before any node
    runs, a workflow whose memory estimate exceeds what the machine has (`limits.check_memory`).
    fp32_text_enc: text-encoder weights held in float32 (ComfyUI's --fp32-text-enc; by default they are held in
    float16 and computed in float32, as ComfyUI does).
    Returns one dict per output node: {"node", "class_type", "files": [paths written], "images" or "samples":
    what it received}. Raises WorkflowError (a ValueError) for a workflow that cannot run; nothing is written
    then.
    """
    opts = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if allow_pickle:
        opts["allow_pickle"] = True
    if fp32_text_enc:
        opts["fp32_text_enc"] = True
    folders = Folders.create(models, comfyui=comfyui, input_dir=input_dir, output_dir=output_dir,
                             extra_model_paths=extra_model_paths, load_options=opts, cache=cache)
    if output_dir is None:
        folders.output_dir = Path(".")
    out_dir = folders.output_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise WorkflowError(f"output folder {out_dir} is a file")
    wf = load(workflow, folders)
    # the UI-format copy is what ComfyUI opens from a PNG: with overrides it would show values that did not run
    wf = Workflow(apply_overrides(wf.prompt, overrides), None if overrides else wf.ui, wf.source)
    return execute(wf, folders, progress=progress, quiet=quiet, check_memory=check_memory)


__all__ = ["apply_overrides", "execute", "load", "parse_value", "run"]
