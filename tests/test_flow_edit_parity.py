"""InstructPixToPixConditioning and Flux.1 Fill / Canny-Depth extra input channels against ComfyUI 0.30.0: the
workflows of tests/flow_edit_workflows.py run by `twosamplers.workflow.run` give the latents ComfyUI's own run
gave (references: tests/parity/flow_edit/, made by tests/comfy_oracle/flow_edit_workflows.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from flow_edit_workflows import WORKFLOWS, write_edit_models  # noqa: E402
from flow_workflows import write_inputs  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from twosamplers.nodes.edit_conditioning import InstructPixToPixConditioning, crop_to_multiple  # noqa: E402
from twosamplers.workflow import NODES, run  # noqa: E402

REF = load_file(str(Path(__file__).parent / "parity" / "flow_edit" / "references.safetensors"))
TOL = 2e-3  # latents at the end of sampling (tests/parity/README.md's e2e tolerance)


@pytest.fixture(scope="module")
def edit_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow_edit")
    write_edit_models(root / "models")
    write_inputs(root / "input")
    return root / "models", root / "input"


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_workflow_matches_comfyui(edit_dirs, tmp_path, name):
    models, inputs = edit_dirs
    wf = WORKFLOWS[name]()
    assert not {n["class_type"] for n in wf.values()} - set(NODES)
    outputs = run(wf, models=models, input_dir=inputs, output_dir=tmp_path)
    (saved,) = [o for o in outputs if o["class_type"] == "SaveLatent"]
    ours, ref = saved["samples"]["samples"], REF[f"{name}/saved/{saved['node']}"]
    assert tuple(ours.shape) == tuple(ref.shape)
    diff = float((ours.float() - ref).abs().max())
    assert diff <= TOL, f"{name}: max |diff| {diff:.3e}"


def test_extra_channels_change_the_result(edit_dirs, tmp_path):
    """Without the image (the prompts straight to the sampler, same zero latent) the Canny model gives other
    numbers: the concat channels are really read (so the parity above cannot pass by ignoring them)."""
    models, inputs = edit_dirs
    wf = WORKFLOWS["flux_canny_ip2p"]()
    wf["20"]["inputs"].update(positive=["4", 0], negative=["5", 0])
    (saved,) = [o for o in run(wf, models=models, input_dir=inputs, output_dir=tmp_path)
                if o["class_type"] == "SaveLatent"]
    diff = float((saved["samples"]["samples"] - REF["flux_canny_ip2p/saved/21"]).abs().max())
    assert diff > 100 * TOL


def test_ip2p_latent_and_crop_match_comfyui():
    """The node's LATENT: zeros of the encoded, centre-cropped image's shape (68 x 60 -> 64 x 56 -> 8 x 7)."""
    ref = REF["flux_canny_ip2p/node/13/2"]
    assert tuple(ref.shape) == (1, 16, 7, 8) and not ref.any()
    px = torch.arange(2 * 60 * 68 * 3, dtype=torch.float32).reshape(2, 60, 68, 3)
    out = crop_to_multiple(px)
    assert out.shape == (2, 56, 64, 3)
    assert torch.equal(out, px[:, 2:58, 2:66])
    assert crop_to_multiple(px[:, :56, :64]) is not None and torch.equal(crop_to_multiple(px[:, :56, :64]),
                                                                         px[:, :56, :64])


class _Vae:
    """A stand-in VAE handle recording what it encodes."""

    def __init__(self):
        self.seen = None

    def encode(self, pixels):
        self.seen = pixels
        return torch.ones(pixels.shape[0], 16, pixels.shape[1] // 8, pixels.shape[2] // 8)


def test_ip2p_sets_every_entry_and_keeps_inputs(monkeypatch):
    from twosamplers.nodes import edit_conditioning

    vae = _Vae()
    monkeypatch.setattr(edit_conditioning, "_vae", lambda v: v)
    pos = [[torch.zeros(1, 4, 8), {"pooled_output": torch.zeros(1, 8)}], [torch.ones(1, 4, 8), {}]]
    neg = [[torch.zeros(1, 4, 8), {}]]
    rgba = torch.rand(1, 20, 17, 4)
    p, n, latent = InstructPixToPixConditioning().encode(pos, neg, rgba, vae)
    assert vae.seen.shape == (1, 16, 16, 3)  # alpha dropped, centre-cropped
    assert len(p) == 2 and len(n) == 1
    assert all("concat_latent_image" in o for _, o in p + n)
    assert "concat_latent_image" not in pos[0][1] and "concat_latent_image" not in pos[1][1]  # inputs untouched
    assert latent["samples"].shape == (1, 16, 2, 2) and not latent["samples"].any()


def test_ip2p_refuses_tiny_images():
    with pytest.raises(ValueError, match="at least 8 x 8"):
        crop_to_multiple(torch.zeros(1, 5, 20, 3))
