"""A UI node's widgets: which inputs ComfyUI's frontend shows as widgets, and how a node's `widgets_values` list maps
onto them (`widget_values`).

Widget values are stored in the order of the node type's widget inputs (required, then optional; an input with
`forceInput` is a socket, not a widget). A seed widget (and any INT widget whose options ask for it) stores its
control_after_generate value ("fixed", "increment", "decrement", "randomize"; older files a true/false) right after
its own; older frontends stored one after other INT widgets too, and older versions of a node had fewer widgets
(`legacy_layouts`). Used by the UI-format reader (`formats.ui_to_api`) and by group nodes (`group_nodes`), which
both import it; nothing here imports either of them.
"""

from __future__ import annotations

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def input_kind(spec: tuple) -> str:
    """The type of one INPUT_TYPES entry: "COMBO" for a list of choices, else its type name."""
    t = spec[0] if isinstance(spec, (tuple, list)) and spec else spec
    if isinstance(t, (list, tuple)):
        return "COMBO"
    return str(t)


def input_options(spec: tuple) -> dict:
    return spec[1] if isinstance(spec, (tuple, list)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def widget_inputs(types: dict) -> list[tuple[str, tuple, bool]]:
    """(name, spec, required) of the inputs a UI shows as widgets, in ComfyUI's order (required, optional)."""
    out = []
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (types.get(section) or {}).items():
            if input_kind(spec) in WIDGET_TYPES and not input_options(spec).get("forceInput"):
                out.append((name, spec, required))
    return out


def has_control_widget(name: str, spec: tuple) -> bool:
    """Seed widgets store a control_after_generate value ("fixed", "randomize", ...) after their own."""
    return input_kind(spec) == "INT" and (name in ("seed", "noise_seed")
                                         or bool(input_options(spec).get("control_after_generate")))


def default_value(spec: tuple):
    opts = input_options(spec)
    if "default" in opts:
        return opts["default"]
    if input_kind(spec) == "COMBO" and spec[0]:
        return list(spec[0])[0]
    return None


def _is_control_value(name: str, spec: tuple, value, nxt, spare: bool = False) -> bool:
    """Whether `value`, stored after the widget `name`, is that widget's control_after_generate value: after a
    seed widget any of "fixed"/"increment"/"decrement"/"randomize" (or a stored true/false); after another INT
    widget, such a value that the next widget could not take, or any such value when the list holds more values
    than widgets (`spare`: older frontends gave more INT widgets a control value)."""
    if input_kind(spec) != "INT":
        return False
    is_control = isinstance(value, bool) or isinstance(value, str) and value in CONTROL_VALUES
    if not is_control:
        return False
    if has_control_widget(name, spec):
        return not (isinstance(value, bool) and nxt is not None and input_kind(nxt[1]) == "BOOLEAN")
    if nxt is None:
        return True
    kind = input_kind(nxt[1])
    if isinstance(value, bool):
        return kind != "BOOLEAN"
    if spare:
        return True
    return not (kind == "STRING" or kind == "COMBO" and value in list(nxt[1][0]))


def _assign(vals: list, widgets: list, skip_all: bool) -> dict:
    """Stored values -> {widget name: value}, control values skipped (all control-like values after INT widgets
    with skip_all)."""
    out = {}
    i = 0
    for k, (name, spec, _req) in enumerate(widgets):
        if i >= len(vals):
            break
        out[name] = vals[i]
        i += 1
        nxt = widgets[k + 1] if k + 1 < len(widgets) else None
        if i < len(vals) and _is_control_value(name, spec, vals[i], nxt, skip_all):
            i += 1
    return out


def _all_valid(values: dict, widgets: list) -> bool:
    """Whether every value has its widget's type (a COMBO value among its choices)."""
    for name, spec, _req in widgets:
        if name not in values:
            continue
        v, kind = values[name], input_kind(spec)
        if kind == "COMBO" and v not in list(spec[0]) or kind == "BOOLEAN" and not isinstance(v, bool) or \
                kind in ("INT", "FLOAT") and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return False
    return True


def _plain_count(vals: list, widgets: list) -> int:
    """How many stored widget values are not control_after_generate values (for matching an older layout)."""
    n, prev_int = 0, False
    for v in vals:
        if prev_int and (isinstance(v, bool) or isinstance(v, str) and v in CONTROL_VALUES):
            prev_int = False
            continue
        n += 1
        prev_int = isinstance(v, int) and not isinstance(v, bool)
    return n


def widget_values(node: dict, types: dict, legacy_layouts: dict | None = None) -> dict:
    """A UI node's widgets_values as {input name: value}, in the node type's widget order (see the module doc);
    required widgets that the file lacks take their defaults. `legacy_layouts` ({count: widget names}) reads a
    list saved by an older version of the node (fewer widgets) by that version's layout, never shifted."""
    inputs: dict = {}
    vals = node.get("widgets_values")
    widgets = widget_inputs(types)
    if isinstance(vals, dict):
        inputs.update({name: vals[name] for name, _spec, _req in widgets if name in vals})
    else:
        vals = list(vals or [])
        legacy = (legacy_layouts or {}).get(_plain_count(vals, widgets))
        if legacy is not None and _plain_count(vals, widgets) != len(widgets):
            by_name = {name: (name, spec, req) for name, spec, req in widgets}
            widgets_in_file = [by_name[n] for n in legacy if n in by_name]
        else:
            widgets_in_file = widgets
        inputs.update(_assign(vals, widgets_in_file, False))
        if not _all_valid(inputs, widgets_in_file):
            # older frontends stored a control value after other INT widgets too: read it so when that fits
            other = _assign(vals, widgets_in_file, True)
            if _all_valid(other, widgets_in_file):
                inputs = other
    for name, spec, req in widgets:
        if name not in inputs and req:
            inputs[name] = default_value(spec)
    return inputs


__all__ = ["CONTROL_VALUES", "WIDGET_TYPES", "default_value", "has_control_widget", "input_kind", "input_options",
           "widget_inputs", "widget_values"]
