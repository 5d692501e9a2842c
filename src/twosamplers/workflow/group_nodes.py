"""Group nodes (ComfyUI frontend's "Convert to Group Node"): a node of type "workflow/NAME" (newer frontends:
"workflow>NAME") whose inner nodes are stored in the file's extra.groupNodes[NAME] as {"nodes", "links",
"external"}. `expand_group_nodes(ui, input_types)` replaces every such node by its inner nodes, wired as ComfyUI's
frontend wires them when it queues the workflow:

- the group's input slots are, inner node by inner node (in stored order), the non-widget inputs that no inner link
  feeds, then, after all nodes, the widgets an inner node had converted to inputs (again only those no inner link
  feeds);
- the group's widgets are, inner node by inner node, the inner widgets not converted to inputs (a seed widget
  followed by its control value), then the converted widgets; the group node's widgets_values set them;
- the group's outputs are, inner node by inner node, the outputs that feed no inner node, plus those recorded in
  "external" (outputs used both inside and outside the group).
Inner nodes keep their stored widget values for everything the group does not expose. Inner Reroute and Primitive
nodes are kept as they are (the UI converter follows them). A group node without a definition stays unknown
(the runner refuses it, naming it).
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import WorkflowError
from .widgets import CONTROL_VALUES, WIDGET_TYPES, has_control_widget, input_kind, input_options, widget_values

PREFIXES = ("workflow/", "workflow>")


def _group_name(type_: str) -> str | None:
    for p in PREFIXES:
        if type_.startswith(p):
            return type_[len(p):]
    return None


def _interface(defn: dict, input_types: Callable[[str], dict | None]):
    """(input slots, widgets, outputs) of a group definition: lists of (inner index, input name / output slot)."""
    nodes = defn.get("nodes") or []
    linked_in = {(int(lk[2]), int(lk[3])) for lk in defn.get("links") or [] if lk and lk[0] is not None}
    linked_out = {(int(lk[0]), int(lk[1])) for lk in defn.get("links") or [] if lk and lk[0] is not None}
    # an exposed output: [inner index, slot, type]; older frontends stored the inner node itself (with "index")
    external = {(int(e[0]["index"] if isinstance(e[0], dict) else e[0]), int(e[1])) for e in defn.get("external") or []
                if isinstance(e, (list, tuple)) and len(e) >= 2}
    slots, widgets, converted, outputs = [], [], [], []
    for idx, node in enumerate(nodes):
        types = input_types(node.get("type", ""))
        node_inputs = node.get("inputs") or []
        slot_of = {inp.get("name"): k for k, inp in enumerate(node_inputs)}
        if types is None:  # a Reroute, or a type we do not know (refused later, by name): its own input slots
            slots += [(idx, inp.get("name")) for k, inp in enumerate(node_inputs)
                      if isinstance(inp, dict) and (idx, k) not in linked_in and not inp.get("widget")]
            types = {}
        for section in ("required", "optional"):
            for name, spec in (types.get(section) or {}).items():
                is_widget = input_kind(spec) in WIDGET_TYPES and not input_options(spec).get("forceInput")
                k = slot_of.get(name)
                fed = k is not None and (idx, k) in linked_in
                if is_widget and k is not None and (node_inputs[k].get("widget") or {}).get("name") == name:
                    if not fed:
                        converted.append((idx, name, has_control_widget(name, spec)))
                elif is_widget:
                    widgets.append((idx, name, has_control_widget(name, spec)))
                elif not fed and k is not None:
                    slots.append((idx, name))
        for o, _out in enumerate(node.get("outputs") or []):
            if (idx, o) not in linked_out or (idx, o) in external:
                outputs.append((idx, o))
    slots += [(idx, name) for idx, name, _c in converted]
    return slots, widgets + converted, outputs


def _widget_values(node: dict, widgets: list, start: int = 0) -> dict[tuple[int, str], object]:
    vals = node.get("widgets_values")
    out = {}
    if isinstance(vals, dict):
        return {(idx, name): vals[name] for idx, name, _c in widgets if name in vals}
    vals = list(vals or [])
    i = start
    for idx, name, control in widgets:
        if i >= len(vals):
            break
        out[(idx, name)] = vals[i]
        i += 1
        if control and i < len(vals) and (vals[i] in CONTROL_VALUES or isinstance(vals[i], bool)):
            i += 1
    return out


def _expand_one(group: dict, defn: dict, input_types, next_id: Callable[[], int], links: dict) -> list[dict]:
    """The inner nodes of one group node, with new ids; `links` (id -> [id, from, slot, to, slot, type]) is
    rewired in place."""
    slots, widgets, outputs = _interface(defn, input_types)
    inner = [dict(n) for n in defn.get("nodes") or []]
    ids = [next_id() for _ in inner]
    values = _widget_values(group, widgets)
    for k, node in enumerate(inner):
        types = input_types(node.get("type", ""))
        merged = widget_values(node, types) if types is not None else node.get("widgets_values")
        if isinstance(merged, dict):
            merged.update({name: v for (idx, name), v in values.items() if idx == k})
        node.update(id=ids[k], widgets_values=merged, mode=group.get("mode", 0),
                    inputs=[dict(i, link=None) for i in node.get("inputs") or []],
                    outputs=[dict(o, links=[]) for o in node.get("outputs") or []])
    for lk in defn.get("links") or []:
        if not lk or lk[0] is None:
            continue
        lid = max(links, default=0) + 1
        src, sslot, dst, dslot = int(lk[0]), int(lk[1]), int(lk[2]), int(lk[3])
        links[lid] = [lid, ids[src], sslot, ids[dst], dslot, lk[5] if len(lk) > 5 else None]
        inner[dst]["inputs"][dslot]["link"] = lid
        inner[src]["outputs"][sslot]["links"].append(lid)
    for k, inp in enumerate(group.get("inputs") or []):  # group input slot k -> the inner node's input
        lid = inp.get("link")
        if lid is None or lid not in links:
            continue
        if k >= len(slots):
            raise WorkflowError(f"group node {group.get('id')}: input {k} has no place in its definition")
        idx, name = slots[k]
        dslot = next(j for j, i in enumerate(inner[idx]["inputs"]) if i.get("name") == name)
        links[lid][3], links[lid][4] = ids[idx], dslot
        inner[idx]["inputs"][dslot]["link"] = lid
    for k, out in enumerate(group.get("outputs") or []):  # group output k -> the inner node's output
        for lid in out.get("links") or []:
            if lid in links:
                if k >= len(outputs):
                    raise WorkflowError(f"group node {group.get('id')}: output {k} has no place in its definition")
                idx, slot = outputs[k]
                links[lid][1], links[lid][2] = ids[idx], slot
    return inner


def expand_group_nodes(ui: dict, input_types: Callable[[str], dict | None]) -> dict:
    """The UI workflow with every defined group node replaced by its inner nodes (a new dict; `ui` is kept)."""
    defs = (ui.get("extra") or {}).get("groupNodes") or {}
    nodes = ui.get("nodes") or []
    if not defs or not any(isinstance(n, dict) and _group_name(str(n.get("type"))) in defs for n in nodes):
        return ui
    links = {}
    for lk in ui.get("links") or []:
        if isinstance(lk, list) and len(lk) >= 5:
            links[lk[0]] = list(lk) + [None] * (6 - len(lk))
    counter = [max([int(n["id"]) for n in nodes if isinstance(n, dict) and isinstance(n.get("id"), int)] or [0])]

    def next_id() -> int:
        counter[0] += 1
        return counter[0]

    out_nodes = []
    for n in nodes:
        name = _group_name(str(n.get("type"))) if isinstance(n, dict) else None
        defn = defs.get(name) if name is not None else None
        if isinstance(defn, dict):
            out_nodes += _expand_one(n, defn, input_types, next_id, links)
        else:
            out_nodes.append(n)
    return {**ui, "nodes": out_nodes, "links": list(links.values())}


__all__ = ["expand_group_nodes"]
