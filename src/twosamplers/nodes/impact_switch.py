"""Impact Pack's ImpactSwitch ("Switch (Any)"): one of its inputs input1, input2, ... chosen by `select`, with the
slot's label and the index; and ImpactInversedSwitch ("Inversed Switch (Any)"): its input sent to output `select`,
the other outputs blocked (`BLOCKED`: the workflow runner skips every node that would get a blocked value, as
ComfyUI's execution blockers do, so nothing downstream of an output that was not chosen runs or writes a file).

ImpactSwitch's inputs are lazy, as in Impact: only the chosen input is computed, and the workflow runner skips
what only the other inputs need. `sel_mode` (select on prompt / on execution) makes no difference here. The
label is the slot's label in the saved UI workflow, else "inputN". A `select` naming an input that is not
connected is an error here (Impact passes None on, and the node after it fails).
"""

from __future__ import annotations

from .._checks import check_int

MAX_INPUTS = 99
MAX_OUTPUTS = 99


class _Blocked:
    """The value of a switch output that was not chosen."""

    def __repr__(self) -> str:
        return "BLOCKED"


BLOCKED = _Blocked()


class ImpactSwitch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"select": ("INT", {"default": 1, "min": 1, "max": 999999, "step": 1}),
                             "sel_mode": ("BOOLEAN", {"default": False, "label_on": "select_on_prompt",
                                                      "label_off": "select_on_execution"})},
                "optional": {f"input{i}": ("*", {"lazy": True}) for i in range(1, MAX_INPUTS + 1)},
                "hidden": {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ("*", "STRING", "INT")
    RETURN_NAMES = ("selected_value", "selected_label", "selected_index")
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def check_lazy_status(self, select, **inputs):
        return [f"input{check_int('select', select, 1, 999999)}"]

    def doit(self, select, sel_mode=False, unique_id=None, extra_pnginfo=None, **inputs):
        index = check_int("select", select, 1, 999999)
        name = f"input{index}"
        if name not in inputs or inputs[name] is None:
            raise ValueError(f"{type(self).__name__}: select={index} chooses {name}, which is not connected")
        return (inputs[name], _label(extra_pnginfo, unique_id, name), index)


class ImpactInversedSwitch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"select": ("INT", {"default": 1, "min": 1, "max": 999999, "step": 1}),
                             "input": ("*",)},
                "optional": {"sel_mode": ("BOOLEAN", {"default": False, "label_on": "select_on_prompt",
                                                      "label_off": "select_on_execution"})}}

    RETURN_TYPES = ("*",) * MAX_OUTPUTS
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, select, input, sel_mode=False):  # noqa: A002  (Impact's input name)
        index = check_int("select", select, 1, 999999)
        if index > MAX_OUTPUTS:
            raise ValueError(f"ImpactInversedSwitch: select={index}; at most {MAX_OUTPUTS} outputs")
        return tuple(input if i == index - 1 else BLOCKED for i in range(MAX_OUTPUTS))


def _label(extra_pnginfo, unique_id, name: str) -> str:
    workflow = (extra_pnginfo or {}).get("workflow") if isinstance(extra_pnginfo, dict) else None
    for node in (workflow or {}).get("nodes") or []:
        if isinstance(node, dict) and str(node.get("id")) == str(unique_id):
            for slot in node.get("inputs") or []:
                if isinstance(slot, dict) and slot.get("name") == name and slot.get("label"):
                    return str(slot["label"])
    return name


__all__ = ["BLOCKED", "ImpactInversedSwitch", "ImpactSwitch"]
