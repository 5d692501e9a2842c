"""`twosamplers run` / `twosamplers.workflow.run`: workflows in both formats give the numbers of direct calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from workflow_cases import SIZE, STEPS, api_inpaint, api_regional, api_t2i, api_two_samplers, ui_t2i, with_inputs

import twosamplers as ts
from twosamplers.cli import main
from twosamplers.engine.ksampler import common_ksampler
from twosamplers.job.imageio import load_image, load_mask
from twosamplers.models import load
from twosamplers.nodes import KSamplerAdvancedWrapper, KSamplerWrapper, RegionalPrompt
from twosamplers.nodes.registry import NODES, input_types
from twosamplers.workflow import WorkflowError, run, ui_to_api
from twosamplers.workflow.execute import load as load_workflow


@pytest.fixture(scope="module")
def model():
    return load("textures")


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("input")
    g = np.random.default_rng(3)
    Image.fromarray(g.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / "photo.png")
    m = np.zeros((SIZE, SIZE, 3), np.uint8)
    m[8:24, 4:20] = 255
    m[8:24, 20:22, 0] = 128  # a soft edge in the red channel
    Image.fromarray(m).save(d / "mask.png")
    rgba = np.full((SIZE, SIZE, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[20:30, 18:30, 3] = 0  # transparent = the region (mask = 1 - alpha)
    Image.fromarray(rgba).save(d / "alpha.png")
    return d


def enc(model, text):
    return model.encode_prompt(text)


def empty(model):
    return {"samples": torch.zeros(1, model.latent_format.channels, SIZE, SIZE)}


def png_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------------------------------------------------------ txt2img
def test_txt2img_matches_the_engine_call(model, tmp_path):
    out = run(api_t2i(), output_dir=tmp_path)
    assert [o["class_type"] for o in out] == ["SaveImage"]
    assert out[0]["files"] == [str(tmp_path / "t2i_00001_.png")]
    ref = common_ksampler(model, 1, STEPS, 3.0, "euler", "normal", enc(model, "grass"), enc(model, ""), empty(model),
                          disable_pbar=True)
    image = model.decode_latent(ref["samples"])
    # EmptyLatentImage 32 x 32 reaches the pixel-space model as a 32 x 32 image, not 4 x 4
    assert out[0]["images"].shape == (1, SIZE, SIZE, 3)
    assert torch.equal(out[0]["images"], image)
    expected = np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8)
    assert np.array_equal(png_pixels(out[0]["files"][0]), expected)


def test_ui_format_twin_converts_to_the_api_prompt_and_gives_identical_outputs(model, tmp_path):
    ui = ui_t2i()
    prompt = ui_to_api(ui, lambda t: input_types(NODES[t]) if t in NODES else None)
    api = api_t2i()
    assert sorted(prompt) == sorted(api)  # Reroute, Primitive, Note, the muted and the bypassed node are gone
    for nid in api:
        assert prompt[nid]["class_type"] == api[nid]["class_type"]
        assert prompt[nid]["inputs"] == api[nid]["inputs"], nid
    a = run(api, models={"textures": model}, output_dir=tmp_path / "api")
    b = run(ui, models={"textures": model}, output_dir=tmp_path / "ui")
    assert torch.equal(a[0]["images"], b[0]["images"])
    assert np.array_equal(png_pixels(a[0]["files"][0]), png_pixels(b[0]["files"][0]))


def test_png_round_trip_gives_the_same_bytes(model, tmp_path):
    for name, wf in (("api", api_t2i()), ("ui", ui_t2i())):
        first = Path(run(wf, {"textures": model}, output_dir=tmp_path / name)[0]["files"][0])
        with Image.open(first) as im:
            chunks = dict(im.text)
        assert json.loads(chunks["prompt"])["3"]["inputs"]["seed"] == 1
        assert ("workflow" in chunks) == (name == "ui")
        second = Path(run(first, {"textures": model}, output_dir=tmp_path / name)[0]["files"][0])
        assert second.name == "t2i_00002_.png"
        assert first.read_bytes() == second.read_bytes()


def test_overrides_drop_the_ui_workflow_chunk_that_would_show_old_values(model, tmp_path):
    out = run(ui_t2i(), {"textures": model}, {"3.seed": 7}, output_dir=tmp_path)
    with Image.open(out[0]["files"][0]) as im:
        chunks = dict(im.text)
    assert json.loads(chunks["prompt"])["3"]["inputs"]["seed"] == 7
    assert "workflow" not in chunks


def test_counter_continues_after_the_highest_number(model, tmp_path):
    (tmp_path / "t2i_00007_.png").write_bytes(b"x")
    (tmp_path / "other_00042_.png").write_bytes(b"x")
    wf = api_t2i()
    wf["19"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t2i"}}
    out = run(wf, {"textures": model}, output_dir=tmp_path)
    assert [Path(o["files"][0]).name for o in out] == ["t2i_00008_.png", "t2i_00009_.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_empty_latent_channel_rule_for_unchanged_models():
    from twosamplers.engine.latent import remake_empty_latent
    from twosamplers.models.base import LatentFormat

    z = {"samples": torch.zeros(2, 4, 5, 6), "batch_index": [3, 4]}
    assert remake_empty_latent(z, LatentFormat()) is z
    assert remake_empty_latent(z, LatentFormat(1.0, 16, 8)) is z  # 1/8 models: the samplers' channel rule
    r = remake_empty_latent(z, LatentFormat(1.0, 3, 1))
    assert r["samples"].shape == (2, 3, 40, 48) and r["batch_index"] == [3, 4]
    nz = {"samples": torch.ones(1, 4, 5, 6)}
    assert remake_empty_latent(nz, LatentFormat(1.0, 3, 1)) is nz


# ------------------------------------------------------------------------------------------------ inpaint
def test_inpaint_with_set_latent_noise_mask(model, input_dir, tmp_path):
    out = run(api_inpaint(), {"textures": model}, input_dir=input_dir, output_dir=tmp_path)
    by = {o["class_type"]: o for o in out}
    pixels = load_image(input_dir / "photo.png")
    mask = load_mask(input_dir / "mask.png", "red")
    latent = {"samples": model.encode_image(pixels), "noise_mask": mask.reshape(1, 1, SIZE, SIZE)}
    ref = common_ksampler(model, 4, STEPS, 3.0, "euler", "normal", enc(model, "grass"), enc(model, ""), latent,
                          denoise=0.8, disable_pbar=True)
    assert torch.equal(by["SaveLatent"]["samples"]["samples"], ref["samples"])
    assert torch.equal(by["SaveImage"]["images"], model.decode_latent(ref["samples"]))
    saved = ts.load_latent(by["SaveLatent"]["files"][0])
    assert torch.equal(saved["samples"], ref["samples"])
    assert Path(by["SaveLatent"]["files"][0]) == tmp_path / "latents" / "inpaint_00001_.latent"


# ------------------------------------------------------------------------------------------------ Impact nodes
def test_two_samplers_for_mask_with_providers_and_basic_pipes(model, input_dir, tmp_path):
    out = run(api_two_samplers(), {"textures": model}, input_dir=input_dir, output_dir=tmp_path)
    by = {o["class_type"]: o for o in out}
    mask = load_mask(input_dir / "mask.png", "red")[None]
    base = KSamplerWrapper(model, 3, STEPS, 3.0, "euler", "normal", enc(model, "grass"), enc(model, ""), 1.0)
    inside = KSamplerWrapper(model, 5, STEPS, 4.0, "dpmpp_2m", "karras", enc(model, "brick"), enc(model, ""), 0.9)
    ref = ts.TwoSamplersForMask().doit(empty(model), base, inside, mask, disable_pbar=True)[0]
    assert torch.equal(by["SaveLatent"]["samples"]["samples"], ref["samples"])
    assert torch.equal(by["SaveImage"]["images"], model.decode_latent(ref["samples"]))


def test_regional_sampler_two_regions_with_loaded_masks(model, input_dir, tmp_path):
    out = run(api_regional(), {"textures": model}, input_dir=input_dir, output_dir=tmp_path)
    got = out[0]["samples"]["samples"]
    red = load_mask(input_dir / "mask.png", "red")[None]
    alpha = load_mask(input_dir / "alpha.png", "alpha")[None]
    neg = enc(model, "")
    base = KSamplerAdvancedWrapper(model, 3.0, "euler", "normal", enc(model, "grass"), neg)
    r1 = KSamplerAdvancedWrapper(model, 3.0, "euler_ancestral", "normal", enc(model, "brick"), neg)
    r2 = KSamplerAdvancedWrapper(model, 3.0, "dpmpp_2m", "normal", enc(model, "water"), neg)
    regions = RegionalPrompt().doit(red, r1)[0] + RegionalPrompt().doit(alpha, r2)[0]
    ref = ts.RegionalSampler().doit(7, 0, "ignore", STEPS, 1, 1.0, empty(model), base, regions, 2, True,
                                    "ratio between", "AUTO", 0.3, disable_pbar=True)[0]
    assert torch.equal(got, ref["samples"])
    assert float(alpha.sum()) > 0 and float(red.sum()) > 0


def test_masked_conditioning_workflow(model, input_dir, tmp_path):
    from twosamplers.nodes.conditioning import ConditioningCombine, ConditioningSetMask, ConditioningSetTimestepRange

    wf = api_t2i(prefix="cond")
    wf.update({
        "12": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "13": {"class_type": "InvertMask", "inputs": {"mask": ["12", 0]}},
        "16": {"class_type": "CLIPTextEncode", "inputs": {"text": "brick", "clip": ["4", 1]}},
        "20": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["16", 0], "mask": ["12", 0],
                                                               "strength": 1.0, "set_cond_area": "default"}},
        "21": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["6", 0], "mask": ["13", 0],
                                                               "strength": 0.8, "set_cond_area": "mask bounds"}},
        "22": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["20", 0],
                                                               "conditioning_2": ["21", 0]}},
        "23": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["22", 0], "start": 0.0,
                                                                        "end": 0.8}},
    })
    wf["3"]["inputs"]["positive"] = ["23", 0]
    got = run(wf, {"textures": model}, input_dir=input_dir, output_dir=tmp_path)[0]["images"]
    mask = load_mask(input_dir / "mask.png", "red")[None]
    a = ConditioningSetMask().append(enc(model, "brick"), mask, 1.0, "default")[0]
    b = ConditioningSetMask().append(enc(model, "grass"), 1.0 - mask, 0.8, "mask bounds")[0]
    pos = ConditioningSetTimestepRange().set_range(ConditioningCombine().combine(a, b)[0], 0.0, 0.8)[0]
    ref = common_ksampler(model, 1, STEPS, 3.0, "euler", "normal", pos, enc(model, ""), empty(model),
                          disable_pbar=True)
    assert torch.equal(got, model.decode_latent(ref["samples"]))


# ------------------------------------------------------------------------------------------------ CLI
def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_cli_run_json_and_set(tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(api_t2i()))
    out_dir = tmp_path / "out"
    assert main(["run", str(wf), "--output-dir", str(out_dir), "--json", "--set", "3.seed=2",
                 "--set", "9.filename_prefix=seeded"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"][0]["files"] == [str(out_dir / "seeded_00001_.png")]
    with Image.open(out_dir / "seeded_00001_.png") as im:
        assert json.loads(im.text["prompt"])["3"]["inputs"]["seed"] == 2
    assert main(["run", str(wf), "--output-dir", str(out_dir), "-q"]) == 0
    a, b = png_pixels(out_dir / "seeded_00001_.png"), png_pixels(out_dir / "t2i_00001_.png")
    assert not np.array_equal(a, b)


def test_cli_list_nodes(capsys):
    assert main(["run", "--list-nodes"]) == 0
    names = capsys.readouterr().out.split()
    assert "KSampler" in names and "TwoSamplersForMask" in names and "RegionalSampler" in names


BAD = {
    "unknown nodes": (lambda: {**api_t2i(), "50": {"class_type": "UltimateSDUpscale", "inputs": {}},
                               "51": {"class_type": "FaceDetailer", "inputs": {}}},
                      ['"UltimateSDUpscale" (node 50)', '"FaceDetailer" (node 51)']),
    "missing input": (lambda: {**api_t2i(), "3": {"class_type": "KSampler", "inputs": {
        k: v for k, v in api_t2i()["3"]["inputs"].items() if k != "positive"}}},
                      ["node 3 (KSampler): required input 'positive' is missing"]),
    "wrong type": (lambda: {**api_t2i(), "10": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8,
                                                                                      "height": 8}},
                            "11": {"class_type": "MaskToImage", "inputs": {"mask": ["10", 0]}},
                            "3": with_inputs(api_t2i(), "3", latent_image=["11", 0])["3"]},
                   ["node 3 (KSampler): input 'latent_image' expects LATENT but node 11 (MaskToImage) output 0 "
                    "gives IMAGE"]),
    "cycle": (lambda: {**api_t2i(), "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0],
                                                                                 "vae": ["4", 2]}},
                       "3": with_inputs(api_t2i(), "3", latent_image=["11", 0])["3"]},
              ["cycle", "node 3 (KSampler)", "node 11 (VAEEncode)", "node 8 (VAEDecode)"]),
    "model not found": (lambda: api_t2i(ckpt="sd15.safetensors"), ["checkpoint 'sd15.safetensors' not found"]),
    "bad value": (lambda: with_inputs(api_t2i(), "3", sampler_name="eulerx", steps=0),
                  ["'sampler_name' = 'eulerx' is not one of", "'steps' = 0 is out of range"]),
    "fails while running": (lambda: api_t2i(text="zebra"), ["node 6 (CLIPTextEncode)", "unknown prompt word"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_workflows_exit_2_and_write_nothing(case, tmp_path, capsys):
    make, needles = BAD[case]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(make()))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["run", str(wf), "--output-dir", str(out_dir), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twosamplers: error: ") and err.count("\n") == 1
    for n in needles:
        assert n in err
    assert _files(out_dir) == []


def test_malformed_json_and_not_a_workflow(tmp_path, capsys):
    for text, needle in (("{\"3\": ", "is not valid JSON"), ("[1, 2]", "a workflow is a JSON object"),
                         ('{"a": 1}', "no 'class_type'")):
        wf = tmp_path / "wf.json"
        wf.write_text(text)
        assert main(["run", str(wf), "--output-dir", str(tmp_path / "out")]) == 2
        assert needle in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "workflow file not found" in capsys.readouterr().err
    assert _files(tmp_path / "out") == []


def test_png_without_workflow_is_refused(tmp_path):
    p = tmp_path / "plain.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a1111 text")
    Image.new("RGB", (8, 8)).save(p, pnginfo=info)
    with pytest.raises(WorkflowError, match="carries no workflow"):
        run(p, output_dir=tmp_path)


def test_webp_exif_workflow(tmp_path):
    p = tmp_path / "wf.webp"
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(api_t2i())
    Image.new("RGB", (8, 8)).save(p, exif=exif)
    assert load_workflow(p).prompt["3"]["inputs"]["seed"] == 1


def test_each_model_is_loaded_once_per_cache(model, tmp_path):
    from twosamplers.models import ModelCache

    calls = []
    cache = ModelCache(loader=lambda name, **kw: calls.append(name) or model)
    wf = api_t2i()
    wf["40"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "Textures"}}
    wf["7"]["inputs"]["clip"] = ["40", 1]
    run(wf, cache=cache, output_dir=tmp_path)
    run(wf, cache=cache, output_dir=tmp_path)
    assert calls == ["textures"]
