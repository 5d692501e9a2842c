"""The page's values and messages: a widget's value as the number the job expects, a job field as the page labels
it, and every error as one line in the page's red box."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from ..job.fields import JobError, region_words


class UIError(ValueError):
    """A problem with what the user gave; shown in the page as one sentence."""


def label(field: str) -> str:
    """A job field as the page names it: "mask_steps" -> "mask steps", "regions[1].cfg" -> "region 2 cfg"."""
    return region_words(field).replace("_", " ")


@contextlib.contextmanager
def page_errors() -> Iterator[None]:
    """The job layer's errors with their field as the page labels it ("regions[1].cfg" -> "region 2 cfg")."""
    try:
        yield
    except JobError as e:
        raise UIError(f"{label(e.field)}: {e.message}") from None


def number(name: str, v, integer: bool):
    """A page value (Gradio gives floats, strings or None) as the int/float the job expects; ranges are the
    job layer's business."""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise UIError(f"{name} is empty")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UIError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise UIError(f"{name} must be a finite number, got {v!r}")
    if not integer:
        return f
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if f != int(f):
        raise UIError(f"{name} must be a whole number, got {v!r}")
    return int(f)


def error_message(e: BaseException) -> str:
    """One line for the page: the message of a user error, the type and message of anything else."""
    msg = " ".join(str(e).split())
    if isinstance(e, (UIError, ValueError, FileNotFoundError, TypeError, NotImplementedError)):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


__all__ = ["UIError", "error_message", "label", "number", "page_errors"]
