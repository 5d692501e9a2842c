"""A job's per-pass LoRA stacks and embeddings: read and checked in `prepare_job`, before any sampling.

A pass's stack, in the order ComfyUI's chained LoraLoaders would apply it: the pass's `loras` entries (from
`--lora` / `--base-lora` / `--mask-lora` / `--region-lora`, a batch line or the PNG), then the
`<lora:NAME:S[:S_CLIP]>` tags of its prompt. Entries (their format: job/fields.py) are "FILE[:S[:S_CLIP]]" strings
or objects; the job that ran records each LoRA as {"name", "file" (absolute), strengths, "sha256", "source":
"flag" | "tag"}, which is what the PNG metadata keeps. Rendering from such a record (`--from`): a file that is
gone is an error naming it and its recorded SHA-256; a file whose SHA-256 differs is used with a warning that
the picture will differ.
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


def _find(entry: dict, lora_dir) -> Path:
    if Path(entry["file"]).expanduser().is_file():
        return Path(entry["file"]).expanduser()
    return resolve_lora(entry.get("name", entry["file"]), lora_dir)


def resolve_stack(entries, prompt: str, lora_dir) -> tuple[str, list[PassLora]]:
    """(the prompt without its tags, the pass's stack). FileNotFoundError names a file that is not there."""
    stack = []
    for e in entries:
        if e.get("source", "flag") == "tag":
            continue  # a recorded prompt tag: the prompt itself brings it back
        stack.append(PassLora(Lora(_find(e, lora_dir), e["strength_model"], e["strength_clip"]),
                              e.get("name", e["file"]), "flag"))
    text, tags = extract_lora_tags(prompt)
    for t in tags:
        stack.append(PassLora(Lora(resolve_lora(t.name, lora_dir), t.strength_model, t.strength_clip), t.name, "tag"))
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
            text, stack = resolve_stack(spec.loras, job.pass_prompt(which), job.lora_dir)
        except FileNotFoundError as e:
            raise JobError(field, _missing(e, spec.loras)) from None
        except ValueError as e:  # a malformed prompt tag
            raise JobError(job.field(which, "prompt"), str(e)) from None
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
