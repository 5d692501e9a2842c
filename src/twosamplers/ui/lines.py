"""A pass's LoRA and ControlNet text fields (one entry per line, the CLI's formats) <-> the job's entries, and the
pickers' "add" buttons. The job layer reads, checks and writes the entries (job/fields.py); the page only splits
and joins lines, and names the models folder's files by their short names."""

from __future__ import annotations

from pathlib import Path

from ..job.fields import controlnet_files, entry_text
from .values import UIError, number

LORA_LINE = "FILE:STRENGTH[:CLIP_STRENGTH]"
CONTROLNET_LINE = "FILE:HINT_IMAGE:STRENGTH:START:END"


def _lines(text) -> list[str]:
    return [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]


def _entry_lines(entries, folder: Path | None) -> str:
    """Entries -> one line each (`job.fields.entry_text`), files under `folder` by their path relative to it (what
    the page's dropdowns list). Recorded prompt tags (<lora:...> in the prompt) are left out: the prompt brings
    them back."""
    def short(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(folder)) if folder is not None and p.is_absolute() and p.is_relative_to(folder) \
            else path

    return "\n".join(e if isinstance(e, str) else entry_text({**e, "file": short(e["file"])})
                     for e in entries or [] if isinstance(e, str) or e.get("source", "flag") != "tag")


def lora_entries(text) -> list[str]:
    """A LoRA text field (one "FILE:STRENGTH[:CLIP_STRENGTH]" per line; FILE a name in the models folder's
    loras/ or a path) -> the job's entries (the job layer checks them)."""
    return _lines(text)


def lora_lines(entries, folder: Path | None = None) -> str:
    """A job's LoRA entries (given or as recorded after a run) -> the text field."""
    return _entry_lines(entries, folder)


def controlnet_entries(text, folder: Path | None = None) -> list[str]:
    """A ControlNet text field (one "FILE:HINT_IMAGE:STRENGTH:START:END" per line; FILE a name in the models
    folder's controlnet/ or a path) -> the job's entries, FILE made absolute (the job layer checks the rest)."""
    def absolute(kind: str, key: str, name: str) -> str:
        short = kind == "controlnet" and folder is not None and not Path(name).is_absolute()
        return str(folder / name) if short and (folder / name).exists() else name

    return [controlnet_files(line, absolute, "controlnets") for line in _lines(text)]


def controlnet_lines(entries, folder: Path | None = None) -> str:
    """A job's ControlNets (normalised dicts) -> the text field."""
    return _entry_lines(entries, folder)


def add_lora_line(text, name, strength, clip_strength) -> str:
    """The LoRA picker's "add": the text field with one more line (strengths checked as numbers here, ranges by
    the job layer when rendering)."""
    if not name:
        raise UIError("choose a LoRA to add")
    sm = number("LoRA strength", strength, False)
    sc = sm if clip_strength is None or str(clip_strength).strip() == "" else number("LoRA clip strength",
                                                                                      clip_strength, False)
    return "\n".join(_lines(text) + [entry_text({"file": name, "strength_model": sm, "strength_clip": sc})])


def add_controlnet_line(text, name, hint_path, strength, start, end) -> str:
    """The ControlNet picker's "add": one more "FILE:HINT_IMAGE:STRENGTH:START:END" line."""
    if not name:
        raise UIError("choose a ControlNet to add")
    if not hint_path:
        raise UIError("upload a hint image for the ControlNet (e.g. an edge or depth map)")
    nums = [number(n, v, False) for n, v in (("ControlNet strength", strength), ("ControlNet start", start),
                                            ("ControlNet end", end))]
    entry = dict(zip(("strength", "start_percent", "end_percent"), nums, strict=True))
    return "\n".join(_lines(text) + [entry_text({"file": name, "image": hint_path, **entry})])


__all__ = ["CONTROLNET_LINE", "LORA_LINE", "add_controlnet_line", "add_lora_line", "controlnet_entries",
           "controlnet_lines", "lora_entries", "lora_lines"]
