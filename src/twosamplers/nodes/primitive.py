"""ComfyUI's primitive nodes (PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline,
PrimitiveBoolean): a constant as an output, to feed one value into several widget inputs."""

from __future__ import annotations

import sys

from .._checks import check_float, check_int

CATEGORY = "utils/primitive"


class PrimitiveInt:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": -sys.maxsize, "max": sys.maxsize,
                                               "control_after_generate": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value):
        return (check_int("value", value),)


class PrimitiveFloat:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"min": -sys.maxsize, "max": sys.maxsize})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value):
        return (check_float("value", value),)


class PrimitiveString:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING",)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value):
        if not isinstance(value, str):
            raise TypeError(f"value must be a string, got {type(value).__name__}")
        return (value,)


class PrimitiveStringMultiline(PrimitiveString):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"multiline": True})}}


class PrimitiveBoolean:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("BOOLEAN",)}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value):
        if not isinstance(value, bool):
            raise TypeError(f"value must be true or false, got {type(value).__name__}")
        return (value,)


__all__ = ["PrimitiveBoolean", "PrimitiveFloat", "PrimitiveInt", "PrimitiveString", "PrimitiveStringMultiline"]
