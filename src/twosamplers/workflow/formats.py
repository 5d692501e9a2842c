"""Reading workflows: ComfyUI's API format, its UI format, and PNG / WebP images that carry either.

- API format ("Save (API)"): {node_id: {"class_type": str, "inputs": {name: value | [source_id, slot]}}}.
- UI format ("Save"): {"nodes": [...], "links": [...]}: each node has a type, a mode, input sockets (with
  links) and `widgets_values`, the widget values in the order of the node type's inputs. `ui_to_api` turns it
  into the API format as ComfyUI's frontend does when it queues a prompt: widget values are matched to the
  node type's widget inputs in order (skipping the control_after_generate value stored after seed widgets and
  trailing extras such as LoadImage's upload button), linked inputs (converted widgets included) take the
  link, Reroute nodes are followed, Primitive nodes give their value, muted nodes (mode 2) are left out and
  bypassed nodes (mode 4) pass each input of a matching type through to the output.
- Images: ComfyUI's SaveImage writes the API prompt into a PNG text chunk "prompt" and the UI workflow into
  "workflow"; its WebP writer puts "prompt:{json}" / "workflow:{json}" into EXIF fields. The prompt is used
  when present (it is exactly what ran), else the workflow is converted.

A workflow is someone else's file: it is read only when it is an ordinary file of at most MAX_WORKFLOW_BYTES,
an image carrying one is refused when it is a decompression bomb, JSON nested deeper than MAX_JSON_DEPTH is
refused, the UI format's nodes and links must have the documented shapes, and links are followed without
recursion (a chain of thousands of Reroutes is fine; a loop is an error).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .._checks import MAX_JSON_DEPTH, loads_json
from .._paths import open_regular
from ..nodes.registry import scope_note
from .errors import WorkflowError
from .widgets import (  # noqa: F401  (re-exported: the widget layout's names, as callers import them from here)
    CONTROL_VALUES,
    WIDGET_TYPES,
    default_value,
    has_control_widget,
    input_kind,
    input_options,
    widget_inputs,
    widget_values,
)

MAX_WORKFLOW_BYTES = 256 * 1024 * 1024  # ComfyUI workflows are kilobytes to a few megabytes; PNGs can be larger

MUTED, BYPASSED = 2, 4
VIRTUAL_NODES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")


@dataclass
class Workflow:
    """A workflow ready to run: the API-format prompt, and the UI workflow when there is one (embedded in
    outputs as ComfyUI does)."""

    prompt: dict
    ui: dict | None = None
    source: str = "<workflow>"


# ---------------------------------------------------------------------------------------------- reading
def read_workflow(source, input_types: Callable[[str], dict | None],
                  legacy_layouts: Callable[[str], dict | None] | None = None) -> Workflow:
    """A path (JSON, PNG or WebP), a JSON string, or a dict -> Workflow. `input_types(class_type)` gives a
    node type's INPUT_TYPES (None for unknown types); the UI format needs it to place widget values."""
    if isinstance(source, Workflow):
        return source
    if isinstance(source, Mapping):
        return _from_json(dict(source), input_types, "<dict>", legacy_layouts)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return _from_json(_loads(source, "<string>"), input_types, "<string>", legacy_layouts)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"workflow must be a path, a JSON string or a dict, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"workflow file not found: {path}")
    with open_regular(path, "workflow file") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_WORKFLOW_BYTES:
            raise WorkflowError(f"{path} is {size} bytes; a workflow file is at most {MAX_WORKFLOW_BYTES} bytes")
        head = f.read(16)
        data = None if head.startswith(b"\x89PNG") or head[:4] == b"RIFF" else head + f.read()
    if head.startswith(b"\x89PNG") or head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        prompt_text, ui_text = image_chunks(path)
        ui = _loads(ui_text, f"{path} (workflow chunk)") if ui_text else None
        if prompt_text:
            prompt = _loads(prompt_text, f"{path} (prompt chunk)")
            return Workflow(_check_api(prompt, str(path)), ui if isinstance(ui, dict) else None, str(path))
        if ui is not None:
            return _from_json(ui, input_types, str(path), legacy_layouts)
        raise WorkflowError(f"{path} carries no workflow (no 'prompt' or 'workflow' text chunk)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise WorkflowError(f"{path} is neither a JSON workflow nor a PNG/WebP image: {e}") from None
    return _from_json(_loads(text, str(path)), input_types, str(path), legacy_layouts)


def _loads(text: str, where: str):
    try:
        return loads_json(text, where, MAX_JSON_DEPTH)
    except ValueError as e:
        raise WorkflowError(str(e)) from None


def image_chunks(path: Path) -> tuple[str | None, str | None]:
    """(prompt, workflow) JSON texts stored in a PNG's text chunks or a WebP's EXIF, as ComfyUI writes them."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                text = dict(getattr(im, "text", None) or im.info or {})
                exif = im.getexif()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise WorkflowError(f"{path} is too large to read safely (a possible decompression bomb): {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise WorkflowError(f"{path} is not a readable image: {e}") from None
    prompt = text.get("prompt") if isinstance(text.get("prompt"), str) else None
    workflow = text.get("workflow") if isinstance(text.get("workflow"), str) else None
    for value in exif.values():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            key, _, rest = value.partition(":")
            if key == "prompt" and prompt is None:
                prompt = rest
            elif key == "workflow" and workflow is None:
                workflow = rest
    return prompt, workflow


def _from_json(data, input_types, where: str, legacy_layouts=None) -> Workflow:
    if not isinstance(data, dict):
        raise WorkflowError(f"{where}: a workflow is a JSON object, got {type(data).__name__}")
    if isinstance(data.get("nodes"), list) and "links" in data:
        return Workflow(ui_to_api(data, input_types, legacy_layouts), data, where)
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        extra = data.get("extra_data")
        info = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
        ui = info.get("workflow") if isinstance(info, dict) else None
        return Workflow(_check_api(data["prompt"], where), ui if isinstance(ui, dict) else None, where)
    return Workflow(_check_api(data, where), None, where)


def _check_api(prompt, where: str) -> dict:
    if not isinstance(prompt, dict) or not prompt:
        raise WorkflowError(f"{where}: not a ComfyUI workflow (neither the API format {{id: {{class_type, inputs}}}} "
                            "nor the UI format {nodes, links})")
    bad = [str(k) for k, v in prompt.items() if not isinstance(v, dict) or not isinstance(v.get("class_type"), str)]
    if bad and len(bad) == len(prompt):
        raise WorkflowError(f"{where}: not a ComfyUI API-format workflow: entries {', '.join(bad[:10])} have no "
                            "'class_type' (a UI-format workflow has 'nodes' and 'links')")
    if bad:  # ComfyUI skips top-level keys that are not nodes (extra data some tools add); so do we, saying so
        warnings.warn(f"{where}: skipped top-level {'entries' if len(bad) > 1 else 'entry'} "
                      f"{', '.join(repr(b) for b in bad[:10])}: not a node (no 'class_type')", stacklevel=2)
        prompt = {k: v for k, v in prompt.items() if str(k) not in bad}
    for k, v in prompt.items():
        if not isinstance(v.get("inputs", {}), dict):
            raise WorkflowError(f"{where}: node {k} ({v['class_type']}): 'inputs' must be an object")
    return {str(k): {"class_type": v["class_type"], "inputs": dict(v.get("inputs", {})),
                     **({"_meta": v["_meta"]} if "_meta" in v else {})} for k, v in prompt.items()}


# ---------------------------------------------------------------------------------------------- UI format
def _links(ui: dict) -> dict[int, tuple]:
    out = {}
    links = ui.get("links") or []
    if not isinstance(links, list):
        raise WorkflowError(f"UI workflow: 'links' must be a list, got {type(links).__name__}")
    for link in links:
        if isinstance(link, list) and len(link) >= 5:
            entry = (link[0], link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
        elif isinstance(link, dict):
            entry = (link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                     link.get("target_slot"), link.get("type"))
        else:
            raise WorkflowError(f"UI workflow: malformed link {str(link)[:80]}")
        if not all(_is_id(v) for v in (entry[0], entry[1])) or not _is_slot(entry[2]):
            raise WorkflowError(f"UI workflow: malformed link {str(link)[:80]} (ids must be numbers or strings, "
                                "the origin slot a number)")
        out[entry[0]] = entry[1:]
    return out


def _is_id(v) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _is_slot(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_ui_node(n) -> None:
    """A UI node's shape: an id, a type, and lists (of objects) where the format has lists."""
    if not isinstance(n, dict) or not _is_id(n.get("id")) or not isinstance(n.get("type"), str):
        raise WorkflowError(f"UI workflow: malformed node {str(n)[:80]}")
    for key in ("inputs", "outputs"):
        value = n.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
            raise WorkflowError(f"UI workflow: node {n['id']} ({n['type']}): '{key}' must be a list of objects, "
                                f"got {str(value)[:60]}")
    for inp in n.get("inputs") or []:
        if inp.get("link") is not None and not _is_id(inp.get("link")):
            raise WorkflowError(f"UI workflow: node {n['id']} ({n['type']}): input link {inp.get('link')!r} is not "
                                "a link id")
    vals = n.get("widgets_values")
    if vals is not None and not isinstance(vals, (list, dict)):
        raise WorkflowError(f"UI workflow: node {n['id']} ({n['type']}): 'widgets_values' must be a list or an "
                            f"object, got {type(vals).__name__}")
    if not isinstance(n.get("mode", 0), int) or isinstance(n.get("mode", 0), bool):
        raise WorkflowError(f"UI workflow: node {n['id']} ({n['type']}): 'mode' must be a number")


def ui_to_api(ui: dict, input_types: Callable[[str], dict | None],
              legacy_layouts: Callable[[str], dict | None] | None = None) -> dict:
    """A UI-format workflow -> the API-format prompt ComfyUI's frontend would queue for it. `legacy_layouts(type)`
    gives a node type's older widget layouts ({count: names}), or None. Group nodes defined in extra.groupNodes
    are expanded first (`group_nodes`); every node's shape is checked (`_check_ui_node`)."""
    from .group_nodes import expand_group_nodes

    ui = expand_group_nodes(ui, input_types)
    nodes = {}
    for n in ui.get("nodes") or []:
        _check_ui_node(n)
        nodes[n["id"]] = n
    active = [n for n in nodes.values() if n["type"] not in VIRTUAL_NODES and n.get("mode", 0) not in
              (MUTED, BYPASSED)]
    unknown = [n for n in active if input_types(n["type"]) is None]
    if unknown:
        subgraphs = {g.get("id") for g in (ui.get("definitions") or {}).get("subgraphs") or [] if isinstance(g, dict)}
        raise WorkflowError(unsupported_message([(str(n["id"]), n["type"]) for n in unknown], subgraphs))
    links = _LinkResolver(nodes, _links(ui))
    prompt = {}
    for n in sorted(active, key=_node_order):
        legacy = legacy_layouts(n["type"]) if legacy_layouts else None
        inputs = widget_values(n, input_types(n["type"]) or {}, legacy)
        for inp in n.get("inputs") or []:
            if inp.get("link") is None:
                continue
            src = links.follow(inp["link"])
            if src is None:  # from a muted node, or a bypassed one with nothing to pass on
                if not inp.get("widget"):
                    inputs.pop(inp.get("name"), None)
                continue
            inputs[inp.get("name")] = list(src[1:]) if src[0] == "link" else src[1]
        entry = {"class_type": n["type"], "inputs": inputs}
        if n.get("title"):
            entry["_meta"] = {"title": n["title"]}
        prompt[str(n["id"])] = entry
    if not prompt:
        raise WorkflowError("UI workflow: no active nodes")
    return prompt


def _node_order(n: dict) -> tuple:
    order = n.get("order", 0)
    order = order if isinstance(order, (int, float)) and not isinstance(order, bool) else 0
    return (order, str(n["id"]) if isinstance(n["id"], str) else "", n["id"] if isinstance(n["id"], int) else 0)


class _LinkResolver:
    """Where a UI link's value comes from, through Reroutes, Primitive nodes, muted and bypassed nodes."""

    def __init__(self, nodes: dict, links: dict) -> None:
        self.nodes, self.links = nodes, links

    def follow(self, link_id):
        """-> ("link", node_id, slot) | ("value", v) | None (nothing arrives). Iterative: a chain of thousands of
        Reroutes or bypassed nodes needs no recursion; a loop is an error."""
        seen: set = set()
        while True:
            if link_id is None or link_id not in self.links:
                return None
            origin, slot, *_ = self.links[link_id]
            src = self.nodes.get(origin)
            if src is None:
                raise WorkflowError(f"UI workflow: link {link_id} comes from node {origin}, which does not exist")
            if origin in seen:
                raise WorkflowError(f"UI workflow: link {link_id} loops through node {origin}")
            seen.add(origin)
            kind, mode = src["type"], src.get("mode", 0)
            if kind == "Reroute":
                link_id = ((src.get("inputs") or [{}])[0]).get("link")
                continue
            if kind == "PrimitiveNode":
                vals = src.get("widgets_values") or []
                if not vals or not isinstance(vals, list):
                    raise WorkflowError(f"UI workflow: Primitive node {origin} has no value")
                return ("value", vals[0])
            if mode == MUTED:
                return None
            if mode == BYPASSED:
                pick = self._bypass_input(src, slot)
                if pick is None:
                    return None
                link_id = pick.get("link")
                continue
            return ("link", str(origin), int(slot))

    @staticmethod
    def _bypass_input(src: dict, slot) -> dict | None:
        """The input a bypassed node passes to output `slot`: the same slot if its type matches, else the first
        linked input of the output's type."""
        outs = src.get("outputs") or []
        out_type = outs[slot].get("type") if slot is not None and slot < len(outs) else None
        ins = src.get("inputs") or []
        if slot is not None and slot < len(ins) and ins[slot].get("type") == out_type:
            return ins[slot]
        return next((i for i in ins if i.get("type") == out_type and i.get("link") is not None), None)


def unsupported_message(items: list[tuple[str, str]], subgraphs: set | frozenset = frozenset()) -> str:
    parts = []
    for nid, kind in items:
        note = ""
        if kind.startswith(("workflow/", "workflow>")):
            note = " (a group node: ungroup it in ComfyUI)"
        elif kind in subgraphs:
            note = " (a subgraph: unpack it in ComfyUI)"
        else:
            note = f" ({scope_note(kind)})"
        parts.append(f"{json.dumps(kind)} (node {nid}){note}")
    return (f"unsupported node type{'s' if len(parts) > 1 else ''}: {', '.join(parts)}; "
            "`twosamplers run --list-nodes` lists the supported ones")


__all__ = ["Workflow", "has_control_widget", "image_chunks", "input_kind", "read_workflow", "ui_to_api",
           "widget_inputs"]
