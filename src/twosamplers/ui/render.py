"""The page's one way to render, and to show masks as the sampler sees them: the page's job dict and masks become
a `Job` (`page_job`), run exactly as `twosamplers generate` runs one (`check_outputs` -> `prepare_job` ->
`render` -> `write_outputs`), so the PNG carries the CLI's metadata and every region, and `generate --from` or a
batch line with that PNG renders the same bits.

Models are loaded once per process (the job layer's `ModelCache`); one lock per model, and a run holds the locks of
every model its job uses (`Job.models()`), so runs sharing a model wait for each other (two tabs share the
machine), while runs on different models can overlap. The step callback raises `Cancelled` once the cancel flag
is set, which stops the sampler between two steps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..job import Job, ModelCache, Outputs, check_outputs, metadata, prepare_job, write_outputs
from ..job import render as render_job
from ..job.run import job_preview_masks
from .values import UIError, page_errors


class Cancelled(Exception):
    """Raised from the step callback when the user pressed Cancel; the sampler stops between two steps."""


class ModelLocks:
    """One lock per model name: runs on one model take turns."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(str(name), threading.Lock())

    def busy(self, names) -> bool:
        """Whether another run holds one of these models now."""
        return any(self.lock(n).locked() for n in names)

    @contextlib.contextmanager
    def hold(self, names) -> Iterator[None]:
        """Every named model's lock, taken in sorted order (two runs sharing models cannot deadlock)."""
        with contextlib.ExitStack() as stack:
            for name in sorted({str(n) for n in names}):
                stack.enter_context(self.lock(name))
            yield


MODELS = ModelCache()
LOCKS = ModelLocks()
StepFn = Callable[[int, int, torch.Tensor, object], None]


def page_job(settings: dict, masks: list[torch.Tensor]) -> Job:
    """The page's job: its job dict (`fields.fields_to_settings`, confined) with one mask tensor per region. The
    page is not the local user: the job never downloads a model, and LoRA entries are names in its lora_dir."""
    n = len(settings.get("regions") or [None])
    if len(masks) != n:
        raise UIError(f"{len(masks)} masks for {n} regions")
    with page_errors():
        return Job.from_dict(settings, mask_tensors=list(masks), trusted=frozenset())


def render(settings: dict, masks: list[torch.Tensor], *, output: str | Path, preview: str | Path | None = None,
           on_step: StepFn | None = None, cancel: threading.Event | None = None, cache: ModelCache = MODELS,
           locks: ModelLocks = LOCKS) -> dict:
    """Render one picture; returns {"image": path, "preview": path or None, "seconds": float, "settings": the
    PNG's job dict, "note": a line for the page or None (e.g. why mode "joint" fell back to interleaving)}.

    on_step(step, total, x0, model) is called after every sampler step; `cancel.set()` stops the run at the
    next step with Cancelled (nothing is written then). Bad input raises UIError (a ValueError) before sampling."""
    job = page_job(settings, masks)
    outputs = Outputs(image=str(output), preview=None if preview is None else str(preview))
    with page_errors():
        check_outputs(outputs, job)
        with locks.hold(job.models()):
            prep = prepare_job(job, cache)

            def callback(step, x0, x, total):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                if on_step is not None:
                    on_step(step, total, x0, prep.model)

            result = render_job(prep, callback=callback, disable_pbar=True, want_base_preview=preview is not None)
        write_outputs(result, outputs)
    return {"image": str(output), "preview": outputs.preview, "seconds": round(result.seconds, 3),
            "settings": metadata(result.job), "note": result.note}


def sampler_view(settings: dict, masks: list[torch.Tensor], cache: ModelCache = MODELS) -> list[torch.Tensor]:
    """Every region's mask as this job's sampler will see it (mode, grow, feather, overlap, the model's pixel
    scale): `job.run.job_preview_masks`, the sampler's own function, with the page's model cache."""
    job = page_job(settings, masks)
    with page_errors():
        return job_preview_masks(job, cache)


__all__ = ["LOCKS", "MODELS", "Cancelled", "ModelLocks", "page_job", "render", "sampler_view"]
