"""A pass's LoRA and ControlNet text fields (one entry per line, the CLI's formats) <-> the job's entries, and the
pickers' "add" buttons. The job layer checks the entries (job/fields.py); the page only splits and joins lines."""

from __future__ import annotations

from pathlib import Path

from .values import UIError, number

LORA_LINE = "FILE:STRENGTH[:CLIP_STRENGTH]"
CONTROLNET_LINE = "FILE:HINT_IMAGE:STRENGTH:START:END"


def _lines(text) -> list[str]:
    return [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]


def _num(x: float) -> str:
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _short(path: str, folder: Path | None) -> str:
    """A file under `folder` by its path relative to it (what the page's dropdowns list), others as given."""
    if folder is not None and Path(path).is_absolute():
        try:
            return str(Path(path).relative_to(folder))
        except ValueError:
            pass
    return path


def lora_entries(text) -> list[str]:
    """A LoRA text field (one "FILE:STRENGTH[:CLIP_STRENGTH]" per line; FILE a name in the models folder's
    loras/ or a path) -> the job's entries (the job layer checks them)."""
    return _lines(text)


def lora_lines(entries, folder: Path | None = None) -> str:
    """A job's LoRA entries (given or as recorded after a run) -> the text field. Recorded prompt tags
    (<lora:...> in the prompt) are left out: the prompt brings them back."""
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append(e)
            continue
        if e.get("source", "flag") == "tag":
            continue
        sm, sc = e.get("strength_model", 1.0), e.get("strength_clip", e.get("strength_model", 1.0))
        out.append(f"{_short(e['file'], folder)}:{_num(sm)}" + ("" if sc == sm else f":{_num(sc)}"))
    return "\n".join(out)


def controlnet_entries(text, folder: Path | None = None) -> list[str]:
    """A ControlNet text field (one "FILE:HINT_IMAGE:STRENGTH:START:END" per line; FILE a name in the models
    folder's controlnet/ or a path) -> the job's entries, FILE made absolute (the job layer checks the rest)."""
    out = []
    for line in _lines(text):
        name, sep, rest = line.partition(":")
        if folder is not None and not Path(name).is_absolute() and (folder / name).exists():
            name = str(folder / name)
        out.append(name + sep + rest)
    return out


def controlnet_lines(entries, folder: Path | None = None) -> str:
    """A job's ControlNets (normalised dicts) -> the text field."""
    return "\n".join(e if isinstance(e, str) else
                     f"{_short(e['file'], folder)}:{e['image']}:{_num(e['strength'])}:{_num(e['start_percent'])}:"
                     f"{_num(e['end_percent'])}" for e in entries or [])


def add_lora_line(text, name, strength, clip_strength) -> str:
    """The LoRA picker's "add": the text field with one more line (strengths checked as numbers here, ranges by
    the job layer when rendering)."""
    if not name:
        raise UIError("choose a LoRA to add")
    sm = number("LoRA strength", strength, False)
    sc = sm if clip_strength is None or str(clip_strength).strip() == "" else number("LoRA clip strength",
                                                                                      clip_strength, False)
    line = f"{name}:{_num(sm)}" + ("" if sc == sm else f":{_num(sc)}")
    return "\n".join(_lines(text) + [line])


def add_controlnet_line(text, name, hint_path, strength, start, end) -> str:
    """The ControlNet picker's "add": one more "FILE:HINT_IMAGE:STRENGTH:START:END" line."""
    if not name:
        raise UIError("choose a ControlNet to add")
    if not hint_path:
        raise UIError("upload a hint image for the ControlNet (e.g. an edge or depth map)")
    nums = [number(n, v, False) for n, v in (("ControlNet strength", strength), ("ControlNet start", start),
                                            ("ControlNet end", end))]
    return "\n".join(_lines(text) + [f"{name}:{hint_path}:" + ":".join(_num(x) for x in nums)])


__all__ = ["CONTROLNET_LINE", "LORA_LINE", "add_controlnet_line", "add_lora_line", "controlnet_entries",
           "controlnet_lines", "lora_entries", "lora_lines"]
