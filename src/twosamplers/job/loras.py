"""A job's per-pass LoRA stacks and embeddings: read and checked in `prepare_job`, before any sampling.

A pass's stack, in the order ComfyUI's chained LoraLoaders would apply it: the pass's `loras` entries (from
`--lora` / `--base-lora` / `--mask-lora` / `--region-lora`, a batch line or the PNG), then the
`<lora:NAME:S[:S_CLIP]>` tags of its prompt. Entries (their format: job/fields.py) are "FILE[:S[:S_CLIP]]" strings
or objects; the job that ran records each LoRA as {"name", "file" (absolute), strengths, "sha256", "source":
"flag" | "tag"}, which is what the PNG metadata keeps. Rendering from such a record (`--from`): a file that is
gone is an error naming it and its recorded SHA-256; a file whose SHA-256 differs is used with a warning that
the picture will differ.

Names stay in their folder: `<lora:NAME>` tags always resolve inside the job's `lora_dir`, and so does an entry
whose file the local user did not give (`Job.trusted`, job/trust.py: a line of a batch, someone else's PNG, the
web page), in every pass, base and regions alike; only a path the user gave (`--lora FILE`) is read as a path.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..models.embeddings import EmbeddingError, EmbeddingLibrary
from ..models.lora import Lora, LoraError, can_patch, sha256_file, with_loras
from ..models.prompt_tags import extract_lora_tags, resolve_lora
from .fields import JobError


# ---------------------------------------------------------------------------------------------- stacks
@dataclass(frozen=True)
class PassLora:
    lora: Lora
    name: str
    source: str

    def record(self) -> dict:
        return {"name": self.name, "file": str(Path(self.lora.path).resolve()),
                "strength_model": self.lora.strength_model, "strength_clip": self.lora.strength_clip,
                "sha256": sha256_file(self.lora.path), "source": self.source}


def _find(entry: dict, lora_dir, job=None) -> Path:
    """An entry's file: the path itself when the user gave it (a trusted job, or a --lora FILE flag), else the
    file its name (or, failing that, its file's name) finds inside `lora_dir`, never outside."""
    from .trust import is_trusted

    direct = Path(entry["file"]).expanduser()
    if (job is None or is_trusted(job, entry["file"])) and direct.is_file():
        return direct
    names = list(dict.fromkeys(n for n in (entry.get("name", entry["file"]), entry["file"]) if isinstance(n, str)))
    names += [Path(n).name for n in names if Path(n).name not in names]
    first: Exception | None = None
    for name in names:
        try:
            return resolve_lora(name, lora_dir)
        except (FileNotFoundError, ValueError) as e:
            first = first or e
    raise first if first is not None else FileNotFoundError(f"LoRA {entry['file']!r} not found")


def entry_files(entries, job=None) -> list[str]:
    """The files of the given (not prompt-tag) entries that exist now, for the job's input hash. An entry the
    user did not give (job/trust.py) counts by the file its name finds in the job's LoRA folder."""
    out = []
    for e in entries:
        if e.get("source", "flag") != "flag":
            continue
        try:
            p = _find(e, getattr(job, "lora_dir", None), job)
        except (FileNotFoundError, ValueError):
            continue  # prepare_job reports it
        if p.is_file():
            out.append(str(p))
    return out


def resolve_stack(entries, prompt: str, lora_dir, job=None) -> tuple[str, list[PassLora]]:
    """(the prompt without its tags, the pass's stack). FileNotFoundError names a file that is not there;
    ValueError a malformed prompt tag or a name that tries to leave the LoRA folder. `job`: whose `trusted` set
    says which entry files the user gave (None: all)."""
    stack = []
    for e in entries:
        if e.get("source", "flag") == "tag":
            continue  # a recorded prompt tag: the prompt itself brings it back
        stack.append(PassLora(Lora(_find(e, lora_dir, job), e["strength_model"], e["strength_clip"]),
                              e.get("name", e["file"]), "flag"))
    text, tags = extract_lora_tags(prompt)
    for t in tags:
        try:
            path = resolve_lora(t.name, lora_dir)
        except ValueError as e:
            raise ValueError(f"prompt tag <lora:{t.name}>: {e}") from None
        stack.append(PassLora(Lora(path, t.strength_model, t.strength_clip), t.name, "tag"))
    return text, stack


def _recorded(p: PassLora, entries) -> dict | None:
    for e in entries:
        if "sha256" in e and e.get("source", "flag") == p.source and e.get("name", e["file"]) == p.name:
            return e
    return None


def warn_changed(stack: list[PassLora], entries, which: str) -> None:
    """`which`: the pass as a sentence names it ("base", "mask", "region 2")."""
    for p in stack:
        e = _recorded(p, entries)
        if e is not None and sha256_file(p.lora.path) != e["sha256"]:
            warnings.warn(f"the {which} pass's LoRA {p.name!r} ({p.lora.path}) is not the file this job was made "
                          f"with (sha256 {e['sha256'][:12]}...); the picture will not be reproduced exactly",
                          stacklevel=3)


def _missing(err: Exception, entries) -> str:
    recorded = [f"{e.get('name', e['file'])} (sha256 {e['sha256'][:12]}...)" for e in entries if "sha256" in e]
    return f"{err}" + (f"; this job was made with {', '.join(recorded)}" if recorded else "")


# ---------------------------------------------------------------------------------------------- the job
def prepare_loras(job, model, *, allow_pickle: bool = False):
    """(the job with each pass's LoRAs recorded, {pass: model with its stack}, {pass: prompt without tags},
    the embeddings library or None). Passes are `job.passes()` ("base", then each region's index). `model`: the
    model every pass samples with, or {pass: its model}; a pass's LoRAs patch its own model (passes on one
    checkpoint share its network, patched per pass). Every file is read and checked here; errors are JobErrors
    naming the field."""
    bases = model if isinstance(model, dict) else {which: model for which in job.passes()}
    library = _library(job, bases, allow_pickle)
    models, prompts, specs = {}, {}, {}
    for which in job.passes():
        spec, field, model = job.pass_spec(which), job.field(which, "loras"), bases[which]
        if "<lora:" in spec.negative:
            raise JobError(job.field(which, "negative"), "holds a <lora:...> tag; LoRA tags go in the positive prompt")
        try:
            text, stack = resolve_stack(spec.loras, job.pass_prompt(which), job.lora_dir, job)
        except FileNotFoundError as e:
            raise JobError(field, _missing(e, spec.loras)) from None
        except ValueError as e:  # a malformed prompt tag, or a name that leaves the LoRA folder
            raise JobError(_value_field(job, which, e), str(e)) from None
        warn_changed(stack, spec.loras, job.pass_label(which))
        if stack and not can_patch(model):
            raise JobError(field, f"LoRAs need a Stable Diffusion, Flux or SD3 checkpoint; "
                           f"{job.pass_model(which)!r} is not one")
        try:
            models[which] = with_loras(model, [p.lora for p in stack], allow_pickle=allow_pickle)
        except LoraError as e:
            raise JobError(field, str(e)) from None
        prompts[which] = text
        specs[which] = replace(spec, loras=tuple(p.record() for p in stack))
    regions = tuple(replace(r, spec=specs[i]) for i, r in enumerate(job.regions))
    return replace(job, base=specs["base"], regions=regions), models, prompts, library


def _value_field(job, which, err: ValueError) -> str:
    """The field a ValueError of `resolve_stack` is about: the prompt for its tags, else the pass's entries."""
    return job.field(which, "prompt" if str(err).startswith("prompt tag") else "loras")


def check_lora_names(job) -> None:
    """Every LoRA a job names (every pass's entries and its prompt's tags) is a file that can be found, inside its
    folder where the user did not give the path: what a batch checks when it plans, before any model is loaded.
    JobError naming the field otherwise."""
    for which in job.passes():
        spec = job.pass_spec(which)
        try:
            resolve_stack(spec.loras, job.pass_prompt(which), job.lora_dir, job)
        except FileNotFoundError as e:
            raise JobError(job.field(which, "loras"), _missing(e, spec.loras)) from None
        except ValueError as e:
            raise JobError(_value_field(job, which, e), str(e)) from None
    if job.embeddings is not None and not Path(job.embeddings).expanduser().is_dir():
        raise JobError("embeddings", f"folder not found: {job.embeddings}")


def _library(job, models: dict, allow_pickle: bool) -> EmbeddingLibrary | None:
    if not job.embeddings:
        return None
    for which, model in models.items():  # every pass's model encodes its prompts with the embeddings
        if not (hasattr(model, "text_encoders") or getattr(model, "text", None) is not None):
            raise JobError("embeddings", f"textual-inversion embeddings need a checkpoint with text encoders; "
                           f"{job.pass_model(which)!r} is not one")
    try:
        return EmbeddingLibrary(os.fspath(job.embeddings), allow_pickle=allow_pickle)
    except EmbeddingError as e:
        raise JobError("embeddings", str(e)) from None
