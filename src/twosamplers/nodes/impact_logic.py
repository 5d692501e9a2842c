"""Impact Pack's logic and value nodes (category ImpactPack/Logic), as they behave in Impact Pack V7.10.6: compare,
branch, min / max, negate, and / or / xor, "if none", the image / latent shape readers, the data-type converter, the
string selector, the dummy input and the execution-order pass-through.

Impact declares most of these with "any" inputs (`*`); the values that reach them here are Python ints, floats,
bools, strings or tensors. Where Impact would hand a comparison to Python and get an exception or a tensor (a > b of
a number and a string, two images compared), the node says so with the two types instead.

ImpactConditionalBranch is lazy as in Impact: only the chosen side (tt_value for true, ff_value for false) is
computed; the workflow runner skips everything that only the other side needs. ImpactConditionalBranchSelMode
(Impact's variant for ComfyUI versions without lazy inputs) computes both and returns the chosen one.
"""

from __future__ import annotations

import re

import torch

from .._checks import check_bool, check_choice, check_int

CATEGORY = "ImpactPack/Logic"
TEST_CATEGORY = "ImpactPack/Logic/_for_test"
COMPARISONS = ("a = b", "a <> b", "a > b", "a < b", "a >= b", "a <= b", "tt", "ff")
LOGICAL = ("and", "or", "xor")
INT_MAX = 2**63 - 1   # sys.maxsize on the 64-bit systems ComfyUI runs on
_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+")


def _plain(name: str, value):
    """A value Python can order: a number, bool or string (a one-element tensor is read as its number)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"input '{name}' must be a number, boolean or string to compare, got {type(value).__name__}")


def _compare(op: str, a, b):
    a, b = _plain("a", a), _plain("b", b)
    try:
        if op == "a = b":
            return a == b
        if op == "a <> b":
            return a != b
        if op == "a > b":
            return a > b
        if op == "a < b":
            return a < b
        if op == "a >= b":
            return a >= b
        return a <= b
    except TypeError:
        raise TypeError(f"cannot compare a ({type(a).__name__} {a!r}) with b ({type(b).__name__} {b!r}) "
                        f"by '{op}'") from None


class ImpactCompare:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"cmp": (list(COMPARISONS),), "a": ("*",), "b": ("*",)}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, cmp, a=None, b=None):
        op = check_choice("cmp", cmp, COMPARISONS)
        if op in ("tt", "ff"):
            return (op == "tt",)
        return (bool(_compare(op, a, b)),)


class ImpactConditionalBranch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"cond": ("BOOLEAN",), "tt_value": ("*", {"lazy": True}),
                             "ff_value": ("*", {"lazy": True})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def check_lazy_status(self, cond, tt_value=None, ff_value=None):
        return ["tt_value"] if check_bool("cond", cond) else ["ff_value"]

    def doit(self, cond, tt_value=None, ff_value=None):
        return (tt_value if check_bool("cond", cond) else ff_value,)


class ImpactConditionalBranchSelMode:
    @classmethod
    def INPUT_TYPES(cls):
        # Impact shows sel_mode only on ComfyUI versions without lazy execution; older saved files carry it
        return {"required": {"cond": ("BOOLEAN",)},
                "optional": {"sel_mode": ("BOOLEAN", {"default": True, "label_on": "select_on_prompt",
                                                      "label_off": "select_on_execution"}),
                             "tt_value": ("*",), "ff_value": ("*",)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, cond, tt_value=None, ff_value=None, sel_mode=True):
        return (tt_value if check_bool("cond", cond) else ff_value,)


class ImpactIfNone:
    """signal passes through; bool says whether any_input is connected (has a value)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"signal": ("*",), "any_input": ("*",)}}

    RETURN_TYPES = ("*", "BOOLEAN")
    RETURN_NAMES = ("signal_opt", "bool")
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, signal=None, any_input=None):
        return (signal, any_input is not None)


class ImpactLogicalOperators:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"operator": (list(LOGICAL),), "bool_a": ("BOOLEAN", {"forceInput": True}),
                             "bool_b": ("BOOLEAN", {"forceInput": True})}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, operator, bool_a, bool_b):
        op = check_choice("operator", operator, LOGICAL)
        a, b = check_bool("bool_a", bool_a), check_bool("bool_b", bool_b)
        return ((a and b) if op == "and" else (a or b) if op == "or" else (a != b),)


class ImpactNeg:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("BOOLEAN", {"forceInput": True})}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, value):
        return (not check_bool("value", value),)


class ImpactMinMax:
    """max(a, b) (mode true, "max") or min(a, b); Impact declares the output INT but passes the value as it is."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mode": ("BOOLEAN", {"default": True, "label_on": "max", "label_off": "min"}),
                             "a": ("*",), "b": ("*",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "doit"
    CATEGORY = TEST_CATEGORY

    def doit(self, mode, a, b):
        a, b = _plain("a", a), _plain("b", b)
        try:
            return ((max if check_bool("mode", mode) else min)(a, b),)
        except TypeError:
            raise TypeError(f"cannot order a ({type(a).__name__} {a!r}) and b ({type(b).__name__} {b!r})") from None


class ImpactImageInfo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("IMAGE",)}}

    RETURN_TYPES = ("INT", "INT", "INT", "INT")
    RETURN_NAMES = ("batch", "height", "width", "channel")
    FUNCTION = "doit"
    CATEGORY = TEST_CATEGORY

    def doit(self, value):
        if not isinstance(value, torch.Tensor) or value.ndim != 4:
            raise TypeError(f"value must be an IMAGE tensor (B, H, W, C), got {_shape(value)}")
        return tuple(int(n) for n in value.shape)


class ImpactLatentInfo:
    """batch, height, width, channel of a latent; height and width are the latent's x 8, as Impact reports them
    (whatever the model's real downscale)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("LATENT",)}}

    RETURN_TYPES = ("INT", "INT", "INT", "INT")
    RETURN_NAMES = ("batch", "height", "width", "channel")
    FUNCTION = "doit"
    CATEGORY = TEST_CATEGORY

    def doit(self, value):
        samples = value.get("samples") if isinstance(value, dict) else None
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
            got = _shape(value if samples is None else samples)
            raise TypeError(f"value must be a LATENT {{'samples': (B, C, H, W)}}, got {got}")
        b, c, h, w = (int(n) for n in samples.shape)
        return (b, h * 8, w * 8, c)


class ImpactConvertDataType:
    """A value as STRING, FLOAT, INT and BOOLEAN: a number (or a string that reads as one) as itself; anything else
    counts as 1, except the text "false" (any case), which counts as 0."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ("STRING", "FLOAT", "INT", "BOOLEAN")
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, value):
        text = str(value)
        if _NUMBER.fullmatch(text):
            num = float(text)
        else:
            num = 0.0 if text.lower() == "false" else 1.0
        return (text, num, int(num), bool(num))


class ImpactStringSelector:
    """Line `select` (modulo the line count) of `strings`; with multiline on, the blocks that each start at a line
    beginning with "#" (that "#" removed from the chosen block)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"strings": ("STRING", {"multiline": True}),
                             "multiline": ("BOOLEAN", {"default": False, "label_on": "enabled",
                                                       "label_off": "disabled"}),
                             "select": ("INT", {"min": 0, "max": INT_MAX, "step": 1, "default": 0})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, strings, multiline, select):
        if not isinstance(strings, str):
            raise TypeError(f"strings must be a string, got {type(strings).__name__}")
        index = check_int("select", select, 0, INT_MAX)
        lines = strings.split("\n")
        if not check_bool("multiline", multiline):
            return (lines[index % len(lines)],)
        blocks, current = [], ""
        for line in lines:
            if line.startswith("#") and current:
                blocks.append(current.strip())
                current = ""
            current += line + "\n"
        if current:
            blocks.append(current.strip())
        chosen = blocks[index % len(blocks)] if blocks else strings
        return (chosen[1:] if chosen.startswith("#") else chosen,)


class ImpactDummyInput:
    """The string "DUMMY": something to connect to an input that must be linked."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("*",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Debug"

    def doit(self):
        return ("DUMMY",)


class ImpactExecutionOrderController:
    """signal and value pass through (the link only orders execution in ComfyUI)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"signal": ("*",), "value": ("*",)}}

    RETURN_TYPES = ("*", "*")
    RETURN_NAMES = ("signal", "value")
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Util"

    def doit(self, signal, value):
        return (signal, value)


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


NODE_CLASSES = {
    "ImpactCompare": ImpactCompare,
    "ImpactConditionalBranch": ImpactConditionalBranch,
    "ImpactConditionalBranchSelMode": ImpactConditionalBranchSelMode,
    "ImpactIfNone": ImpactIfNone,
    "ImpactLogicalOperators": ImpactLogicalOperators,
    "ImpactNeg": ImpactNeg,
    "ImpactMinMax": ImpactMinMax,
    "ImpactImageInfo": ImpactImageInfo,
    "ImpactLatentInfo": ImpactLatentInfo,
    "ImpactConvertDataType": ImpactConvertDataType,
    "ImpactStringSelector": ImpactStringSelector,
    "ImpactDummyInput": ImpactDummyInput,
    "ImpactExecutionOrderController": ImpactExecutionOrderController,
}

__all__ = ["NODE_CLASSES", *NODE_CLASSES]
