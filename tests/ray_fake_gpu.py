"""Ray worker setup hook for the logical-GPU test (tests/test_batch_workflow.py): no GPU here, so each Ray worker
process is made to believe that CUDA is there (torch.cuda.is_available() -> True), and model loads record the
device they were asked for (with the process's CUDA_VISIBLE_DEVICES) in $TWOSAMPLERS_TEST_LOAD_LOG, then load
on the CPU. The batch code that decides the device and asks for the model is the real one."""

from __future__ import annotations

import json
import os


def setup() -> None:
    import torch

    import twosamplers.models.registry as models

    torch.cuda.is_available = lambda: True
    real = models.load
    log = os.environ["TWOSAMPLERS_TEST_LOAD_LOG"]

    def load(name="textures", *, device=None, dtype=None, **options):
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "device": None if device is None else str(device),
                                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                "model": str(name)}) + "\n")
        return real(name, device=None, dtype=dtype, **options)

    models.load = load
