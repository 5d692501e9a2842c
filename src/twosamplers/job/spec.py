"""`Job`: the serialisable, validated description of one render.

It is what the CLI flags, the PNG metadata (`--from`), a UI's fields and a batch line all are: a JSON object whose
keys are the fields below. `Job.from_dict` validates every field with `_checks` and its named limits (errors name
the field: `JobError.field`), fills the defaults (the guidance scale from the model's registry entry) and
normalises; `to_dict` gives the normalised JSON-able dict back, and `hash()` a stable digest of it plus the
contents of the input files.

Regions: a job renders its base prompt outside its regions and each region's prompt inside the region's mask.
Every region has a mask (a file, or a tensor: painted, embedded in a PNG, the demo's disc; hashed by content), a
prompt and its own pass (`PassSpec`: model, LoRAs, ControlNets, seed, steps, cfg, sampler, scheduler, denoise,
negative). The two-pass job of TwoSamplersForMask is the one-region case, and is written as it always was: flat
keys, `mask`, `mask_prompt` and `mask_<pass key>` for the region, `base_<pass key>` for the base pass. A job with
several regions is written with `regions`, a list of region objects {"mask", "prompt", <pass keys>}, and
`base_<pass key>`; `from_dict` reads both forms (flat `mask*` keys next to `regions` set region 1's fields).
Jobs of one region therefore hash as they did before regions existed.

Shorthand: a plain pass key (`seed`, `steps`, `cfg`, `sampler`, `scheduler`, `denoise`, `negative`, `loras`,
`controlnets`) sets every pass that does not give its own (the base, every region); for `loras` and
`controlnets` it comes first and a pass's own entries follow. It is how the CLI's `--seed` and a batch line's
`"seed"` reach every pass; `to_dict` never writes it. A region missing a pass key takes `PassSpec`'s default.

Models: the job-wide `model` is the default model of every pass and the one whose VAE encodes the start image
and decodes the result, as in ComfyUI, where the VAE is wired apart from the samplers' MODELs. A pass may name
its own model (`base_model`, `mask_model`, a region's `model`); one equal to `model` normalises to None, and None
pass models are left out of `to_dict` (so jobs without them hash as they always did).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, replace

import torch

from .._checks import MAX_IMAGE_SIDE, MAX_OVERLAP, MAX_REGIONS, MAX_STEPS
from .._paths import open_regular
from ..engine.front import MODES
from ..engine.mask_ops import INVERSIONS
from ..engine.noise import DEFAULT_COMFYUI_VERSION, parse_comfyui_version
from ..models.registry import DEFAULT_MODEL, defaults_for
from .fields import (
    OPTIONAL_PASS_KEYS,
    PASS_KEYS,
    PASSES,
    REGION_KEYS,
    REGIONS,
    SHARED_KEYS,
    JobError,
    PassSpec,
    bool_field,
    choice_field,
    float_field,
    int_field,
    region_field,
    str_field,
)
from .forms import merge, region_dicts, with_shared
from .imageio import MASK_CHANNELS
from .loras import entry_files

MAX_CLIP_LAYERS = 1000  # clip_skip beyond any text encoder's depth is an error, not an IndexError later
METADATA_ONLY_KEYS = ("twosamplers_version",)  # written into PNGs for people; not part of a job


# ---------------------------------------------------------------------------------------------- a region
@dataclass(frozen=True)
class Region:
    """One region: its mask (`mask`, a file path or a label, and `mask_tensor`, the mask itself when it has no
    file), its prompt and its pass (`spec`, whose `negative` is the region's negative prompt)."""

    prompt: str
    mask: str | None = None
    spec: PassSpec = PassSpec()
    mask_tensor: torch.Tensor | None = field(default=None, repr=False, compare=False)


# ---------------------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class Job:
    """One render. Make it with `Job.from_dict` / `Job.from_png` (validated, normalised)."""

    base_prompt: str
    regions: tuple[Region, ...] = ()
    base: PassSpec = PassSpec()
    model: str = DEFAULT_MODEL
    width: int | None = None
    height: int | None = None
    image: str | None = None
    mask_channel: str = "gray"  # how every region's mask FILE is read (mask tensors are used as they are)
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
    # the paths and model names the local user gave (None: all of them); see job/trust.py. Not a setting: not in
    # to_dict, the PNG or the hash
    trusted: frozenset | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, d: dict, *, mask_tensor: torch.Tensor | None = None, mask_tensors=None,
                  trusted: frozenset | None = None) -> Job:
        """Validate and normalise a job dict (the format of `to_dict`, the PNG metadata and batch lines; the
        shorthand of plain pass keys allowed). `mask_tensors`: one per region (None where the region's mask is
        its file); `mask_tensor`: region 1's. `trusted`: the paths and model names the local user gave, when the
        dict comes (in part) from someone else's document (job/trust.py); None: all of them."""
        if not isinstance(d, dict):
            raise JobError("job", f"must be a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in METADATA_ONLY_KEYS and v is not None}
        base = {k: d.pop(f"base_{k}") for k in PASS_KEYS if f"base_{k}" in d}
        regions = region_dicts(d)
        for k in SHARED_KEYS:
            if k in d:
                shared = d.pop(k)
                for own in (base, *regions):
                    own[k] = with_shared(shared, own.get(k))
        unknown = sorted(set(d) - set(TOP_KEYS))
        if unknown:
            raise JobError(unknown[0], f"unknown field (known: {', '.join(sorted({*job_keys(), *SHARED_KEYS}))}, "
                           f"{REGIONS})")
        tensors = list(mask_tensors or []) + [None] * len(regions)
        if mask_tensor is not None:
            tensors[0] = mask_tensor
        n = len(regions)
        if "base_prompt" not in d:
            raise JobError("base_prompt", "is required")
        made = []
        for i, r in enumerate(regions):
            if "prompt" not in r:
                raise JobError(region_field(i, "prompt", n), "is required")
            made.append(Region(r["prompt"], r.get("mask"), PassSpec(**{k: r[k] for k in PASS_KEYS if k in r}),
                               tensors[i]))
        if "mode" not in d and n > 1:
            d["mode"] = "regional"  # several regions: RegionalSampler's interleaving unless the job says otherwise
        trusted = None if trusted is None else frozenset(trusted)
        return cls(**d, base=PassSpec(**base), regions=tuple(made), trusted=trusted).validated()

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """A job from a JSON object (a batch line, a request body)."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JobError("job", f"is not valid JSON: {e}") from None
        except RecursionError:
            raise JobError("job", "is nested too deeply to be a job") from None
        return cls.from_dict(d)

    @classmethod
    def from_png(cls, path: str | os.PathLike, overrides: dict | None = None,
                 patches: dict[int, dict] | None = None, *, untrusted: bool | None = False,
                 trusted: frozenset | None = None) -> Job:
        """The job a PNG written by twosamplers records (every region's embedded mask included; a PNG of the web
        page made before regions were part of the job brings its regions too); `overrides` (a job dict, e.g. from
        command-line flags, shorthand allowed) and `patches` ({region index: fields}) win over the PNG's values
        (`merge`).

        untrusted: False (the Python API's default) uses the PNG's file paths as they are; True treats the PNG as
        someone else's (`trust.png_fields`: it does not choose the files that are read, in any region); None
        decides by the PNG's origin tag (a PNG this user rendered on this machine is used as is). `trusted`: the
        paths and model names the user gave (the overrides' and patches' own: `trust.given`); with untrusted True
        or None the job never downloads a model the PNG names."""
        from .png import read_job
        from .trust import check_models, given, png_fields

        stored, embedded, ours = read_job(path, with_origin=True)
        overrides = dict(overrides or {})
        if untrusted is not False:
            user = frozenset(trusted or ())
            if untrusted or not ours:
                # every value is validated first (nothing is read for that), its models must be local (a PNG
                # never downloads), then the files it names are refused
                check_models(cls._from_png_dict(stored, overrides, patches, embedded, trusted=user))
                stored = png_fields(stored, overrides, patches, png=str(path), embedded=embedded)
                trusted = user
            else:
                trusted = user | given(stored, models=False)
        return cls._from_png_dict(stored, overrides, patches, embedded, trusted=trusted)

    @classmethod
    def _from_png_dict(cls, stored: dict, overrides: dict, patches, embedded, *, trusted) -> Job:
        d, tensors = merge(stored, overrides, patches, embedded)
        if tensors and all(t is not None for t in tensors):
            # every mask as it was used (channel and inversion already applied)
            d.update(mask_channel="gray", invert_mask=False)
        return cls.from_dict(d, mask_tensors=tensors, trusted=trusted)

    def validated(self) -> Job:
        """This job with every field checked and the defaults filled in; raises JobError naming the field."""
        model = str_field("model", self.model)
        if not model.strip():
            raise JobError("model", "must not be empty")
        str_field("base_prompt", self.base_prompt)
        for key in ("image", "prediction", "lora_dir", "embeddings"):
            str_field(key, getattr(self, key), optional=True)
        for key in ("width", "height"):
            if getattr(self, key) is not None:
                int_field(key, getattr(self, key), 1, MAX_IMAGE_SIDE)
        for key in ("invert_mask", "base_covers_mask", "differential", "crop_to_mask", "inpaint_conditioning"):
            bool_field(key, getattr(self, key))
        choice_field("mask_channel", self.mask_channel, MASK_CHANNELS)
        choice_field("mode", self.mode, MODES)
        choice_field("inversion", self.inversion, INVERSIONS)
        if self.prediction is not None:
            choice_field("prediction", self.prediction, ("eps", "v"))
        if self.clip_skip is not None:
            int_field("clip_skip", self.clip_skip, -MAX_CLIP_LAYERS, MAX_CLIP_LAYERS)
        # size-like numbers: anything beyond the largest image is an error (inf and huge values included);
        # within that, a grow or context larger than this image acts as the image size
        int_field("grow", self.grow, -MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
        int_field("crop_context", self.crop_context, 0, MAX_IMAGE_SIDE)
        try:
            parse_comfyui_version(self.comfyui_version)
        except ValueError:
            raise JobError("comfyui_version", f"{self.comfyui_version!r} is not a ComfyUI version such as "
                           f"'0.3.64' or '0.30' (default {DEFAULT_COMFYUI_VERSION!r})") from None
        int_field("overlap_factor", self.overlap_factor, 0, MAX_OVERLAP)
        int_field("base_only_steps", self.base_only_steps, 0, MAX_STEPS)
        self._check_mode()
        own = str_field("base_model", self.base.model, optional=True)
        base = replace(self.base, model=None if own == model else own)
        base = base.validated("base_", defaults_for(base.model or model).cfg)
        regions = tuple(self._validated_region(i, r, model) for i, r in enumerate(self.regions))
        return replace(self, feather=float_field("feather", self.feather, 0.0, float(MAX_IMAGE_SIDE)), base=base,
                       regions=regions)

    def _check_mode(self) -> None:
        n = len(self.regions)
        if not 1 <= n <= MAX_REGIONS:
            raise JobError(REGIONS, f"{n} regions is out of range; accepted: 1 .. {MAX_REGIONS}")
        if self.mode == "two-pass":
            if n > 1:
                raise JobError("mode", f"two-pass renders one region, this job has {n}; several regions need mode "
                               "interleaved, regional or joint")
            return
        for key in ("crop_to_mask", "differential"):
            if getattr(self, key):
                raise JobError(key, f"is only available in mode two-pass (mode is {self.mode})")

    def _validated_region(self, i: int, r: Region, model: str) -> Region:
        n = len(self.regions)

        def key(k: str) -> str:
            return region_field(i, k, n)

        if not isinstance(r, Region):
            raise JobError(f"{REGIONS}[{i}]", f"must be a Region, got {type(r).__name__}")
        str_field(key("prompt"), r.prompt)
        str_field(key("mask"), r.mask, optional=True)
        if r.mask is None and r.mask_tensor is None:
            raise JobError(key("mask"), "is required (a mask file)")
        own = str_field(key("model"), r.spec.model, optional=True)
        spec = replace(r.spec, model=None if own == model else own)  # the job's model stated again: left out
        return replace(r, spec=spec.validated(key(""), defaults_for(spec.model or model).cfg))

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        """The normalised dict (JSON-able): what the PNG metadata stores and `from_dict` reads. One region: the
        flat keys; several: `regions`."""
        out = {k: getattr(self, k) for k in TOP_KEYS}
        out.update(_pass_dict("base_", self.base))
        if len(self.regions) == 1:
            r = self.regions[0]
            out.update({"mask": r.mask, "mask_prompt": r.prompt, **_pass_dict("mask_", r.spec)})
        else:
            out[REGIONS] = [{"mask": r.mask, "prompt": r.prompt, **_pass_dict("", r.spec)} for r in self.regions]
        return dict(sorted(out.items()))

    # the one-region job's names (the two-pass job's mask pass is region 1)
    @property
    def mask_prompt(self) -> str:
        return self.regions[0].prompt

    @property
    def mask(self) -> str | None:
        return self.regions[0].mask

    @property
    def inside(self) -> PassSpec:
        return self.regions[0].spec

    @property
    def mask_tensor(self) -> torch.Tensor | None:
        return self.regions[0].mask_tensor

    def passes(self) -> list:
        """Every pass of the job: "base", then each region's index (0, 1, ...)."""
        return ["base", *range(len(self.regions))]

    def _index(self, which) -> int | None:
        if which == "base":
            return None
        return 0 if which == "mask" else int(which)

    def pass_spec(self, which) -> PassSpec:
        """Pass `which`'s settings: "base", a region's index, or "mask" (region 1, the two-pass job's name)."""
        i = self._index(which)
        return self.base if i is None else self.regions[i].spec

    def pass_prompt(self, which) -> str:
        i = self._index(which)
        return self.base_prompt if i is None else self.regions[i].prompt

    def pass_model(self, which) -> str:
        """The model pass `which` samples with: its own, else the job's."""
        return self.pass_spec(which).model or self.model

    def field(self, which, key: str) -> str:
        """The key naming field `key` of pass `which` in this job ("base_seed", "mask_seed", "regions[1].seed")."""
        i = self._index(which)
        return f"base_{key}" if i is None else region_field(i, key, len(self.regions))

    def pass_label(self, which) -> str:
        """Pass `which` as a sentence names it: "base", "mask" (the one-region job), "region 2"."""
        i = self._index(which)
        return "base" if i is None else ("mask" if len(self.regions) == 1 else f"region {i + 1}")

    def models(self) -> tuple[str, ...]:
        """Every model this job loads, each once: the job's model (it encodes and decodes) first."""
        return tuple(dict.fromkeys([self.model, *(self.pass_model(w) for w in self.passes())]))

    def input_files(self) -> dict[str, str]:
        """The input files this job reads, by field."""
        files = {"image": self.image}
        for i, r in enumerate(self.regions):
            if r.mask_tensor is None:
                files[self.field(i, "mask")] = r.mask
        for which in self.passes():
            spec = self.pass_spec(which)
            for i, c in enumerate(spec.controlnets):
                files[f"{self.field(which, 'controlnets')}[{i}].image"] = c["image"]
            for i, path in enumerate(entry_files(spec.loras, self)):
                files[f"{self.field(which, 'loras')}[{i}]"] = path
        return {k: v for k, v in files.items() if v is not None}

    def with_region(self, i: int, **changes) -> Job:
        """This job with region `i`'s fields changed (`prompt`, `mask`, `mask_tensor`, or pass keys of its spec);
        not validated again (use `Job.from_dict(job.to_dict())` for that)."""
        r = self.regions[i]
        spec = {k: changes.pop(k) for k in list(changes) if k in PASS_KEYS}
        regions = list(self.regions)
        regions[i] = replace(r, spec=replace(r.spec, **spec), **changes)
        return replace(self, regions=tuple(regions))

    def with_input_files(self, files: dict[str, str]) -> Job:
        """This job reading its input files from other paths ({field of `input_files`: path}): the image and
        the regions' mask files (e.g. a worker's local copies)."""
        out = self
        for key, path in files.items():
            if key == "image":
                out = replace(out, image=path)
                continue
            i = next((i for i in range(len(self.regions)) if self.field(i, "mask") == key), None)
            if i is None:
                raise KeyError(f"{key} is not an image or mask field of this job")
            regions = list(out.regions)
            regions[i] = replace(regions[i], mask=path)
            out = replace(out, regions=tuple(regions))
        return out

    def hash(self) -> str:
        """sha256 of the normalised settings and the contents of the input files (and of the masks that have no
        file): equal hashes mean the same render, for idempotent batch outputs. A model is identified by its name
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
        for i, r in enumerate(self.regions):
            if r.mask_tensor is not None:
                h.update(f"\0{'mask' if len(self.regions) == 1 else f'{REGIONS}[{i}].mask'}_tensor\0".encode())
                h.update(r.mask_tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


TOP_KEYS = tuple(f.name for f in fields(Job) if f.name not in ("base", "regions", "trusted"))


def _pass_dict(prefix: str, spec: PassSpec) -> dict:
    return {f"{prefix}{k}": _plain(getattr(spec, k)) for k in PASS_KEYS
            if not (k in OPTIONAL_PASS_KEYS and getattr(spec, k) is None)}


def _plain(v):
    """JSON's form of a field value (tuples of LoRA entries as lists), so that to_dict equals a PNG's copy."""
    return [dict(e) for e in v] if isinstance(v, tuple) else v


def job_keys() -> tuple[str, ...]:
    """Every flat key a job dict may have (besides `regions`, and the shorthand's plain pass keys)."""
    return ("base_prompt", "mask_prompt", "mask", *TOP_KEYS[1:], *(f"{w}_{k}" for w in PASSES for k in PASS_KEYS))


def kept_fields(stored: dict, given_keys) -> dict:
    """The fields of a stored job (a PNG's) outside `given_keys` whose value differs from a new job's: what a front
    end that sets only `given_keys` (the web page's widgets) carries over, laid under its own fields with
    `forms.merge`, so that the stored job renders again the same."""
    fresh = Job(base_prompt="", regions=(Region(""),)).to_dict()
    return {k: stored[k] for k in job_keys()
            if k not in given_keys and stored.get(k) is not None and stored[k] != fresh.get(k)}


__all__ = ["Job", "JobError", "PASSES", "PASS_KEYS", "PassSpec", "REGION_KEYS", "Region", "SHARED_KEYS", "job_keys",
           "kept_fields", "region_field"]
