"""What a job made (in part) from someone else's document may name: docs/security.md's rules for the job layer.

The trusted party is the local user: the command line's flags and the Python API. A PNG made by someone else,
a batch line and a web page's request are not. Their jobs carry `Job.trusted`, the set of paths and model names
the user gave (None: all of them, the default of the Python API and of a plain `generate`):

- a LoRA entry whose file the user did not give resolves by name inside the job's LoRA folder (never as a path);
  `<lora:NAME>` tags always do (`models.prompt_tags.resolve_lora`);
- a model name the user did not give must be a built-in model or a local file or folder: it never starts a
  download (a Hugging Face repository name is refused);
- `png_fields`: a PNG that this user did not write (`imageio.read_settings(with_origin=True)`) does not choose
  the files that are read: its start image, mask file and ControlNet hint images must be given again by the
  user, and its LoRA / embeddings folders are dropped (the user's --lora-dir / --embeddings count).
"""

from __future__ import annotations

import os

from .spec import PASSES, JobError

PNG_FILE_FIELDS = ("image", "mask")
PNG_FOLDER_FIELDS = ("lora_dir", "embeddings")
MODEL_FIELDS = ("model", "base_model", "mask_model")


def norm(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def is_trusted(job, value) -> bool:
    """Whether the user gave `value` (a path or model name) themselves."""
    if job.trusted is None:
        return True
    return str(value) in job.trusted or norm(str(value)) in job.trusted


def given(d: dict, models: bool = True) -> frozenset[str]:
    """The paths (and, with `models`, model names) in a flat job dict that the user gave: each as typed and made
    absolute."""
    from .loras import parse_lora_arg

    out: set[str] = set()
    for key in (*(MODEL_FIELDS if models else ()), "image", "mask"):
        if isinstance(d.get(key), str):
            out.add(d[key])
    for which in ("", *(f"{w}_" for w in PASSES)):
        for e in d.get(f"{which}loras") or ():
            f = e.get("file") if isinstance(e, dict) else parse_lora_arg(e)[0] if isinstance(e, str) else None
            if isinstance(f, str):
                out.add(f)
        for c in d.get(f"{which}controlnets") or ():
            if isinstance(c, str):
                out.update(c.split(":")[:2])
            elif isinstance(c, dict):
                out.update(str(c.get(k)) for k in ("file", "image") if c.get(k))
    return frozenset(out | {norm(p) for p in out})


def png_fields(stored: dict, overrides: dict, *, png: str, embedded_mask: bool) -> dict:
    """The settings of a PNG this user did not write, as far as they may be used with `overrides` (the user's
    own fields, which win): file fields the user did not give again are refused (JobError naming the field),
    folder fields dropped."""
    d = dict(stored)
    files = [k for k in PNG_FILE_FIELDS if not (k == "mask" and embedded_mask)]
    for key in files:
        if d.get(key) and key not in overrides:
            raise JobError(key, f"{d[key]!r} is a file named by {png}, which was not rendered by this user on this "
                           "machine; such a PNG does not choose the files that are read: give it yourself")
    for which in PASSES:
        key = f"{which}_controlnets"
        if d.get(key) and key not in overrides and "controlnets" not in overrides:
            raise JobError(key, f"{png} was not rendered by this user on this machine and names ControlNet hint "
                           "images; such a PNG does not choose the files that are read: give the ControlNets "
                           "yourself")
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
    """`check_model_name` for every model of a job (its own and its passes')."""
    check_model_name(job, "model", job.model)
    for which in PASSES:
        own = job.pass_spec(which).model
        if own is not None:
            check_model_name(job, f"{which}_model", own)


__all__ = ["check_model_name", "check_models", "given", "is_trusted", "norm", "png_fields"]
