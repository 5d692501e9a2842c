"""End-to-end ComfyUI parity on seeded SD1.5, SD2-v, SDXL and SDXL-refiner checkpoints (tests/parity/e2e).

The cases themselves build ~6 GB of checkpoints once (into $TWOSAMPLERS_PARITY_CACHE or
~/.cache/twosamplers/parity-e2e) and take minutes on a CPU, so they run only when asked:

    TWOSAMPLERS_E2E=1 python -m pytest tests/test_parity_e2e.py          # or: python tests/parity/e2e/check.py

The checks that the committed references belong to the committed cases run always.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent / "parity" / "e2e"
sys.path.insert(0, str(E2E))

import cases as case_defs  # noqa: E402
import refs  # noqa: E402

MANIFEST = json.loads((E2E / "references" / "manifest.json").read_text())
ALL = [(family, name) for family, cs in case_defs.all_cases().items() for name, _, _ in cs]
RUN = os.environ.get("TWOSAMPLERS_E2E", "").strip().lower() in ("1", "true", "yes")


def test_references_match_the_cases():
    """Every case has a reference made from exactly its workflow and options, on a recorded machine."""
    assert {n for _, n in ALL} == set(MANIFEST["cases"])
    for family, cs in case_defs.all_cases().items():
        for name, wf, opts in cs:
            entry = MANIFEST["cases"][name]
            assert entry["workflow"] == json.loads(json.dumps(wf)), name
            assert entry["options"] == opts and entry["family"] == family
            assert entry["machine"]["cpu_capability"] and entry["machine"]["torch_threads"] >= 1
            kinds = {refs.kind_of(k, wf) for k in entry["keys"]}
            assert {"latent", "image", "cond"} <= kinds, name
    assert MANIFEST["checkpoints"] == json.loads((E2E / "checkpoints.sha256.json").read_text())
    assert {"sd15", "sd2v", "sdxl", "refiner"} == {f for f, _ in ALL}


def test_every_model_node_is_covered():
    used = {node["class_type"] for c in MANIFEST["cases"].values() for node in c["workflow"].values()}
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "CLIPSetLastLayer", "CLIPTextEncodeSDXL",
            "CLIPTextEncodeSDXLRefiner", "KSampler", "KSamplerAdvanced", "VAEEncode", "VAEDecode",
            "VAEEncodeForInpaint", "InpaintModelConditioning", "LoraLoader", "LoraLoaderModelOnly",
            "ControlNetLoader", "ControlNetApply", "ControlNetApplyAdvanced", "KSamplerProvider", "ToBasicPipe",
            "TwoSamplersForMask", "LoadImage", "LoadImageMask"} <= used


@pytest.fixture(scope="module")
def e2e():
    if not RUN:
        pytest.skip("end-to-end parity runs on request: TWOSAMPLERS_E2E=1 (builds ~6 GB of checkpoints once)")
    pytest.importorskip("diffusers")
    import checkpoints
    from safetensors.numpy import load_file

    models = checkpoints.build(checkpoints.cache_dir(), verbose=False)
    refs_by_family = {f: load_file(str(E2E / "references" / f"{f}.safetensors")) for f in case_defs.FAMILY_CASES}
    from twosamplers.models import ModelCache

    return models, refs_by_family, {f: ModelCache() for f in case_defs.FAMILY_CASES}


@pytest.mark.parametrize("family,name", ALL, ids=[n for _, n in ALL])
def test_case_matches_comfyui(e2e, family, name):
    import warnings

    import check

    from twosamplers.nodes.folders import Folders

    models, ref, caches = e2e
    wf, opts = next((w, o) for n, w, o in case_defs.all_cases([family])[family] if n == name)
    options = {"device": "cpu", **({"fp32_text_enc": True} if opts.get("fp32_text_enc") else {})}
    folders = Folders.create(models, input_dir=E2E / "inputs", load_options=options, cache=caches[family])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = check.capture_run(wf, folders)
    res = check.compare(name, MANIFEST["cases"][name], ours, ref[family])
    assert res.ok, res.line()
