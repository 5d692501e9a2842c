"""`twosamplers batch`: many renders from a JSON Lines jobs file, resumable, on local processes or a Ray cluster.

Modules, in the order a batch flows through them: `jobs_file` (read, expand grids), `adapter` (the render
layer: validate, hash, render one job to bytes), `plan` (output names, what is already done, the folder lock),
`driver` (hand out jobs, write outputs, retries), `pool` (local worker processes), `ray_runner` (Ray actors),
`manifest` (manifest.jsonl / failures.jsonl). See docs/scale-out.md.
"""

from .driver import BatchInputError, BatchResult, run_batch

__all__ = ["BatchInputError", "BatchResult", "run_batch"]
