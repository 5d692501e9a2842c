"""Jobs: the serialisable description of one render (`Job`), and running it (`run_job`, or `prepare_job` +
`render` + `write_outputs`) with a shared `ModelCache`. Every front end (CLI, UI, batch, workflow runner) makes
a Job and presents its result; nothing else."""

from ..models.registry import ModelCache
from .outputs import check_outputs, write_outputs
from .run import JobResult, Outputs, Prepared, load_inputs, metadata, prepare_job, render, resolve_size, run_job
from .spec import PASS_KEYS, PASSES, Job, JobError, PassSpec, job_keys

__all__ = ["PASSES", "PASS_KEYS", "Job", "JobError", "JobResult", "ModelCache", "Outputs", "PassSpec", "Prepared",
           "check_outputs", "job_keys", "load_inputs", "metadata", "prepare_job", "render", "resolve_size",
           "run_job", "write_outputs"]
