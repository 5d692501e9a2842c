"""Checking a posted prompt as ComfyUI's `/prompt` does, with its error shapes.

`validate_prompt(prompt, folders, targets)` returns `(ok, error, outputs, node_errors)` as ComfyUI's
validate_prompt: `error` is `{"type", "message", "details", "extra_info"}` (types: `invalid_prompt`,
`missing_node_type`, `prompt_no_outputs`, `prompt_outputs_failed_validation`), `node_errors` maps a node id to
`{"errors": [...], "dependent_outputs": [...], "class_type"}` with ComfyUI's per-input error types
(`required_input_missing`, `bad_linked_input`, `return_type_mismatch`, `invalid_input_type`,
`value_smaller_than_min`, `value_bigger_than_max`, `value_not_in_list`, `custom_validation_failed`,
`dependency_cycle`). As in ComfyUI, an output node that fails is dropped and the prompt runs the outputs that
pass; it is refused only when none passes. Constant values are converted in place the way ComfyUI converts
them (`"7"` and `7.0` for an INT become 7). A prompt that passes is then checked by the workflow runner's own
`graph.plan`, so nothing reaches the worker that the runner would refuse.

Messages are one line each and never carry a traceback.
"""

from __future__ import annotations

import math

from ..nodes.registry import NODES, input_types
from ..workflow.widgets import input_kind, input_options

MAX_LISTED = 20


def _error(kind: str, message: str, details: str = "", extra: dict | None = None) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def _title(node: dict, nid: str, default: str) -> str:
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) and title else default


def check_shape(prompt) -> dict | None:
    """A prompt that is not {id: {"class_type": known type, "inputs": {...}}}: ComfyUI's error, else None."""
    if not isinstance(prompt, dict) or not prompt:
        return _error("invalid_prompt", "the prompt must be a non-empty object {node id: {class_type, inputs}}",
                      f"got {type(prompt).__name__}")
    for nid, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            title = _title(node, nid, f"ID #{nid}")
            return _error("missing_node_type", f"Node '{title}' has no class_type", f"Node ID '#{nid}'",
                          {"node_id": nid, "class_type": None, "node_title": title})
        if not isinstance(node.get("inputs", {}), dict):
            return _error("invalid_prompt", f"node {nid}: 'inputs' must be an object", f"Node ID '#{nid}'")
        if node["class_type"] not in NODES:
            title = _title(node, nid, node["class_type"])
            return _error("missing_node_type", f"Node '{title}' not found: twosamplers has no node type "
                          f"'{node['class_type']}' (`twosamplers run --list-nodes` lists them)",
                          f"Node ID '#{nid}'", {"node_id": nid, "class_type": node["class_type"],
                                                "node_title": title})
    return None


def validate_prompt(prompt: dict, folders, targets: list | None = None) -> tuple[bool, dict | None, list, dict]:
    """See the module doc. `prompt` must have passed `check_shape`; its constants are normalised in place."""
    for node in prompt.values():
        node.setdefault("inputs", {})
    outputs = [nid for nid, n in prompt.items() if getattr(NODES[n["class_type"]], "OUTPUT_NODE", False)
               and (targets is None or nid in {str(t) for t in targets})]
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs",
                             "add an output node (SaveImage, PreviewImage, SaveLatent)"), [], {}
    checker = _Checker(prompt, folders)
    good, failed = [], []
    for o in outputs:
        if checker.visit(o, []):
            good.append(o)
        else:
            failed.append(o)
    node_errors: dict[str, dict] = {}
    for o in failed:
        for nid in checker.upstream(o):
            errs = checker.errors.get(nid)
            if errs:
                entry = node_errors.setdefault(nid, {"errors": errs, "dependent_outputs": [],
                                                     "class_type": prompt[nid]["class_type"]})
                entry["dependent_outputs"].append(o)
    if not good:
        lines = [f"{e['message']}: {e['details']}" for nid in node_errors for e in node_errors[nid]["errors"]]
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                             "\n".join(lines[:MAX_LISTED])), [], node_errors
    return True, None, good, node_errors


class _Checker:
    """ComfyUI's recursive validate_inputs over our node registry; `errors[nid]` lists each node's problems."""

    def __init__(self, prompt: dict, folders) -> None:
        self.prompt, self.folders = prompt, folders
        self.ok: dict[str, bool] = {}
        self.errors: dict[str, list[dict]] = {}

    def upstream(self, nid: str, seen: set | None = None) -> list[str]:
        seen = set() if seen is None else seen
        if nid in seen or nid not in self.prompt:
            return []
        seen.add(nid)
        out = [nid]
        for v in self.prompt[nid]["inputs"].values():
            if _is_link_shape(v) and str(v[0]) in self.prompt:
                out += self.upstream(str(v[0]), seen)
        return out

    def visit(self, nid: str, path: list[str]) -> bool:
        if nid in self.ok:
            return self.ok[nid]
        if nid in path:
            cycle = path[path.index(nid):] + [nid]
            text = " -> ".join(f"{c} ({self.prompt[c]['class_type']})" for c in cycle)
            for c in dict.fromkeys(cycle):
                self.errors.setdefault(c, []).append(_error("dependency_cycle", "Dependency cycle detected", text,
                                                            {"node_id": c, "cycle_nodes": list(dict.fromkeys(cycle))}))
                self.ok[c] = False
            return False
        node = self.prompt[nid]
        cls = NODES[node["class_type"]]
        types = input_types(cls, self.folders)
        errors: list[dict] = []
        valid = True
        files = {}
        for name, spec, required in _declared(types):
            if name not in node["inputs"]:
                if required:
                    errors.append(_error("required_input_missing", "Required input is missing", name,
                                         {"input_name": name}))
                continue
            value = node["inputs"][name]
            if isinstance(value, list):
                problem, src = self._link(name, spec, value)
                if problem is not None:
                    errors.append(problem)
                elif not self.visit(src, path + [nid]):
                    valid = False
                continue
            if name in getattr(cls, "FILE_INPUTS", ()):
                files[name] = value
                continue
            problem, converted = _constant(name, spec, value)
            if problem is not None:
                errors.append(problem)
            else:
                node["inputs"][name] = converted
        if files and not errors:
            errors += self._files(cls, files)
        if errors:
            self.errors.setdefault(nid, []).extend(errors)
        self.ok[nid] = valid and not errors and not self.errors.get(nid)
        return self.ok[nid]

    def _link(self, name: str, spec, value: list) -> tuple[dict | None, str | None]:
        extra = {"input_name": name, "received_value": value}
        if not _is_link_shape(value):
            return _error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                          name, extra), None
        src = str(value[0])
        if src not in self.prompt:
            return _error("bad_linked_input", f"input '{name}' is linked to node {src}, which is not in the prompt",
                          name, extra), None
        rtypes = list(getattr(NODES[self.prompt[src]["class_type"]], "RETURN_TYPES", ()))
        if not 0 <= value[1] < len(rtypes):
            return _error("bad_linked_input", f"input '{name}' is linked to output {value[1]} of node {src}, which "
                          f"has {len(rtypes)} outputs", name, extra), None
        got = rtypes[value[1]]
        got_kind = "COMBO" if isinstance(got, (list, tuple)) else str(got)
        want = input_kind(spec)
        if got_kind != want and "*" not in (got_kind, want):
            return _error("return_type_mismatch", "Return type mismatch between linked nodes",
                          f"{name}, received_type({got_kind}) mismatch input_type({want})",
                          {"input_name": name, "received_type": got_kind, "linked_node": value}), None
        return None, src

    def _files(self, cls, files: dict) -> list[dict]:
        """Model and input-folder files: a model not found is ComfyUI's value_not_in_list; an input file
        (LoadImage's image) its custom_validation_failed."""
        out = []
        input_files = getattr(cls, "INPUT_FILES", ())
        for name, value in files.items():
            if not isinstance(value, str):
                out.append(_error("invalid_input_type", "Failed to convert an input value to a file name",
                                  f"{name}, {value!r}", {"input_name": name, "received_value": value}))
        if out or getattr(cls, "check_inputs", None) is None:
            return out
        try:
            cls(self.folders).check_inputs(**files)
        except (FileNotFoundError, ValueError, TypeError) as e:
            message = " ".join(str(e).split())
            name = next((n for n in files if repr(files[n]) in message or str(files[n]) in message), next(iter(files)))
            if name in input_files:
                out.append(_error("custom_validation_failed", "Custom validation failed for node",
                                  f"{name} - {message}", {"input_name": name}))
            else:
                out.append(_error("value_not_in_list", "Value not in list", f"{name}: {files[name]!r} not found "
                                  f"({message})", {"input_name": name, "received_value": files[name]}))
        return out


def _is_link_shape(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
        and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool)


def _declared(types: dict):
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (types.get(section) or {}).items():
            yield name, spec, required


def _constant(name: str, spec, value) -> tuple[dict | None, object]:
    """(problem, value converted as ComfyUI converts it)."""
    kind, opts = input_kind(spec), input_options(spec)
    extra = {"input_name": name, "received_value": value}
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    try:
        if kind == "INT":
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("not a finite number")
            value = int(value)
        elif kind == "FLOAT":
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("not a finite number")
        elif kind == "STRING":
            if isinstance(value, (dict, list)):
                raise ValueError("not text")
            value = str(value)
        elif kind == "BOOLEAN":
            value = bool(value)
    except (ValueError, TypeError, OverflowError) as e:
        return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                      f"{name}, {value!r}, {e}", extra), value
    if kind in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            return _error("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}", name,
                          extra), value
        if "max" in opts and value > opts["max"]:
            return _error("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}", name,
                          extra), value
    if kind == "COMBO":
        choices = list(spec[0])
        if value not in choices:
            shown = f"(list of length {len(choices)})" if len(choices) > MAX_LISTED else str(choices)
            return _error("value_not_in_list", "Value not in list", f"{name}: {value!r} not in {shown}", extra), value
    elif kind not in ("INT", "FLOAT", "STRING", "BOOLEAN"):
        return _error("invalid_input_type", f"input '{name}' takes a {kind} from another node's output",
                      f"{name}, {value!r}", extra), value
    return None, value


__all__ = ["check_shape", "validate_prompt"]
