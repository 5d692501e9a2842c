"""`Job`: the serialisable, validated description of one render.

It is what the CLI flags, the PNG metadata (`--from`), a UI's fields and a batch line all are: a flat JSON
object whose keys are the fields below (per-pass keys carry a `base_` or `mask_` prefix). `Job.from_dict`
validates every field with the shared named limits (errors name the field: `JobError.field`), fills the
defaults (the guidance scale from the model's registry entry) and normalises; `to_dict` gives the normalised
JSON-able dict back, and `hash()` a stable digest of it plus the contents of the input files.

Models: the job-wide `model` is the default model of both passes and the one whose VAE (decoder) encodes the
start image and decodes the result, as in ComfyUI, where the VAE is wired apart from the samplers' MODELs.
A pass may name its own model (`base_model` / `mask_model`, `PassSpec.model`); one equal to `model` normalises
to None, and None pass models are left out of `to_dict` (so jobs without them hash as they always did).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields, replace

import torch

from .._checks import MAX_CFG, MAX_IMAGE_SIDE, MAX_OVERLAP, MAX_STEPS, SEED_MAX
from .._paths import open_regular
from ..front import MODES
from ..imageio import MASK_CHANNELS
from ..mask_ops import INVERSIONS
from ..models.registry import DEFAULT_MODEL, defaults_for
from ..noise import DEFAULT_COMFYUI_VERSION, parse_comfyui_version
from ..samplers import SAMPLER_NAMES
from ..schedules import SCHEDULER_NAMES

PASSES = ("base", "mask")
MAX_CLIP_LAYERS = 1000  # clip_skip beyond any text encoder's depth is an error, not an IndexError later
METADATA_ONLY_KEYS = ("twosamplers_version",)  # written into PNGs for people; not part of a job


class JobError(ValueError):
    """A bad job field; `field` is its key (e.g. "base_steps"), so each front end can name its own input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---------------------------------------------------------------------------------------------- field checks
def _int(key, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise JobError(key, f"must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise JobError(key, f"{v} is out of range ({_rng(lo, hi)})")
    return v


def _float(key, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise JobError(key, f"must be a number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise JobError(key, f"{v} is out of range ({_rng(lo, hi)})")
    return float(v)


def _rng(lo, hi):
    return f"{lo} .. {hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")


def _choice(key, v, valid):
    if v not in valid:
        raise JobError(key, f"unknown value {v!r}; valid: {', '.join(valid)}")
    return v


def _bool(key, v):
    if not isinstance(v, bool):
        raise JobError(key, f"must be true or false, got {v!r}")
    return v


def _str(key, v, optional=False):
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise JobError(key, f"must be a string, got {v!r}")
    return v


CONTROLNET_FORMAT = "FILE:IMAGE[:STRENGTH[:START:END]]"


def _controlnet(key: str, v) -> dict:
    """One ControlNet of a pass: a "FILE:IMAGE[:STRENGTH[:START:END]]" string or its normalised dict."""
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
    out = {"file": _str(f"{key}.file", v.get("file")), "image": _str(f"{key}.image", v.get("image")),
           "strength": _float(f"{key}.strength", v.get("strength", 1.0), 0.0, 10.0),
           "start_percent": _float(f"{key}.start_percent", v.get("start_percent", 0.0), 0.0, 1.0),
           "end_percent": _float(f"{key}.end_percent", v.get("end_percent", 1.0), 0.0, 1.0)}
    if out["start_percent"] > out["end_percent"]:
        raise JobError(key, f"start_percent {out['start_percent']} is after end_percent {out['end_percent']}")
    return out


def _controlnets(key: str, v) -> tuple:
    if isinstance(v, (str, dict)):
        v = [v]
    if not isinstance(v, (list, tuple)):
        raise JobError(key, f"must be a list of ControlNets ({CONTROLNET_FORMAT}), got {v!r}")
    return tuple(_controlnet(f"{key}[{i}]", c) for i, c in enumerate(v))


# ---------------------------------------------------------------------------------------------- the job
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
    loras: tuple = ()  # LoRA entries: "FILE[:S[:S_CLIP]]" or {"file", "strength_model", ...} (job/loras.py)
    model: str | None = None  # None: the job's model (which also encodes/decodes); see the module docstring

    def validated(self, prefix: str, default_cfg: float) -> PassSpec:
        from .loras import normalize_entries

        model = _str(f"{prefix}model", self.model, optional=True)
        if model is not None and not model.strip():
            raise JobError(f"{prefix}model", "must not be empty (leave it out to use the job's model)")
        return PassSpec(
            model=model,
            controlnets=_controlnets(f"{prefix}controlnets", self.controlnets),
            seed=_int(f"{prefix}seed", self.seed, 0, SEED_MAX),
            steps=_int(f"{prefix}steps", self.steps, 1, MAX_STEPS),
            cfg=_float(f"{prefix}cfg", default_cfg if self.cfg is None else self.cfg, 0.0, MAX_CFG),
            sampler=_choice(f"{prefix}sampler", self.sampler, SAMPLER_NAMES),
            scheduler=_choice(f"{prefix}scheduler", self.scheduler, SCHEDULER_NAMES),
            denoise=_float(f"{prefix}denoise", self.denoise, 0.0, 1.0),
            negative=_str(f"{prefix}negative", self.negative),
            loras=normalize_entries(f"{prefix}loras", self.loras),
        )


PASS_KEYS = tuple(f.name for f in fields(PassSpec))
# pass keys added after jobs were first stored: left out of `to_dict` when None, so older jobs keep their hashes
OPTIONAL_PASS_KEYS = ("model",)


@dataclass(frozen=True)
class Job:
    """One render. Make it with `Job.from_dict` / `Job.from_png` (validated, normalised); `mask_tensor` carries
    a mask that has no file (embedded in a PNG, or the demo's disc) and is hashed by content."""

    base_prompt: str
    mask_prompt: str
    mask: str | None = None
    base: PassSpec = PassSpec()
    inside: PassSpec = PassSpec()
    model: str = DEFAULT_MODEL
    width: int | None = None
    height: int | None = None
    image: str | None = None
    mask_channel: str = "gray"
    invert_mask: bool = False
    mode: str = "two-pass"
    inversion: str = "soft"
    base_covers_mask: bool = True
    grow: int = 0
    feather: float = 0.0
    differential: bool = False
    crop_to_mask: bool = False
    inpaint_conditioning: bool = True
    crop_context: int = 8
    overlap_factor: int = 10
    base_only_steps: int = 1
    clip_skip: int | None = None
    prediction: str | None = None
    comfyui_version: str = DEFAULT_COMFYUI_VERSION
    lora_dir: str | None = None  # where LoRA names (entries, prompt tags) are looked up
    embeddings: str | None = None  # the textual-inversion embeddings directory (embedding:NAME in prompts)
    mask_tensor: torch.Tensor | None = field(default=None, repr=False, compare=False)
    # the paths and model names the local user gave (None: all of them); see job/trust.py. Not a setting: not in
    # to_dict, the PNG or the hash
    trusted: frozenset | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, d: dict, *, mask_tensor: torch.Tensor | None = None,
                  trusted: frozenset | None = None) -> Job:
        """Validate and normalise a flat job dict (the format of `to_dict`, the PNG metadata and batch lines).
        `trusted`: the paths and model names the local user gave, when the dict comes (in part) from someone
        else's document (job/trust.py); None: all of them."""
        if not isinstance(d, dict):
            raise JobError("job", f"must be a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in METADATA_ONLY_KEYS and v is not None}
        passes = {}
        for which, attr in zip(PASSES, ("base", "inside"), strict=True):
            passes[attr] = PassSpec(**{k: d.pop(f"{which}_{k}") for k in PASS_KEYS if f"{which}_{k}" in d})
        known = {f.name for f in fields(cls)} - {"base", "inside", "mask_tensor", "trusted"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise JobError(unknown[0], f"unknown field (known: {', '.join(sorted(known | set(job_keys())))})")
        for key in ("base_prompt", "mask_prompt"):
            if key not in d:
                raise JobError(key, "is required")
        if trusted is not None:
            trusted = frozenset(trusted)
        return cls(**d, **passes, mask_tensor=mask_tensor, trusted=trusted).validated()

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """A job from a JSON object (a batch line, a request body)."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JobError("job", f"is not valid JSON: {e}") from None
        except RecursionError:
            raise JobError("job", "is nested too deeply to be a job (a job is a flat JSON object)") from None
        return cls.from_dict(d)

    @classmethod
    def from_png(cls, path: str | os.PathLike, overrides: dict | None = None, *, untrusted: bool | None = False,
                 trusted: frozenset | None = None) -> Job:
        """The job a PNG written by twosamplers records (its embedded mask included); `overrides` (a flat dict,
        e.g. from command-line flags) win over the PNG's values.

        untrusted: False (the Python API's default) uses the PNG's file paths as they are; True treats the PNG as
        someone else's (`trust.png_fields`: it does not choose the files that are read); None decides by the
        PNG's origin tag (a PNG this user rendered on this machine is used as is). `trusted`: the paths and model
        names the user gave (the overrides' own); with untrusted True or None the job never downloads a model the
        PNG names."""
        from ..imageio import read_settings
        from .trust import check_models, given, png_fields

        stored, embedded, ours = read_settings(path, with_origin=True)
        overrides = dict(overrides or {})
        if untrusted is not False:
            if untrusted or not ours:
                # every value is validated first (nothing is read for that), its models must be local (a PNG
                # never downloads), then the files it names are refused
                checked = cls._from_png_dict({**stored, **overrides}, overrides, embedded,
                                             trusted=frozenset(trusted or ()))
                check_models(checked)
                stored = png_fields(stored, overrides, png=str(path), embedded_mask=embedded is not None)
                trusted = frozenset(trusted or ())
            else:
                trusted = frozenset(trusted or ()) | given(stored, models=False)
        return cls._from_png_dict({**stored, **overrides}, overrides, embedded, trusted=trusted)

    @classmethod
    def _from_png_dict(cls, d: dict, overrides: dict, embedded, *, trusted) -> Job:
        if embedded is not None and "mask" not in overrides:
            # the mask as it was used (channel and inversion already applied)
            d = {**d, "mask_channel": "gray", "invert_mask": False}
            return cls.from_dict(d, mask_tensor=embedded, trusted=trusted)
        return cls.from_dict(d, trusted=trusted)

    def validated(self) -> Job:
        """This job with every field checked and the defaults filled in; raises JobError naming the field."""
        model = _str("model", self.model)
        if not model.strip():
            raise JobError("model", "must not be empty")
        for key in ("base_prompt", "mask_prompt"):
            _str(key, getattr(self, key))
        for key in ("mask", "image", "prediction", "lora_dir", "embeddings"):
            _str(key, getattr(self, key), optional=True)
        for key in ("width", "height"):
            if getattr(self, key) is not None:
                _int(key, getattr(self, key), 1, MAX_IMAGE_SIDE)
        for key in ("invert_mask", "base_covers_mask", "differential", "crop_to_mask", "inpaint_conditioning"):
            _bool(key, getattr(self, key))
        _choice("mask_channel", self.mask_channel, MASK_CHANNELS)
        _choice("mode", self.mode, MODES)
        _choice("inversion", self.inversion, INVERSIONS)
        if self.prediction is not None:
            _choice("prediction", self.prediction, ("eps", "v"))
        if self.clip_skip is not None:
            _int("clip_skip", self.clip_skip, -MAX_CLIP_LAYERS, MAX_CLIP_LAYERS)
        # size-like numbers: anything beyond the largest image is an error (inf and huge values included);
        # within that, a grow or context larger than this image acts as the image size
        _int("grow", self.grow, -MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
        _int("crop_context", self.crop_context, 0, MAX_IMAGE_SIDE)
        try:
            parse_comfyui_version(self.comfyui_version)
        except ValueError:
            raise JobError("comfyui_version", f"{self.comfyui_version!r} is not a ComfyUI version such as "
                           f"'0.3.64' or '0.30' (default {DEFAULT_COMFYUI_VERSION!r})") from None
        _int("overlap_factor", self.overlap_factor, 0, MAX_OVERLAP)
        _int("base_only_steps", self.base_only_steps, 0, MAX_STEPS)
        if self.mask is None and self.mask_tensor is None:
            raise JobError("mask", "is required (a mask file)")
        passes = {}
        for which, attr in zip(PASSES, ("base", "inside"), strict=True):
            spec = getattr(self, attr)
            own = _str(f"{which}_model", spec.model, optional=True)
            if own == model:  # the job's model stated again: the same job as leaving it out
                own = None
            spec = replace(spec, model=own).validated(f"{which}_", defaults_for(own or model).cfg)
            passes[attr] = spec
        return replace(self, feather=_float("feather", self.feather, 0.0, float(MAX_IMAGE_SIDE)), **passes)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        """The normalised flat dict (JSON-able): what the PNG metadata stores and `from_dict` reads."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("base", "inside", "mask_tensor", "trusted")}
        for which, spec in zip(PASSES, (self.base, self.inside), strict=True):
            out.update({f"{which}_{k}": _plain(getattr(spec, k)) for k in PASS_KEYS
                        if not (k in OPTIONAL_PASS_KEYS and getattr(spec, k) is None)})
        return dict(sorted(out.items()))

    def pass_spec(self, which: str) -> PassSpec:
        return self.base if which == "base" else self.inside

    def pass_model(self, which: str) -> str:
        """The model pass `which` ("base" / "mask") samples with: its own, else the job's."""
        return self.pass_spec(which).model or self.model

    def models(self) -> tuple[str, ...]:
        """Every model this job loads, each once: the job's model (it encodes and decodes) first."""
        return tuple(dict.fromkeys([self.model, *(self.pass_model(w) for w in PASSES)]))

    def input_files(self) -> dict[str, str]:
        """The input files this job reads, by field."""
        from .loras import entry_files

        files = {"image": self.image}
        if self.mask_tensor is None:
            files["mask"] = self.mask
        for which, spec in zip(PASSES, (self.base, self.inside), strict=True):
            for i, c in enumerate(spec.controlnets):
                files[f"{which}_controlnets[{i}].image"] = c["image"]
            for i, path in enumerate(entry_files(spec.loras, self)):
                files[f"{which}_loras[{i}]"] = path
        return {k: v for k, v in files.items() if v is not None}

    def hash(self) -> str:
        """sha256 of the normalised settings and the contents of the input files (and of an embedded mask):
        equal hashes mean the same render, for idempotent batch outputs. A model is identified by its name
        or path as given (checkpoint contents are not read)."""
        h = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode())
        for key, path in sorted(self.input_files().items()):
            h.update(f"\0{key}\0".encode())
            try:  # an ordinary file only: a FIFO or /dev/zero named as an input would block or never end
                with open_regular(path, "input file") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(block)
            except FileNotFoundError:
                raise JobError(key, f"file not found: {path}") from None
            except (OSError, ValueError) as e:
                raise JobError(key, f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        if self.mask_tensor is not None:
            h.update(b"\0mask_tensor\0")
            h.update(self.mask_tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def _plain(v):
    """JSON's form of a field value (tuples of LoRA entries as lists), so that to_dict equals a PNG's copy."""
    return [dict(e) for e in v] if isinstance(v, tuple) else v


def job_keys() -> tuple[str, ...]:
    """Every flat key a job dict may have."""
    top = [f.name for f in fields(Job) if f.name not in ("base", "inside", "mask_tensor", "trusted")]
    return tuple(top + [f"{w}_{k}" for w in PASSES for k in PASS_KEYS])


__all__ = ["Job", "JobError", "PASSES", "PASS_KEYS", "PassSpec", "job_keys"]
