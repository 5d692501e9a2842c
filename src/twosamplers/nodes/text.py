"""ComfyUI's text nodes (category "text"): joining, cutting, measuring, re-casing, trimming, replacing and
comparing strings, so that workflows which build their prompts from pieces run.

The regular-expression nodes of the same family (RegexMatch, RegexExtract, RegexReplace) are left out on purpose:
a pattern from someone else's workflow can backtrack for hours, and a workflow must never hang the runner."""

from __future__ import annotations

import sys

from .._checks import check_bool, check_choice, check_int

CATEGORY = "text"
CASES = ("UPPERCASE", "lowercase", "Capitalize", "Title Case")
TRIMS = ("Both", "Left", "Right")
COMPARISONS = ("Starts With", "Ends With", "Equal")
_INT = ("INT", {"default": 0, "min": -sys.maxsize, "max": sys.maxsize})
_TEXT = ("STRING", {"multiline": True})


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value


class _TextNode:
    FUNCTION = "execute"
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)


class StringConcatenate(_TextNode):
    """string_a + delimiter + string_b."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string_a": _TEXT, "string_b": _TEXT, "delimiter": ("STRING", {"default": ""})}}

    def execute(self, string_a, string_b, delimiter):
        return (_text("delimiter", delimiter).join((_text("string_a", string_a), _text("string_b", string_b))),)


class StringSubstring(_TextNode):
    """string[start:end], Python's slice (negative positions count from the end)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": _TEXT, "start": _INT, "end": _INT}}

    def execute(self, string, start, end):
        return (_text("string", string)[check_int("start", start):check_int("end", end)],)


class StringLength(_TextNode):
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("length",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": _TEXT}}

    def execute(self, string):
        return (len(_text("string", string)),)


class CaseConverter(_TextNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": _TEXT, "mode": (list(CASES),)}}

    def execute(self, string, mode):
        s = _text("string", string)
        how = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}
        return (how[check_choice("mode", mode, CASES)](s),)


class StringTrim(_TextNode):
    """Whitespace removed from both ends, the left or the right."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": _TEXT, "mode": (list(TRIMS),)}}

    def execute(self, string, mode):
        s = _text("string", string)
        how = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}
        return (how[check_choice("mode", mode, TRIMS)](s),)


class StringReplace(_TextNode):
    """Every occurrence of `find` replaced (plain text, not a pattern)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": _TEXT, "find": _TEXT, "replace": _TEXT}}

    def execute(self, string, find, replace):
        return (_text("string", string).replace(_text("find", find), _text("replace", replace)),)


class StringContains(_TextNode):
    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("contains",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": _TEXT, "substring": _TEXT,
                             "case_sensitive": ("BOOLEAN", {"default": True})}}

    def execute(self, string, substring, case_sensitive):
        s, sub = _text("string", string), _text("substring", substring)
        if not check_bool("case_sensitive", case_sensitive):
            s, sub = s.lower(), sub.lower()
        return (sub in s,)


class StringCompare(_TextNode):
    RETURN_TYPES = ("BOOLEAN",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string_a": _TEXT, "string_b": _TEXT, "mode": (list(COMPARISONS),),
                             "case_sensitive": ("BOOLEAN", {"default": True})}}

    def execute(self, string_a, string_b, mode, case_sensitive):
        a, b = _text("string_a", string_a), _text("string_b", string_b)
        mode = check_choice("mode", mode, COMPARISONS)
        if not check_bool("case_sensitive", case_sensitive):
            a, b = a.lower(), b.lower()
        if mode == "Equal":
            return (a == b,)
        return (a.startswith(b) if mode == "Starts With" else a.endswith(b),)


NODE_CLASSES = {cls.__name__: cls for cls in (StringConcatenate, StringSubstring, StringLength, CaseConverter,
                                               StringTrim, StringReplace, StringContains, StringCompare)}
