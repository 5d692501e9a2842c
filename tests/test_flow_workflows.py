"""Flux.1 / SD3.5 workflows (tests/flow_workflows.py) run by `twosamplers.workflow.run` give ComfyUI 0.30.0's
latents and images (references: tests/data/flow_workflows.safetensors, from tests/comfy_oracle/flow_workflows.py
running the same workflows on the same tiny files): txt2img from separate files, an all-in-one checkpoint,
inpainting with a noise mask, TwoSamplersForMask, regional conditioning, a LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flow_workflows import WORKFLOWS, write_inputs
from safetensors.torch import load_file

from twosamplers.workflow import NODES, run

REF = load_file(str(Path(__file__).parent / "data" / "flow_workflows.safetensors"))
TOL = 2e-3  # the tolerance for latents at the end of sampling


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow_input")
    write_inputs(d)
    return d


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_workflow_matches_comfyui(flow_models_dir, inputs, tmp_path, name):
    wf = WORKFLOWS[name]()
    assert not {n["class_type"] for n in wf.values()} - set(NODES)
    outputs = run(wf, models=flow_models_dir, input_dir=inputs, output_dir=tmp_path)
    checked = 0
    for out in outputs:
        key = f"{name}/saved/{out['node']}"
        if key not in REF:
            continue
        if out["class_type"] == "SaveLatent":
            ours = out["samples"]["samples"]
            tol = TOL
        else:
            ours = out["images"]
            tol = 1e-3  # decoded pixels in [0, 1]
        ref = REF[key]
        assert tuple(ours.shape) == tuple(ref.shape), key
        diff = float((ours.float() - ref).abs().max())
        assert diff <= tol, f"{key}: max |diff| {diff:.3e}"
        checked += 1
    assert checked == len([k for k in REF if k.startswith(f"{name}/")])


def test_workflow_files_written(flow_models_dir, inputs, tmp_path):
    outputs = run(WORKFLOWS["flux_aio"](), models=flow_models_dir, input_dir=inputs, output_dir=tmp_path)
    files = sorted(Path(f).name for o in outputs for f in o["files"])
    assert [f.rsplit(".", 1)[1] for f in files] == ["latent", "png", "png"]  # one latent, the batch's 2 images
    assert all(torch.isfinite(o.get("samples", {"samples": torch.zeros(1)})["samples"]).all() for o in outputs)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_regional_sampler_three_regions_runs_deterministically(flow_models_dir, inputs, tmp_path, family):
    from flow_workflows import regional_sampler

    out = [run(regional_sampler(family), models=flow_models_dir, input_dir=inputs, output_dir=tmp_path / str(i))
           for i in range(2)]
    a, b = out[0][0]["images"], out[1][0]["images"]
    assert a.shape == (1, 64, 64, 3) and torch.isfinite(a).all() and torch.equal(a, b)
