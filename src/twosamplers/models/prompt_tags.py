"""`<lora:NAME:model_weight[:clip_weight]>` tags in a prompt (A1111 syntax, as Impact Pack's wildcard
encoder reads it): the tags are taken out of the text and name LoRAs for the pass whose prompt holds them.

Rules (Impact Pack's): the clip weight defaults to the model weight, the model weight to 1.0; a name given twice
counts once (its first tag); `key=value` fields (Impact's LBW=/LOADER=) are not supported and are an error rather
than silently ignored. Names resolve inside a LoRA directory only (a prompt may come from a PNG or a workflow made
by someone else): the relative path as given, then with `.safetensors` (and the pickle suffixes) appended, then a
unique file of that name anywhere below the directory. An absolute path, `..` or `~` in a name is an error; only
an explicit `--lora FILE` (`Lora(path)` in Python) takes a path.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._paths import name_in_folder
from .lora import LORA_SUFFIXES, Lora

TAG = re.compile(r"<lora:([^>]+)>")


@dataclass(frozen=True)
class LoraTag:
    name: str
    strength_model: float = 1.0
    strength_clip: float = 1.0


def _number(text: str, tag: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"prompt tag <lora:{tag}>: {text!r} is not a number (expected "
                         "<lora:NAME:model_weight[:clip_weight]>)") from None
    if not math.isfinite(v):
        raise ValueError(f"prompt tag <lora:{tag}>: the weight must be finite, got {text!r}")
    return v


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """(the prompt without its `<lora:...>` tags, the tags in order of first appearance)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    tags: list[LoraTag] = []
    seen: set[str] = set()
    for body in TAG.findall(prompt):
        fields = body.strip(":").split(":")
        name = fields[0].strip()
        if not name:
            raise ValueError(f"prompt tag <lora:{body}> has no LoRA name")
        extra = [f for f in fields[1:] if "=" in f]
        if extra:
            raise ValueError(f"prompt tag <lora:{body}>: {extra[0]!r} (Impact Pack's block weights / loader "
                             "options) is not supported")
        nums = [f.strip() for f in fields[1:]]
        if len(nums) > 2:
            raise ValueError(f"prompt tag <lora:{body}> has {len(nums)} weights; expected "
                             "<lora:NAME:model_weight[:clip_weight]>")
        sm = _number(nums[0], body) if nums else 1.0
        sc = _number(nums[1], body) if len(nums) > 1 else sm
        if name in seen:
            continue
        seen.add(name)
        tags.append(LoraTag(name, sm, sc))
    return TAG.sub("", prompt), tags


def resolve_lora(name: str, lora_dir: str | os.PathLike | None) -> Path:
    """The file a LoRA name means inside `lora_dir`: the relative path as given, then with its suffix, then a
    unique file of that name anywhere below the directory. Names never leave the directory (no absolute path,
    '..' or '~'); FileNotFoundError when nothing matches, ValueError for a name that tries to leave."""
    if lora_dir is None:
        raise FileNotFoundError(f"LoRA {name!r} not found: LoRA names are looked up in a LoRA folder and none was "
                                "given (--lora-dir / lora_dir; a path works only with --lora FILE)")
    root = Path(lora_dir).expanduser()
    first = name_in_folder(name, root, "LoRA name")
    if not root.is_dir():
        raise FileNotFoundError(f"LoRA directory not found: {root}")
    for p in [first] + [first.with_name(first.name + s) for s in LORA_SUFFIXES]:
        if p.is_file():
            return p
    wanted = {first.name} | {first.name + s for s in LORA_SUFFIXES}
    hits = sorted(p for p in root.rglob("*") if p.name in wanted and p.is_file())
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise FileNotFoundError(f"LoRA {name!r} is ambiguous in {root}: {', '.join(str(h) for h in hits[:4])}")
    raise FileNotFoundError(f"LoRA {name!r} not found in {root}")


def lora_file(name_or_path: str | os.PathLike, lora_dir: str | os.PathLike | None) -> Path:
    """For trusted callers (the command line's --lora, the Python API): an existing file path as given, else a
    name inside `lora_dir` (`resolve_lora`)."""
    direct = Path(name_or_path).expanduser()
    if direct.is_file():
        return direct
    return resolve_lora(str(name_or_path), lora_dir)


def loras_from_prompt(prompt: str, lora_dir: str | os.PathLike | None) -> tuple[str, list[Lora]]:
    """(clean prompt, [Lora, ...]) with each tag's name resolved in `lora_dir`."""
    text, tags = extract_lora_tags(prompt)
    return text, [Lora(resolve_lora(t.name, lora_dir), t.strength_model, t.strength_clip) for t in tags]
