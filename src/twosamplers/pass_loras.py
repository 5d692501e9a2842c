"""A pass's LoRA stack for the command line and PNG metadata: `FILE[:S[:S_CLIP]]` arguments, `<lora:...>` tags
in the pass's prompt, the records written into the PNG, and their check when `--from` renders it again.

Order of a pass's stack (the order ComfyUI's chained LoraLoaders would apply them): the `--lora` files (both
passes), then the pass's own `--base-lora` / `--mask-lora` files, then the prompt's tags.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .models.lora import Lora, sha256_file
from .models.prompt_tags import extract_lora_tags, resolve_lora


class LoraRecordError(FileNotFoundError):
    """A LoRA recorded in a PNG that cannot be found again."""


def _strength(text: str, arg: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--lora {arg!r}: {what} {text!r} is not a number (FILE[:STRENGTH[:CLIP_STRENGTH]])") \
            from None
    if not math.isfinite(v):
        raise ValueError(f"--lora {arg!r}: {what} must be finite, got {text!r}")
    return v


def parse_lora_arg(arg: str) -> tuple[str, float, float]:
    """'FILE[:S[:S_CLIP]]' -> (FILE, S, S_CLIP); S defaults to 1, S_CLIP to S. Colons inside FILE (a Windows
    drive) are kept: only trailing fields that read as numbers are strengths."""
    if not isinstance(arg, str) or not arg:
        raise ValueError("--lora needs FILE[:STRENGTH[:CLIP_STRENGTH]]")
    parts = arg.split(":")
    nums: list[str] = []
    while len(parts) > 1 and len(nums) < 2 and _is_number(parts[-1]):
        nums.insert(0, parts.pop())
    name = ":".join(parts)
    if not name:
        raise ValueError(f"--lora {arg!r} has no file name")
    sm = _strength(nums[0], arg, "strength") if nums else 1.0
    sc = _strength(nums[1], arg, "clip strength") if len(nums) > 1 else sm
    return name, sm, sc


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class PassLora:
    """One LoRA of a pass, resolved to a file, and where it came from ("flag" or "tag")."""

    lora: Lora
    name: str
    source: str

    def record(self) -> dict:
        return {"name": self.name, "file": str(Path(self.lora.path).resolve()),
                "strength_model": self.lora.strength_model, "strength_clip": self.lora.strength_clip,
                "sha256": sha256_file(self.lora.path), "source": self.source}


def resolve_pass_loras(flags: list[str], prompt: str, lora_dir: str | os.PathLike | None
                       ) -> tuple[str, list[PassLora]]:
    """(the prompt without its tags, the pass's stack) from FILE[:S[:S_CLIP]] arguments and the prompt's tags.
    Every file must exist (FileNotFoundError naming it)."""
    stack = []
    for arg in flags:
        name, sm, sc = parse_lora_arg(arg)
        stack.append(PassLora(Lora(resolve_lora(name, lora_dir), sm, sc), name, "flag"))
    text, tags = extract_lora_tags(prompt)
    for t in tags:
        stack.append(PassLora(Lora(resolve_lora(t.name, lora_dir), t.strength_model, t.strength_clip), t.name, "tag"))
    return text, stack


def flags_from_records(records: list[dict]) -> list[str]:
    """The FILE:S:S_CLIP arguments of the flag-given LoRAs recorded in a PNG."""
    out = []
    for r in records or []:
        if r.get("source", "flag") == "flag":
            where = r["file"] if Path(r["file"]).is_file() else r["name"]  # moved: look it up by name
            out.append(f"{where}:{float(r['strength_model'])!r}:{float(r['strength_clip'])!r}")
    return out


def _same(p: PassLora, record: dict) -> bool:
    return p.name == record["name"] or str(Path(p.lora.path).resolve()) == record["file"]


def check_against_records(stack: list[PassLora], records: list[dict], png: str, which: str) -> None:
    """--from: a recorded LoRA that is missing is an error; one whose SHA-256 differs, a warning (the picture
    will not be reproduced)."""
    for r in records or []:
        if not any(_same(p, r) for p in stack):
            raise LoraRecordError(f"{png}: the {which} pass used LoRA {r['name']!r} ({r['file']}, sha256 "
                                  f"{r['sha256'][:12]}...), which was not found this time")
    for p in stack:
        r = next((r for r in records or [] if _same(p, r)), None)
        if r is None:
            continue
        digest = sha256_file(p.lora.path)
        if digest != r["sha256"]:
            warnings.warn(f"LoRA {p.name!r} ({p.lora.path}) differs from the file {png} was made with (sha256 "
                          f"{digest[:12]}... vs {r['sha256'][:12]}...); the picture will not be reproduced exactly",
                          stacklevel=2)
