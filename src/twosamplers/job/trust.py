"""What a job made (in part) from someone else's document may name: docs/security.md's rules for the job layer.

The trusted party is the local user: the command line's flags and the Python API. A PNG made by someone else,
a batch line and a web page's request are not. Their jobs carry `Job.trusted`, the set of paths and model names
the user gave (None: all of them, the default of the Python API and of a plain `generate`):

- a LoRA entry whose file the user did not give resolves by name inside the job's LoRA folder (never as a path),
  in every pass (the base and each region); `<lora:NAME>` tags always do (`models.prompt_tags.resolve_lora`);
- a model name the user did not give (the job's, the base pass's or any region's) must be a built-in model or a
  local file or folder: it never starts a download (a Hugging Face repository name is refused);
- `png_fields`: a PNG that this user did not write (`imageio.png_is_ours`) does not choose the files that are
  read: its start image, every region's mask file (a mask embedded in the PNG is fine: it is no file) and every
  pass's ControlNets (their hint images) must be given again by the user, and its LoRA / embeddings folders are
  dropped (the user's --lora-dir / --embeddings count).

A job dict has two forms (job/forms.py): one region written flat (`mask`, `mask_<key>`), several as `regions`;
the rules here read both, the shorthand's plain pass keys and the CLI's per-region patches ({index: fields}).
"""

from __future__ import annotations

import os

from .fields import REGIONS, JobError, parse_lora_arg, region_field
from .forms import map_files, regions_form

PNG_FOLDER_FIELDS = ("lora_dir", "embeddings")
PASS_PREFIXES = ("", "base_", "mask_")  # a flat dict's pass keys: the shorthand, the base pass, region 1


def norm(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def is_trusted(job, value) -> bool:
    """Whether the user gave `value` (a path or model name) themselves."""
    if job.trusted is None:
        return True
    return str(value) in job.trusted or norm(str(value)) in job.trusted


def given(d: dict, patches: dict | None = None, models: bool = True) -> frozenset[str]:
    """The paths (and, with `models`, model names) in a job dict (flat or with `regions`, shorthand allowed) and
    in per-region `patches` that the user gave: each as typed and made absolute. Tolerant of bad types (they are
    named when the job is validated)."""
    out: set[str] = set()

    def collect(kind: str, key: str, value):
        if isinstance(value, str) and kind != "folder" and (models or kind != "model"):
            out.add(value)
        return value

    parts = [d, *(p for p in (patches or {}).values() if isinstance(p, dict))]
    regions = d.get(REGIONS) if isinstance(d.get(REGIONS), (list, tuple)) else ()
    for part in parts:
        map_files(part, collect)
    for part in [*parts, *(r for r in regions if isinstance(r, dict))]:
        for prefix in PASS_PREFIXES:
            loras = part.get(f"{prefix}loras")
            for e in loras if isinstance(loras, (list, tuple)) else ():
                f = e.get("file") if isinstance(e, dict) else _lora_file(e) if isinstance(e, str) else None
                if isinstance(f, str):
                    out.add(f)
    return frozenset(out | {norm(p) for p in out})


def _lora_file(arg: str) -> str | None:
    try:
        return parse_lora_arg(arg)[0]
    except ValueError:
        return None


def _region_changes(overrides: dict, patches: dict | None, n: int) -> list[dict]:
    """The file fields the user states for each of the stored job's `n` regions: region 1's flat keys (`mask`,
    `mask_controlnets`) and every patch."""
    own = [{} for _ in range(n)]
    for key, field in (("mask", "mask"), ("mask_controlnets", "controlnets")):
        if key in overrides and n:
            own[0][field] = overrides[key]
    for i, p in (patches or {}).items():
        if isinstance(i, int) and 0 <= i < n and isinstance(p, dict):
            own[i].update(p)
    return own


def png_fields(stored: dict, overrides: dict, patches: dict | None = None, *, png: str, embedded=()) -> dict:
    """The settings of a PNG this user did not write, as far as they may be used with `overrides` and `patches`
    (the user's own fields, which win; `Job.from_png`'s arguments): file fields the user did not give again are
    refused (JobError naming the field), folder fields dropped. `embedded`: the PNG's mask tensors in region
    order (None where a region has none); a region whose mask is embedded reads no mask file."""
    d = regions_form(stored)
    regions = d[REGIONS] if isinstance(d.get(REGIONS), list) else []
    n = len(regions)
    overrides = {k: v for k, v in overrides.items() if v is not None}  # a None value is not given
    patches = {i: {k: v for k, v in p.items() if v is not None} for i, p in (patches or {}).items()
               if isinstance(p, dict)}

    def refuse(key: str, what: str) -> None:
        raise JobError(key, f"{what} named by {png}, which was not rendered by this user on this machine; such a "
                       "PNG does not choose the files that are read: give it yourself")

    if d.get("image") and "image" not in overrides:
        refuse("image", f"{d['image']!r} is a file")
    if d.get("base_controlnets") and not {"base_controlnets", "controlnets"} & set(overrides):
        refuse("base_controlnets", "ControlNets (and their hint images) are")
    if REGIONS not in overrides:  # a given `regions` list replaces the stored regions, files and all
        masks = list(embedded or []) + [None] * n
        for i, (r, own) in enumerate(zip(regions, _region_changes(overrides, patches, n), strict=True)):
            if isinstance(r, dict) and r.get("mask") and masks[i] is None and "mask" not in own:
                refuse(region_field(i, "mask", n), f"{r['mask']!r} is a mask file")
            if isinstance(r, dict) and r.get("controlnets") and "controlnets" not in own \
                    and "controlnets" not in overrides:
                refuse(region_field(i, "controlnets", n), "ControlNets (and their hint images) are")
    for key in PNG_FOLDER_FIELDS:
        if key not in overrides:
            d.pop(key, None)
    return d  # its LoRA entries stay: not given by the user, they resolve by name in the user's LoRA folder


def check_model_name(job, key: str, name: str) -> None:
    """A model name the user did not give must be local (a built-in name, a file or a folder): a document
    never starts a download (JobError naming the field otherwise)."""
    from ..models.registry import REGISTRY

    if is_trusted(job, name) or name in REGISTRY or os.path.exists(os.path.expanduser(name)):
        return
    raise JobError(key, f"{name!r} is neither a built-in model ({', '.join(REGISTRY)}) nor a local checkpoint file "
                   "or folder; models named by a PNG, a batch line or a web page are never downloaded (give a "
                   "Hugging Face repository name on the command line: --model OWNER/NAME)")


def check_models(job) -> None:
    """`check_model_name` for every model of a job: its own and every pass's (the base and each region)."""
    check_model_name(job, "model", job.model)
    for which in job.passes():
        own = job.pass_spec(which).model
        if own is not None:
            check_model_name(job, job.field(which, "model"), own)


__all__ = ["check_model_name", "check_models", "given", "is_trusted", "norm", "png_fields"]
