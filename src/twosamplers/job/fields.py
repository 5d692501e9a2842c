"""A job's field formats and checks: `JobError`, the adapter that runs `_checks`' checkers for a job field, the
two list formats a pass takes (LoRA and ControlNet entries), and a pass's fields (`PassSpec`) with the keys that
name them.

Every check is `_checks`' (the limits and the wording are the engine's); `checked` only re-raises its error as a
`JobError` naming the job's field ("base_steps: 0 is out of range; accepted: 1 .. 10000"), so each front end can
name its own input (the CLI's flag, the page's field, a batch line's key).

LoRA entries: "FILE[:S[:S_CLIP]]" strings or {"file", "strength_model", "strength_clip"} objects; a job that ran
records each LoRA as {"name", "file" (absolute), strengths, "sha256", "source": "flag" | "tag"} (job/loras.py).
ControlNet entries: "FILE:IMAGE[:STRENGTH[:START:END]]" strings or {"file", "image", "strength", "start_percent",
"end_percent"} objects.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from .._checks import (
    MAX_CFG,
    MAX_STEPS,
    SEED_MAX,
    BadType,
    BadValue,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_str,
)
from ..engine.schedules import SCHEDULER_NAMES
from ..models.lora import MAX_STRENGTH as MAX_LORA_STRENGTH
from ..samplers import SAMPLER_NAMES

LORA_FORMAT = "FILE[:S[:S_CLIP]]"
CONTROLNET_FORMAT = "FILE:IMAGE[:STRENGTH[:START:END]]"
LORA_SOURCES = ("flag", "tag")
_SHA = re.compile(r"[0-9a-f]{64}")
PASSES = ("base", "mask")  # the flat keys' pass prefixes: the base pass and region 1 (the two-pass job's mask pass)
REGIONS = "regions"


class JobError(ValueError):
    """A bad job field; `field` is its key (e.g. "base_steps"), so each front end can name its own input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def checked(check, key: str, value, *args, **kwargs):
    """`check(key, value, ...)` (one of `_checks`' checkers) with its error as a JobError naming `key`."""
    try:
        return check(key, value, *args, **kwargs)
    except (BadType, BadValue) as e:
        raise JobError(key, e.detail) from None


def int_field(key: str, v, lo=None, hi=None) -> int:
    return checked(check_int, key, v, lo, hi)


def float_field(key: str, v, lo=None, hi=None) -> float:
    return checked(check_float, key, v, lo, hi)


def choice_field(key: str, v, valid) -> str:
    return checked(check_choice, key, v, valid)


def bool_field(key: str, v) -> bool:
    return checked(check_bool, key, v)


def str_field(key: str, v, optional: bool = False) -> str | None:
    return checked(check_str, key, v, optional)


# ---------------------------------------------------------------------------------------------- LoRA entries
def parse_lora_arg(arg: str) -> tuple[str, float, float]:
    """'FILE[:S[:S_CLIP]]' -> (FILE, S, S_CLIP); S defaults to 1, S_CLIP to S. Only trailing fields that read as
    numbers are strengths, so a colon inside FILE (a Windows drive) stays part of it."""
    parts = arg.split(":")
    nums: list[str] = []
    while len(parts) > 1 and len(nums) < 2 and _is_number(parts[-1]):
        nums.insert(0, parts.pop())
    name = ":".join(parts)
    if not name:
        raise ValueError(f"{arg!r} has no file name ({LORA_FORMAT})")
    sm = float(nums[0]) if nums else 1.0
    return name, sm, float(nums[1]) if len(nums) > 1 else sm


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def lora_entries(key: str, entries) -> tuple[dict, ...]:
    """A pass's `loras` field, checked: a list of "FILE[:S[:S_CLIP]]" strings or entry objects -> entry dicts."""
    if entries is None:
        return ()
    if isinstance(entries, (str, dict)) or not isinstance(entries, (list, tuple)):
        raise JobError(key, f"must be a list of LoRAs (\"{LORA_FORMAT}\" or objects), got {entries!r}")
    return tuple(_lora_entry(f"{key}[{i}]", e) for i, e in enumerate(entries))


def _lora_entry(key: str, e) -> dict:
    if isinstance(e, str):
        try:
            name, sm, sc = parse_lora_arg(e)
        except ValueError as err:
            raise JobError(key, str(err)) from None
        e = {"file": name, "strength_model": sm, "strength_clip": sc}
    if not isinstance(e, dict):
        raise JobError(key, f"must be \"{LORA_FORMAT}\" or an object, got {e!r}")
    unknown = sorted(set(e) - {"file", "name", "strength_model", "strength_clip", "sha256", "source"})
    if unknown:
        raise JobError(key, f"unknown field {unknown[0]!r} (known: file, name, strength_model, strength_clip, "
                       "sha256, source)")
    if not isinstance(e.get("file"), str) or not e["file"]:
        raise JobError(key, f"needs a file (a path or a name in lora_dir), got {e.get('file')!r}")
    out = {"file": e["file"]}
    for s in ("strength_model", "strength_clip"):
        v = e.get(s, out.get("strength_model", 1.0))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or abs(v) > MAX_LORA_STRENGTH:
            raise JobError(key, f"{s} must be a finite number in [-{MAX_LORA_STRENGTH:g}, {MAX_LORA_STRENGTH:g}], "
                           f"got {v!r}")
        out[s] = float(v)
    if "name" in e:
        out["name"] = str(e["name"])
    if "sha256" in e:
        if not isinstance(e["sha256"], str) or not _SHA.fullmatch(e["sha256"]):
            raise JobError(key, f"sha256 must be 64 lowercase hex digits, got {e['sha256']!r}")
        out["sha256"] = e["sha256"]
    if "source" in e:
        out["source"] = choice_field(f"{key}.source", e["source"], LORA_SOURCES)
    return out


# ---------------------------------------------------------------------------------------------- ControlNet entries
def controlnet_entries(key: str, v) -> tuple[dict, ...]:
    """A pass's `controlnets` field, checked: one entry or a list of them -> normalised dicts."""
    if isinstance(v, (str, dict)):
        v = [v]
    if not isinstance(v, (list, tuple)):
        raise JobError(key, f"must be a list of ControlNets ({CONTROLNET_FORMAT}), got {v!r}")
    return tuple(_controlnet(f"{key}[{i}]", c) for i, c in enumerate(v))


def _controlnet(key: str, v) -> dict:
    if isinstance(v, str):
        parts = v.split(":")
        if len(parts) not in (2, 3, 5) or not all(parts[:2]):
            raise JobError(key, f"{v!r} is not {CONTROLNET_FORMAT}")
        try:
            nums = [float(x) for x in parts[2:]]
        except ValueError:
            raise JobError(key, f"{v!r}: strength, start and end must be numbers ({CONTROLNET_FORMAT})") from None
        v = dict(zip(("file", "image", "strength", "start_percent", "end_percent"), parts[:2] + nums, strict=False))
    if not isinstance(v, dict):
        raise JobError(key, f"must be a {CONTROLNET_FORMAT} string or an object, got {v!r}")
    unknown = sorted(set(v) - {"file", "image", "strength", "start_percent", "end_percent"})
    if unknown:
        raise JobError(key, f"unknown ControlNet field {unknown[0]!r}")
    out = {"file": str_field(f"{key}.file", v.get("file")), "image": str_field(f"{key}.image", v.get("image")),
           "strength": float_field(f"{key}.strength", v.get("strength", 1.0), 0.0, 10.0),
           "start_percent": float_field(f"{key}.start_percent", v.get("start_percent", 0.0), 0.0, 1.0),
           "end_percent": float_field(f"{key}.end_percent", v.get("end_percent", 1.0), 0.0, 1.0)}
    if out["start_percent"] > out["end_percent"]:
        raise JobError(key, f"start_percent {out['start_percent']} is after end_percent {out['end_percent']}")
    return out


def controlnet_files(entry, fn, key: str):
    """A ControlNet entry (either form) with its FILE and IMAGE passed through fn(kind, key, value), kind
    "controlnet" or "hint" and key "<key>.file" / "<key>.image"; what is neither form is left to the checks."""
    if isinstance(entry, str) and ":" in entry:
        file, _, rest = entry.partition(":")
        image, sep, tail = rest.partition(":")
        return (f"{fn('controlnet', f'{key}.file', file) if file else file}:"
                f"{fn('hint', f'{key}.image', image) if image else image}{sep}{tail}")
    if isinstance(entry, dict):
        return {**entry, **{f: fn(kind, f"{key}.{f}", entry[f]) for f, kind in (("file", "controlnet"),
                                                                                 ("image", "hint"))
                            if isinstance(entry.get(f), str) and entry[f]}}
    return entry


def entry_text(e: dict) -> str:
    """A checked LoRA or ControlNet entry in its one-line form ("FILE:S[:S_CLIP]", "FILE:IMAGE:STRENGTH:START:END"),
    which `lora_entries` / `controlnet_entries` read back to the same numbers."""
    if "image" in e:
        return ":".join([e["file"], e["image"], *(_number_text(e[k]) for k in ("strength", "start_percent",
                                                                              "end_percent"))])
    sm = e.get("strength_model", 1.0)
    sc = e.get("strength_clip", sm)
    return f"{e['file']}:{_number_text(sm)}" + ("" if sc == sm else f":{_number_text(sc)}")


def _number_text(x: float) -> str:
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def region_words(text: str) -> str:
    """Field keys in a text as people count regions: "regions[1].cfg" -> "region 2 cfg"."""
    return re.sub(r"regions\[(\d+)\](\.?)", lambda m: f"region {int(m.group(1)) + 1}" + (" " if m.group(2) else ""),
                  text)


# ---------------------------------------------------------------------------------------------- a pass
@dataclass(frozen=True)
class PassSpec:
    """One pass's settings as a job states them. `model`: the model this pass samples with (a registered name
    or a checkpoint path; None: the job's `model`). The job's `model` still encodes and decodes the image."""

    seed: int = 0
    steps: int = 20
    cfg: float | None = None  # None: the model's default (registry)
    sampler: str = "euler"
    scheduler: str = "normal"
    denoise: float = 1.0
    negative: str = ""
    controlnets: tuple = ()  # ({"file", "image", "strength", "start_percent", "end_percent"}, ...)
    loras: tuple = ()  # LoRA entries: "FILE[:S[:S_CLIP]]" or {"file", "strength_model", ...} (job/fields.py)
    model: str | None = None  # None: the job's model (which also encodes/decodes); see the module docstring

    def validated(self, prefix: str, default_cfg: float) -> PassSpec:
        model = str_field(f"{prefix}model", self.model, optional=True)
        if model is not None and not model.strip():
            raise JobError(f"{prefix}model", "must not be empty (leave it out to use the job's model)")
        return PassSpec(
            model=model,
            controlnets=controlnet_entries(f"{prefix}controlnets", self.controlnets),
            seed=int_field(f"{prefix}seed", self.seed, 0, SEED_MAX),
            steps=int_field(f"{prefix}steps", self.steps, 1, MAX_STEPS),
            cfg=float_field(f"{prefix}cfg", default_cfg if self.cfg is None else self.cfg, 0.0, MAX_CFG),
            sampler=choice_field(f"{prefix}sampler", self.sampler, SAMPLER_NAMES),
            scheduler=choice_field(f"{prefix}scheduler", self.scheduler, SCHEDULER_NAMES),
            denoise=float_field(f"{prefix}denoise", self.denoise, 0.0, 1.0),
            negative=str_field(f"{prefix}negative", self.negative),
            loras=lora_entries(f"{prefix}loras", self.loras),
        )


PASS_KEYS = tuple(f.name for f in fields(PassSpec))
# pass keys added after jobs were first stored: left out of `to_dict` when None, so older jobs keep their hashes
OPTIONAL_PASS_KEYS = ("model",)
REGION_KEYS = ("mask", "prompt", *PASS_KEYS)
SHARED_KEYS = tuple(k for k in PASS_KEYS if k != "model")  # plain keys that set every pass (shorthand)


def region_field(i: int, key: str, n: int) -> str:
    """The key that names field `key` of region `i` (0-based) of a job with `n` regions: the flat key of the
    one-region job ("mask", "mask_prompt", "mask_seed"), else its place in `regions` ("regions[1].seed")."""
    if n == 1:
        return "mask" if key == "mask" else f"mask_{key}"
    return f"{REGIONS}[{i}].{key}"


__all__ = ["CONTROLNET_FORMAT", "LORA_FORMAT", "PASSES", "PASS_KEYS", "REGIONS", "REGION_KEYS", "SHARED_KEYS",
           "JobError", "PassSpec", "region_field", "bool_field", "checked", "choice_field",
           "controlnet_entries", "controlnet_files", "entry_text", "float_field", "int_field", "lora_entries",
           "parse_lora_arg", "region_words", "str_field"]
