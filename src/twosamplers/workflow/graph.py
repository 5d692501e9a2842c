"""Checking an API-format prompt before anything runs, and the order to run it in.

`plan(prompt, folders)` finds the output nodes, the nodes they need (only those), checks every needed node
(known type, required inputs present, links to existing nodes and slots, the linked output's type matching
the input's type, constant values of the right type and range, files found), orders them so that each node
runs after its inputs, and reports a cycle by the nodes on it. All problems are collected and raised as one
WorkflowError.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..nodes.registry import NODES, input_types
from .errors import WorkflowError
from .formats import unsupported_message
from .widgets import CONTROL_VALUES, input_kind, input_options

MAX_ERRORS = 20


@dataclass
class Plan:
    order: list[str]           # node ids, dependencies first
    outputs: list[str]         # output node ids, in prompt order
    types: dict[str, dict]     # node id -> its INPUT_TYPES


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def describe(prompt: dict, nid: str) -> str:
    return f"node {nid} ({prompt[nid]['class_type']})" if nid in prompt else f"node {nid}"


def spec_of(types: dict, name: str):
    """(spec, required) of input `name`; numbered inputs that a UI adds on demand (regional_prompts2, ... after
    a declared regional_prompts1) take the first one's spec."""
    for section in ("required", "optional"):
        if name in (types.get(section) or {}):
            return types[section][name], section == "required"
    m = re.fullmatch(r"(.*?)(\d+)", name)
    if m and int(m.group(2)) > 1:
        for section in ("required", "optional"):
            first = (types.get(section) or {}).get(m.group(1) + "1")
            if first is not None:
                return first, False
    return None, False


def check_value(name: str, spec, value) -> str | None:
    """A problem with a constant input value, or None."""
    kind, opts = input_kind(spec), input_options(spec)
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, float) and (
                not math.isfinite(value) or value != int(value)):
            return f"input '{name}' must be an integer, got {value!r}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"input '{name}' must be a number, got {value!r}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"input '{name}' must be true or false, got {value!r}"
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"input '{name}' must be a string, got {value!r}"
    elif kind == "COMBO":
        choices = list(spec[0])
        if value not in choices:
            shown = ", ".join(map(str, choices[:40])) + (", ..." if len(choices) > 40 else "")
            why = (" (a seed's control_after_generate setting, saved in this input's place by another version of "
                   "the node)") if value in CONTROL_VALUES else ""
            return (f"input '{name}' = {value!r} is not one of: {shown}{why}; choose one in the workflow or with "
                    f"`--set ID.{name}=VALUE`")
        return None
    else:
        return f"input '{name}' takes a {kind} from another node's output, got the value {value!r}"
    if kind in ("INT", "FLOAT"):
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and value < lo or hi is not None and value > hi:
            return f"input '{name}' = {value} is out of range ({lo} .. {hi})"
    return None


def plan(prompt: dict, folders=None) -> Plan:
    """Validate the prompt and order the nodes the outputs need (see the module doc)."""
    unknown = [(nid, n["class_type"]) for nid, n in prompt.items() if n["class_type"] not in NODES]
    if unknown:
        raise WorkflowError(unsupported_message(unknown))
    types = {nid: input_types(NODES[n["class_type"]], folders) for nid, n in prompt.items()}
    outputs = [nid for nid, n in prompt.items() if getattr(NODES[n["class_type"]], "OUTPUT_NODE", False)]
    if not outputs:
        out_types = sorted(k for k, c in NODES.items() if getattr(c, "OUTPUT_NODE", False))
        raise WorkflowError(f"the workflow has no output node ({', '.join(out_types)}): nothing to run")
    order = dependency_order(prompt, outputs)
    errors = [e for nid in order for e in check_node(prompt, nid, types[nid], folders)]
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise WorkflowError("; ".join(errors[:MAX_ERRORS]) + more)
    return Plan(order, outputs, types)


def dependency_order(prompt: dict, outputs: list[str]) -> list[str]:
    """The nodes `outputs` need, each after its inputs; a cycle is an error naming the nodes on it. Walked with an
    explicit stack (a workflow is someone else's file: a chain of thousands of nodes must not exhaust Python's
    recursion limit)."""
    order: list[str] = []
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    for root in outputs:
        if state.get(root) == 2:
            continue
        path: list[str] = [root]
        state[root] = 1
        stack = [(root, iter(_sources(prompt, root)))]
        while stack:
            nid, pending = stack[-1]
            src = next(pending, None)
            if src is None:
                stack.pop()
                path.pop()
                state[nid] = 2
                order.append(nid)
                continue
            if state.get(src) == 2:
                continue
            if state.get(src) == 1:
                cycle = path[path.index(src):] + [src]
                raise WorkflowError("the workflow has a cycle: " + " -> ".join(describe(prompt, c) for c in cycle))
            state[src] = 1
            path.append(src)
            stack.append((src, iter(_sources(prompt, src))))
    return order


def _sources(prompt: dict, nid: str) -> list[str]:
    return [str(v[0]) for v in prompt[nid]["inputs"].values() if is_link(v) and str(v[0]) in prompt]


def check_node(prompt: dict, nid: str, types: dict, folders=None) -> list[str]:
    """Every problem with one node's inputs (missing, bad links, wrong types, bad values, files not found)."""
    node = prompt[nid]
    cls = NODES[node["class_type"]]
    where = describe(prompt, nid)
    errors = [f"{where}: required input '{name}' is missing" for name in types.get("required") or {}
              if name not in node["inputs"]]
    file_inputs = getattr(cls, "FILE_INPUTS", ())
    checked = getattr(cls, "OUTPUT_INPUTS", ())  # e.g. SaveImage's filename_prefix: checked before the run too
    constants = {}
    for name, value in node["inputs"].items():
        spec, _req = spec_of(types, name)
        if spec is None:
            continue  # inputs this node type does not have are ignored, as ComfyUI does
        if is_link(value):
            problem = _check_link(prompt, name, input_kind(spec), value)
        elif name in file_inputs:
            ok = isinstance(value, str) or isinstance(value, dict) and getattr(cls, "FILE_REFERENCES", False)
            problem = None if ok else f"input '{name}' must be a file name, got {value!r}"
            constants[name] = value
        else:
            problem = check_value(name, spec, value)
            if problem:
                problem = problem.replace("`--set ID.", f"`--set {nid}.")
            if problem is None and name in checked:
                constants[name] = value
        if problem:
            errors.append(f"{where}: {problem}")
    if constants and not errors and getattr(cls, "check_inputs", None) is not None:
        try:
            (cls(folders) if folders is not None else cls()).check_inputs(**constants)
        except (FileNotFoundError, ValueError, TypeError) as e:
            errors.append(f"{where}: {e}")
    return errors


def _check_link(prompt: dict, name: str, want: str, value: list) -> str | None:
    src = str(value[0])
    if src not in prompt:
        return f"input '{name}' is linked to node {src}, which is not in the workflow"
    rtypes = list(getattr(NODES[prompt[src]["class_type"]], "RETURN_TYPES", ()))
    if not 0 <= value[1] < len(rtypes):
        return f"input '{name}' is linked to output {value[1]} of {describe(prompt, src)}, which has " \
               f"{len(rtypes)} outputs"
    got = rtypes[value[1]]
    got = "COMBO" if isinstance(got, (list, tuple)) else str(got)
    if got != want and "*" not in (got, want):
        return f"input '{name}' expects {want} but {describe(prompt, src)} output {value[1]} gives {got}"
    return None


__all__ = ["Plan", "check_node", "check_value", "dependency_order", "describe", "is_link", "plan", "spec_of"]
