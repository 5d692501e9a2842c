"""Jobs: the serialisable description of one render (`Job`, its regions), and running it (`run_job`, or
`prepare_job` + `render` + `write_outputs`) with a shared `ModelCache`. Every front end (CLI, UI, batch, workflow
runner) makes a Job and presents its result; nothing else.

Modules: `fields` (JobError, field checks, LoRA/ControlNet entries read and written, PassSpec), `forms` (flat and
`regions` forms, the plain-key shorthand, merging over a stored job, `map_files`: every file a job dict names),
`spec` (Region, Job, `kept_fields`), `png` (a PNG's job), `loras`, `memory`, `run` (prepare and render;
`preview_masks` / `job_preview_masks`: each region's mask as the sampler sees it),
`outputs` (results, metadata, writing).
"""

from ..models.registry import ModelCache
from .fields import PASS_KEYS, PASSES, REGION_KEYS, SHARED_KEYS, JobError, PassSpec
from .outputs import JobResult, Outputs, check_outputs, metadata, write_outputs
from .run import (
    Prepared,
    load_inputs,
    load_masks,
    pass_settings,
    prepare_job,
    preview_masks,
    render,
    resolve_size,
    run_job,
)
from .spec import Job, Region, job_keys

__all__ = ["PASSES", "PASS_KEYS", "REGION_KEYS", "SHARED_KEYS", "Job", "JobError", "JobResult", "ModelCache",
           "Outputs", "PassSpec", "Prepared", "Region", "check_outputs", "job_keys", "load_inputs", "load_masks",
           "metadata", "pass_settings", "prepare_job", "preview_masks", "render", "resolve_size", "run_job",
           "write_outputs"]
