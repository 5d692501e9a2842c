"""The hostile-input catalogue of issue 21 for `generate`, `run` and `batch` (the web page's cases over HTTP are in
test_security_ui.py): PNGs, workflows and batch lines made by someone else, and the files they name.

Every case asserts the promise of docs/security.md: no file outside the document's folders is read into an output
(no escape, no leak), no user file is deleted or replaced, nothing hangs (each command runs under a watchdog),
no traceback: exit status 2 and one line. The user's private files live in `world.private`, outside every folder
a document may name; they must be byte for byte the same after every case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from security_cases import (
    bomb_png,
    cli,
    deep_json,
    fifo,
    job_dict,
    refused,
    someone_elses_png,
    write_png,
)
from workflow_cases import api_t2i, ui_t2i

from twosamplers.job.imageio import read_settings


# ============================================================================================== generate
def _from(world, settings, *extra, **png):
    p = someone_elses_png(world.work / "theirs.png", settings, **png)
    return cli(["generate", "--from", p, "-o", world.work / "out" / "o.png", "-q", *extra])


def _secret_lora(world):
    return {"file": str(world.private / "secret.safetensors"), "strength_model": 1.0, "strength_clip": 1.0}


GENERATE_PNG_CASES = {
    "image outside": lambda w: (job_dict(image=str(w.secret)), [], ("image",)),
    "image relative escape": lambda w: (job_dict(image="../private/secret.png"), [], ("image",)),
    "lora entry absolute": lambda w: (job_dict(base_loras=[_secret_lora(w)]), [], ("base_loras",)),
    "lora folder outside": lambda w: (job_dict(lora_dir=str(w.private), mask_loras=["secret"]), [], ("LoRA",)),
    "lora entry escapes the user's folder": lambda w: (job_dict(mask_loras=["../private/secret"]),
                                                       ["--lora-dir", w.work / "loras"], ("LoRA",)),
    "prompt tag escape": lambda w: (job_dict(mask_prompt="brick <lora:../private/secret>"),
                                    ["--lora-dir", w.work / "loras"], ("prompt tag",)),
    "prompt tag absolute": lambda w: (job_dict(mask_prompt=f"brick <lora:{w.private}/secret.safetensors>"),
                                      ["--lora-dir", w.work / "loras"], ("prompt tag",)),
    "prompt tag home": lambda w: (job_dict(base_prompt="<lora:~/secret>"), ["--lora-dir", w.work / "loras"],
                                  ("prompt tag",)),
    "hub model": lambda w: (job_dict(model="someone/model"), [], ("never downloaded",)),
    "hub pass model": lambda w: (job_dict(base_model="someone/model"), [], ("never downloaded",)),
    "model /dev/zero": lambda w: (job_dict(model="/dev/zero"), [], ()),
    "model is a FIFO": lambda w: (job_dict(model=str(fifo(w.work / "m.safetensors"))), [], ()),
    "controlnet hint outside": lambda w: (job_dict(mask_controlnets=[f"{w.private}/cn.safetensors:{w.secret}"]),
                                          [], ("ControlNet",)),
    "embeddings folder outside": lambda w: (job_dict(embeddings=str(w.private), mask_prompt="embedding:secret"),
                                            [], ()),
    "settings 100k deep": lambda w: ('{"a":' * 100000 + "1" + "}" * 100000, [], ()),
    "settings list 100k deep": lambda w: (deep_json(100000), [], ()),
    "field 900 deep": lambda w: (job_dict(base_prompt=json.loads(deep_json(900))), [], ()),
    "settings not an object": lambda w: ("[1, 2]", [], ()),
    "settings not JSON": lambda w: ("{'python': True}", [], ()),
    "width 1e9": lambda w: (job_dict(width=10**9, height=10**9), [], ("width",)),
    "steps 2**63": lambda w: (job_dict(base_steps=2**63), [], ("steps",)),
    "seed 2**70": lambda w: (job_dict(mask_seed=2**70), [], ("seed",)),
    "cfg NaN": lambda w: ('{"base_prompt": "a", "mask_prompt": "b", "base_cfg": NaN}', [], ("cfg",)),
    "unknown field": lambda w: (job_dict(__class__="x"), [], ("unknown field",)),
    "comfyui_version injection": lambda w: (job_dict(comfyui_version="0.3; rm -rf ~"), [], ("comfyui_version",)),
    "mode bogus": lambda w: (job_dict(mode="__import__('os')"), [], ("mode",)),
    "lora strength inf": lambda w: (job_dict(base_loras=[{"file": "x", "strength_model": 1e400}]), [], ()),
    "controlnet malformed": lambda w: (job_dict(base_controlnets=[{"file": 1, "image": None}]), [], ()),
}


@pytest.mark.parametrize("case", list(GENERATE_PNG_CASES))
def test_generate_from_someone_elses_png(world, case):
    settings, extra, words = GENERATE_PNG_CASES[case](world)
    refused(_from(world, settings, *extra), *words)
    assert not list((world.work / "out").iterdir()), "nothing is written"


def test_someone_elses_png_with_a_huge_foreign_text_chunk_is_just_a_png(world):
    code, _, err = _from(world, job_dict(), extra={"filler": "x" * 3_000_000})
    assert code == 0, err
    assert "filler" not in read_settings(world.work / "out" / "o.png")[0]


@pytest.mark.parametrize("mask_text", ["zz-not-hex", "89504e47", "00" * 64])
def test_someone_elses_png_with_a_damaged_mask_chunk(world, mask_text):
    p = someone_elses_png(world.work / "theirs.png", job_dict(), mask=False, extra={"twosamplers-mask": mask_text})
    refused(cli(["generate", "--from", p, "-o", world.work / "out" / "o.png", "-q"]))


def test_someone_elses_png_whose_mask_is_a_decompression_bomb(world):
    bomb = bomb_png(world.work / "b.png").read_bytes().hex()
    p = someone_elses_png(world.work / "theirs.png", job_dict(), mask=False, extra={"twosamplers-mask": bomb})
    refused(cli(["generate", "--from", p, "-o", world.work / "out" / "o.png", "-q"]), "decompression bomb")


@pytest.mark.parametrize("kind", ["bomb", "fifo", "dev-zero", "folder", "truncated", "empty"])
def test_generate_from_files_that_are_not_pngs(world, kind):
    target = {"bomb": lambda: bomb_png(world.work / "b.png", text={"twosamplers": json.dumps(job_dict())}),
              "fifo": lambda: fifo(world.work / "f.png"), "dev-zero": lambda: Path("/dev/zero"),
              "folder": lambda: world.work / "loras",
              "truncated": lambda: _truncated(someone_elses_png(world.work / "t.png", job_dict())),
              "empty": lambda: _empty(world.work / "e.png")}[kind]()
    refused(cli(["generate", "--from", target, "-o", world.work / "out" / "o.png", "-q"]))


def _truncated(p: Path) -> Path:
    p.write_bytes(p.read_bytes()[:60])
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


@pytest.mark.parametrize("flag,target", [("--mask", "/dev/zero"), ("--mask", "FIFO"), ("--image", "FIFO"),
                                         ("--image", "/dev/urandom"), ("--mask", "FOLDER")])
def test_generate_inputs_that_are_not_ordinary_files(world, flag, target):
    path = {"FIFO": lambda: fifo(world.work / "x.png"), "FOLDER": lambda: world.work / "loras"}.get(
        target, lambda: Path(target))()
    args = ["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--steps", 1, "-o",
            world.work / "out" / "o.png", "-q"]
    args += [flag, path] + (["--mask", world.work / "mask.png"] if flag != "--mask" else [])
    refused(cli(args))


@pytest.mark.parametrize("output", ["FOLDER", "/dev/null", "FIFO"])
def test_generate_outputs_that_are_not_files(world, output):
    path = {"FOLDER": lambda: world.work / "out", "FIFO": lambda: fifo(world.work / "o.png")}.get(
        output, lambda: Path(output))()
    refused(cli(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", world.work / "mask.png",
                 "-o", path, "-q"]))


@pytest.mark.parametrize("tag", ["<lora:../private/secret>", "<lora:/etc/passwd>", "<lora:~/.ssh/id_rsa>",
                                 "<lora:..\\..\\private\\secret>", "<lora:C:/Windows/x>"])
def test_prompt_tags_never_leave_the_lora_folder_even_on_the_command_line(world, tag):
    refused(cli(["generate", "--base-prompt", f"grass {tag}", "--mask-prompt", "brick", "--mask",
                 world.work / "mask.png", "--lora-dir", world.work / "loras", "-o", world.work / "out" / "o.png",
                 "-q"]), "prompt tag")


def test_own_png_still_renders_again_with_its_files(world):
    """The other side of the promise: a PNG this user rendered names its files and `--from` uses them."""
    img = write_png(world.work / "start.png", 120)
    first = world.work / "out" / "first.png"
    code, _, err = cli(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask",
                        world.work / "mask.png", "--image", img, "--denoise", 0.5, "--steps", 1, "-o", first, "-q"])
    assert code == 0, err
    assert read_settings(first, with_origin=True)[2] is True
    code, _, err = cli(["generate", "--from", first, "-o", world.work / "out" / "again.png", "-q"])
    assert code == 0, err
    with Image.open(first) as a, Image.open(world.work / "out" / "again.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_someone_elses_png_renders_with_the_files_given_again(world):
    img = write_png(world.work / "start.png", 120)
    settings = job_dict(image=str(world.secret), base_denoise=0.5, mask_denoise=0.5)
    code, _, err = _from(world, settings, "--image", img)
    assert code == 0, err
    assert read_settings(world.work / "out" / "o.png")[0]["image"] == str(img)


def test_a_copied_png_counts_as_someone_elses(world, monkeypatch):
    """Another user's (or machine's) key: the origin tag does not check out, so the PNG's files are not read."""
    img = write_png(world.work / "start.png", 120)
    first = world.work / "out" / "first.png"
    assert cli(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", world.work / "mask.png",
                "--image", img, "--denoise", 0.5, "--steps", 1, "-o", first, "-q"])[0] == 0
    from twosamplers import _origin

    monkeypatch.setenv("TWOSAMPLERS_KEY_FILE", str(world.root / "other-user.key"))
    monkeypatch.setattr(_origin, "_CACHE", {})
    refused(cli(["generate", "--from", first, "-o", world.work / "out" / "again.png", "-q"]), "image")


# ============================================================================================== run
def _run(world, wf, *extra, name="wf.json"):
    path = world.work / name
    path.write_text(wf if isinstance(wf, str) else json.dumps(wf))
    return cli(["run", path, "--models", world.work / "models", "--input-dir", world.work / "input",
                "--output-dir", world.work / "out", "-q", *extra])


def _lora_wf(name):
    wf = api_t2i()
    wf["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": name,
                                                                "strength_model": 1.0}}
    wf["3"]["inputs"]["model"] = ["10", 0]
    return wf


def _load_image_wf(name):
    wf = api_t2i()
    wf["12"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    wf["13"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["12", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"]["latent_image"] = ["13", 0]
    return wf


def _with(wf, nid, **inputs):
    wf[nid]["inputs"].update(inputs)
    return wf


RUN_CASES = {
    "lora_name escapes": lambda w: _lora_wf("../../private/secret.safetensors"),
    "lora_name absolute": lambda w: _lora_wf(str(w.private / "secret.safetensors")),
    "lora_name home": lambda w: _lora_wf("~/secret.safetensors"),
    "lora_name backslashes": lambda w: _lora_wf("..\\..\\private\\secret.safetensors"),
    "ckpt_name escapes": lambda w: api_t2i("../../private/secret.safetensors"),
    "ckpt_name absolute": lambda w: api_t2i("/etc/passwd"),
    "ckpt_name hub": lambda w: api_t2i("someone/model"),
    "LoadImage escapes": lambda w: _load_image_wf("../../private/secret.png"),
    "LoadImage absolute": lambda w: _load_image_wf(str(w.secret)),
    "LoadLatent escapes": lambda w: {**api_t2i(), "14": {"class_type": "LoadLatent",
                                                          "inputs": {"latent": "../private/x.latent"}},
                                      "15": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0]}}},
    "prefix escapes": lambda w: api_t2i(prefix="../../escape"),
    "prefix absolute": lambda w: api_t2i(prefix=str(w.private / "x")),
    "prefix NUL": lambda w: api_t2i(prefix="a\0b"),
    "prefix too long": lambda w: api_t2i(prefix="x" * 300),
    "prefix home": lambda w: api_t2i(prefix="~/x"),
    "prefix only a folder": lambda w: api_t2i(prefix="sub/.."),
    "SaveLatent prefix escapes": lambda w: {**api_t2i(), "15": {"class_type": "SaveLatent", "inputs": {
        "samples": ["3", 0], "filename_prefix": "../x"}}},
    "JSON 100k deep": lambda w: deep_json(100000),
    "input value 200 deep": lambda w: _with(api_t2i(), "6", text=json.loads(deep_json(200))),
    "cycle": lambda w: _with(api_t2i(), "8", samples=["9", 0]) and _with(api_t2i(), "3", latent_image=["3", 0]),
    "unknown node": lambda w: {**api_t2i(), "20": {"class_type": "os.system", "inputs": {}}},
    "link to a missing node": lambda w: _with(api_t2i(), "3", model=["999", 0]),
    "link slot out of range": lambda w: _with(api_t2i(), "3", model=["4", 2**40]),
    "link slot negative": lambda w: _with(api_t2i(), "3", model=["4", -1]),
    "inputs not an object": lambda w: {**api_t2i(), "9": {"class_type": "SaveImage", "inputs": [1, 2]}},
    "EmptyLatentImage huge": lambda w: _with(api_t2i(), "5", width=16384, height=16384, batch_size=4096),
    "ImageScale huge": lambda w: {**api_t2i(), "11": {"class_type": "ImageScale", "inputs": {
        "image": ["8", 0], "upscale_method": "nearest-exact", "width": 16384, "height": 16384, "crop": "disabled"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "big"}}},
    "seed beyond 64 bits": lambda w: _with(api_t2i(), "3", seed=2**64),
    "steps NaN-like": lambda w: _with(api_t2i(), "3", steps=1e308),
    "not a workflow": lambda w: "[1, 2, 3]",
    "not JSON": lambda w: "{class_type: KSampler}",
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_hostile_workflows(world, case):
    refused(_run(world, RUN_CASES[case](world)))
    assert not list((world.work / "out").rglob("*")), "nothing is written"
    assert not list(world.root.glob("escape*")) and not list(world.private.glob("x*"))


UI_CASES = {
    "inputs is an object": lambda ui: ui["nodes"][0].__setitem__("inputs", {"a": 1}),
    "outputs is a string": lambda ui: ui["nodes"][0].__setitem__("outputs", "MODEL"),
    "input is not an object": lambda ui: ui["nodes"][1].__setitem__("inputs", [1]),
    "node id is a list": lambda ui: ui["nodes"][0].__setitem__("id", [4]),
    "node type missing": lambda ui: ui["nodes"][0].pop("type"),
    "widgets_values is a number": lambda ui: ui["nodes"][2].__setitem__("widgets_values", 5),
    "mode is a string": lambda ui: ui["nodes"][2].__setitem__("mode", "2"),
    "link ids unhashable": lambda ui: ui["links"].append([[1], [2], 0, 3, 0, "X"]),
    "link slot is a string": lambda ui: ui["links"].__setitem__(0, [ui["links"][0][0], ui["links"][0][1], "0",
                                                                     *ui["links"][0][3:]]),
    "links is an object": lambda ui: ui.__setitem__("links", {"1": 2}),
    "nodes hold a string": lambda ui: ui["nodes"].append("node"),
    "input link is a list": lambda ui: ui["nodes"][1]["inputs"][0].__setitem__("link", [20]),
}


@pytest.mark.parametrize("case", list(UI_CASES))
def test_run_malformed_ui_format(world, case):
    ui = ui_t2i()
    UI_CASES[case](ui)
    refused(_run(world, ui))
    assert not list((world.work / "out").rglob("*"))


def test_run_reroute_loop_is_an_error(world):
    ui = ui_t2i()
    reroute = next(n for n in ui["nodes"] if n["type"] == "Reroute")
    ui["nodes"].append({"id": 21, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 91}],
                        "outputs": [{"name": "MODEL", "type": "MODEL", "links": [90]}]})
    reroute["inputs"][0]["link"] = 90
    ui["links"] += [[90, 21, 0, 20, 0, "*"], [91, 20, 0, 21, 0, "*"]]
    refused(_run(world, ui), "loops")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "bomb", "sparse-300MB", "latin-1", "folder"])
def test_run_workflow_files_that_are_not_workflows(world, kind):
    path = {"fifo": lambda: fifo(world.work / "wf.json"), "dev-zero": lambda: Path("/dev/zero"),
            "bomb": lambda: bomb_png(world.work / "wf.png", text={"prompt": json.dumps(api_t2i())}),
            "sparse-300MB": lambda: _sparse(world.work / "wf.json", 300 << 20),
            "latin-1": lambda: _bytes(world.work / "wf.json", '{"x": "\xe9"}'.encode("latin-1")),
            "folder": lambda: world.work / "loras"}[kind]()
    refused(cli(["run", path, "--output-dir", world.work / "out", "-q"]))


def _sparse(p: Path, size: int) -> Path:
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def _bytes(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("kind", ["bomb", "fifo", "truncated"])
def test_run_load_image_of_hostile_files(world, kind):
    {"bomb": lambda: bomb_png(world.work / "input" / "x.png"), "fifo": lambda: fifo(world.work / "input" / "x.png"),
     "truncated": lambda: _truncated(write_png(world.work / "input" / "x.png"))}[kind]()
    refused(_run(world, _load_image_wf("x.png")))


def test_run_checkpoint_that_is_a_fifo_or_damaged(world):
    fifo(world.work / "models" / "checkpoints" / "f.safetensors")
    refused(_run(world, api_t2i("f.safetensors")))
    bad = world.work / "models" / "checkpoints" / "bad.safetensors"
    bad.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    refused(_run(world, api_t2i("bad.safetensors")))


@pytest.mark.parametrize("value", ["2**64", deep_json(3000), '{"a": ' * 5000 + "1" + "}" * 5000])
def test_run_set_values(world, value):
    (world.work / "wf.json").write_text(json.dumps(api_t2i()))
    refused(cli(["run", world.work / "wf.json", "--output-dir", world.work / "out", "--set",
                 f"3.seed={value}", "-q"]))


def test_run_output_dir_that_is_a_file(world):
    (world.work / "wf.json").write_text(json.dumps(api_t2i()))
    refused(cli(["run", world.work / "wf.json", "--output-dir", world.work / "mask.png", "-q"]), "not a folder")


def test_run_never_writes_through_a_planted_link_and_never_replaces(world):
    """Item 9: an output name is claimed exclusively: a symbolic link (or any file) holding the next name is
    skipped, never written through or replaced."""
    out = world.work / "out"
    os.symlink(world.private / "notes.txt", out / "t2i_00001_.png")
    (out / "t2i_00002_.png").write_bytes(b"user file")
    code, stdout, err = _run(world, api_t2i(prefix="t2i"))
    assert code == 0, err
    assert stdout.strip().endswith("t2i_00003_.png")
    assert (out / "t2i_00002_.png").read_bytes() == b"user file"


def test_two_writers_of_one_prefix_take_different_names(tmp_path):
    from twosamplers.nodes.folders import claim_name

    names = {claim_name(tmp_path, "x", "png") for _ in range(5)}
    assert len(names) == 5 and all(p.stat().st_size == 0 for p in names)


def test_run_chains_of_thousands_of_nodes(world):
    """Item 11: 3000 Reroutes in the UI format, and 3000 chained nodes in the API format, run (no recursion)."""
    ui = ui_t2i()
    reroute = next(n for n in ui["nodes"] if n["type"] == "Reroute")
    first = reroute["inputs"][0]["link"]
    for i in range(3000):
        nid, link = 1000 + i, 5000 + i
        ui["nodes"].append({"id": nid, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*",
                                                                                 "link": first}],
                            "outputs": [{"name": "MODEL", "type": "MODEL", "links": [link]}]})
        ui["links"] = [lk if lk[0] != first else [first, lk[1], lk[2], nid, 0, lk[5]] for lk in ui["links"]]
        ui["links"].append([link, nid, 0, reroute["id"], 0, "MODEL"])
        reroute["inputs"][0]["link"] = link
        first = link
    code, _, err = _run(world, ui)
    assert code == 0, err
    wf = api_t2i()
    wf["100"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}
    prev = "100"
    for i in range(3000):
        wf[str(200 + i)] = {"class_type": "InvertMask", "inputs": {"mask": [prev, 0]}}
        prev = str(200 + i)
    wf["99"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": [prev, 0]}}
    wf["3"]["inputs"]["latent_image"] = ["99", 0]
    code, _, err = _run(world, wf, name="chain.json")
    assert code == 0, err


def test_run_lists_each_model_folder_once(world, monkeypatch):
    """Item 13: 2000 loader nodes over 2000 model files: the folder is listed once per run, not once per node."""
    from twosamplers.nodes.folders import Folders
    from twosamplers.workflow.graph import plan

    ckpts = world.work / "models" / "checkpoints"
    for i in range(2000):
        (ckpts / f"m{i}.safetensors").write_bytes(b"")
    calls = []
    real = Path.rglob

    def counting(self, pattern):
        calls.append(self)
        return real(self, pattern)

    monkeypatch.setattr(Path, "rglob", counting)
    prompt = {str(i): {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "textures"}}
              for i in range(2000)}
    prompt.update({k: v for k, v in api_t2i().items() if k != "4"})
    prompt["6"]["inputs"]["clip"] = ["1999", 1]
    folders = Folders.create(world.work / "models")
    plan(prompt, folders)
    assert len([c for c in calls if c == ckpts]) == 1


def _pickle_ckpt(path: Path) -> Path:
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, str(path))
    return path


def test_run_pickle_checkpoint_needs_allow_pickle(world):
    _pickle_ckpt(world.work / "models" / "checkpoints" / "old.ckpt")
    refused(_run(world, api_t2i("old.ckpt")), "pickle")


def test_run_allow_pickle_never_runs_a_pickle_payload(world):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {world.root / 'pwned'}",))

    torch.save({"state_dict": Payload()}, str(world.work / "models" / "checkpoints" / "evil.ckpt"))
    refused(_run(world, api_t2i("evil.ckpt"), "--allow-pickle"))
    assert not (world.root / "pwned").exists()


# ============================================================================================== batch
def _batch(world, lines, *extra, name="jobs.jsonl"):
    path = world.work / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return cli(["batch", path, "-o", world.work / "out", "-q", "--workers", 1, *extra])


def _line(**over):
    d = {"base_prompt": "grass", "mask_prompt": "brick", "mask": "mask.png", "steps": 1, "width": 16, "height": 16}
    d.update(over)
    return d


BATCH_CASES = {
    "mask absolute outside": lambda w: _line(mask=str(w.secret)),
    "mask relative escape": lambda w: _line(mask="../private/secret.png"),
    "mask /dev/zero": lambda w: _line(mask="/dev/zero"),
    "mask FIFO inside": lambda w: _line(mask=str(fifo(w.work / "f.png"))),
    "image /dev/zero": lambda w: _line(image="/dev/zero"),
    "image outside": lambda w: _line(image=str(w.secret)),
    "hint /dev/zero": lambda w: _line(mask_controlnets=["cn.safetensors:/dev/zero"]),
    "hint FIFO inside": lambda w: _line(mask_controlnets=[f"cn.safetensors:{fifo(w.work / 'h.png')}"]),
    "hint outside": lambda w: _line(controlnets=[{"file": "cn.safetensors", "image": str(w.secret)}]),
    "model hub": lambda w: _line(model="someone/model"),
    "model outside": lambda w: _line(model=str(w.private / "secret.safetensors")),
    "lora entry escapes": lambda w: _line(base_loras=["../private/secret:1"], lora_dir="loras"),
    "lora entry absolute": lambda w: _line(base_loras=[f"{w.private}/secret.safetensors"], lora_dir="loras"),
    "lora folder outside": lambda w: _line(base_loras=["secret"], lora_dir=str(w.private)),
    "embeddings outside": lambda w: _line(embeddings=str(w.private)),
    "prompt tag escapes": lambda w: _line(mask_prompt="brick <lora:../private/secret>", lora_dir="loras"),
    "from outside": lambda w: _line(**{"from": str(w.root / "elsewhere.png")}),
    "range 2**63": lambda w: _line(seed={"range": [0, 2**63]}),
    "range 1e9": lambda w: _line(seed={"range": [0, 10**9]}),
    "range of floats": lambda w: _line(seed={"range": [0, 1e3]}),
    "line 100k deep": lambda w: deep_json(100000),
    "line 100 deep": lambda w: json.dumps(_line(base_prompt=json.loads(deep_json(100)))),
    "width 1e9": lambda w: _line(width=10**9),
    "line allows pickle": lambda w: _line(allow_pickle=True),
    "null line": lambda w: "null",
    "workflow models outside": lambda w: {"workflow": "wf.json", "models": str(w.private)},
    "workflow input_dir outside": lambda w: {"workflow": "wf.json", "input_dir": str(w.private)},
    "workflow comfyui outside": lambda w: {"workflow": "wf.json", "comfyui": "/"},
    "workflow outside": lambda w: {"workflow": str(w.private / "notes.txt")},
    "workflow set 100 deep": lambda w: {"workflow": "wf.json", "set": {"6.text": json.loads(deep_json(100))}},
    "workflow allows pickle": lambda w: {"workflow": "wf.json", "allow_pickle": True},
    "workflow FIFO": lambda w: {"workflow": str(fifo(w.work / "wf-fifo.json"))},
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_batch_hostile_lines(world, case):
    (world.work / "wf.json").write_text(json.dumps(api_t2i()))
    refused(_batch(world, [BATCH_CASES[case](world)]), "line 1")
    assert not [p for p in (world.work / "out").iterdir()], "nothing is written"


def test_batch_output_that_is_a_file(world):
    (world.work / "jobs.jsonl").write_text(json.dumps(_line()) + "\n")
    refused(cli(["batch", world.work / "jobs.jsonl", "-o", world.work / "mask.png", "-q"]), "not a folder")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "latin-1", "folder"])
def test_batch_jobs_files_that_are_not_jobs_files(world, kind):
    path = {"fifo": lambda: fifo(world.work / "jobs.jsonl"), "dev-zero": lambda: Path("/dev/zero"),
            "latin-1": lambda: _bytes(world.work / "jobs.jsonl", b'{"base_prompt": "\xe9"}\n'),
            "folder": lambda: world.work / "loras"}[kind]()
    refused(cli(["batch", path, "-o", world.work / "out", "-q"]))


def test_batch_deletes_only_its_own_temporaries(world):
    """Item 6: `.*.*.tmp` files of the user survive; a killed batch's own temporaries are removed."""
    out = world.work / "out"
    mine = [out / ".notes.txt.tmp", out / ".a.b.tmp", out / ".0123456789abcdef0123.png.txt.tmp"]
    for p in mine:
        p.write_text("user")
    os.symlink(world.private / "notes.txt", out / ".0123456789abcdef0123.png.abcdefgh.tmp")
    stale = out / ".fedcba9876543210fedc.png.k2j4_x9q.tmp"
    stale.write_bytes(b"half")
    code, _, err = _batch(world, [_line()])
    assert code == 0, err
    assert all(p.read_text() == "user" for p in mine) and not stale.exists()
    assert (out / ".0123456789abcdef0123.png.abcdefgh.tmp").is_symlink()  # not an ordinary file: not ours


@pytest.mark.parametrize("name", [".batch.lock", "manifest.jsonl", "failures.jsonl"])
def test_batch_never_writes_through_planted_links(world, name):
    """Item 8: the lock file and the journals are opened without following a symbolic link."""
    target = world.root / "created-by-batch"
    os.symlink(target, world.work / "out" / name)
    refused(_batch(world, [_line()]), "link")
    assert not target.exists()


def test_batch_redoes_a_job_whose_output_is_damaged(world):
    """Item 11: a truncated PNG, a decompression bomb or a damaged .latent under a job's output name is not a
    finished output: the rerun redoes the job instead of failing."""
    (world.work / "wf.json").write_text(json.dumps({**api_t2i(), "15": {"class_type": "SaveLatent", "inputs": {
        "samples": ["3", 0], "filename_prefix": "../../escapes/x"}}}))  # item 12: a batch ignores the prefix
    lines = [_line(), {"workflow": "wf.json"}]
    code, _, err = _batch(world, lines)
    assert code == 0, err
    out = world.work / "out"
    png = next(p for p in out.glob("*.png") if "-" not in p.name)
    latent = next(out.glob("*.latent"))
    _truncated(png)
    latent.write_bytes((2**63).to_bytes(8, "little") + b"[]")
    code, _, err = cli(["batch", world.work / "jobs.jsonl", "-o", out, "--json", "-q", "--workers", 1])
    assert code == 0, err
    assert read_settings(png)[0]["base_prompt"] == "grass"
    bomb_png(png)
    code, stdout, err = cli(["batch", world.work / "jobs.jsonl", "-o", out, "--json", "-q", "--workers", 1])
    assert code == 0, err
    assert json.loads(stdout)["rendered"] == 1
    assert not (world.root / "escapes").exists()


def test_batch_allow_pickle_is_the_users_flag(world):
    """Item 5 in batches: a line cannot allow pickle files; `batch --allow-pickle` can."""
    refused(_batch(world, [_line(allow_pickle=True)]), "--allow-pickle")
    code, _, err = _batch(world, [_line(allow_pickle=True)], "--allow-pickle")
    assert code == 0, err


def test_own_and_documented_batch_uses_still_work(world):
    """The flags' folders are the user's: a workflow line may use --models / --input-dir folders outside the jobs
    file's folder; a `from` PNG this user rendered keeps its files."""
    elsewhere = world.root / "shared-models"
    (elsewhere / "checkpoints").mkdir(parents=True)
    (world.work / "wf.json").write_text(json.dumps(_load_image_wf("photo.png")))
    first = world.work / "first.png"
    assert cli(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", world.work / "mask.png",
                "--image", world.work / "input" / "photo.png", "--denoise", 0.5, "--steps", 1, "-o", first,
                "-q"])[0] == 0
    code, _, err = _batch(world, [{"workflow": "wf.json"}, {"from": "first.png", "seed": 3}], "--models", elsewhere,
                          "--input-dir", world.work / "input")
    assert code == 0, err


# ============================================================================================== pickle (item 5)
def _pickle_folder(src: Path, dst: Path) -> Path:
    """A copy of a diffusers folder whose weights are pickle files (.bin), as older downloads have them."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    for f in list(dst.rglob("*.safetensors")):
        name = "pytorch_model.bin" if f.name == "model.safetensors" else f.name.replace(".safetensors", ".bin")
        torch.save(load_file(str(f)), str(f.with_name(name)))
        f.unlink()
    return dst


def test_diffusers_folder_with_pickle_weights_needs_allow_pickle(world, tiny_sd_files):
    folder = _pickle_folder(tiny_sd_files["sd1_folder"], world.work / "models" / "checkpoints" / "old")
    args = ["generate", "--model", folder, "--base-prompt", "a", "--mask-prompt", "b", "--mask",
            world.work / "mask.png", "--width", 64, "--height", 64, "--steps", 1, "--device", "cpu", "-q"]
    refused(cli([*args, "-o", world.work / "out" / "o.png"]), "pickle", "--allow-pickle")
    assert not (world.work / "out" / "o.png").exists()
    code, _, err = cli([*args, "--allow-pickle", "-o", world.work / "out" / "o.png"])
    assert code == 0, err
    from twosamplers.models.sd import load_sd

    with pytest.raises(ValueError, match="pickle"):
        load_sd(folder, device="cpu", cache=False)


def test_run_allow_pickle_runs_a_trusted_ckpt_workflow(world, tiny_sd_files):
    """`run` had no --allow-pickle, so real .ckpt workflows could not run at all; now they run when the user opts
    in (read weights-only), and are refused otherwise."""
    from safetensors.torch import load_file

    ckpt = world.work / "models" / "checkpoints" / "sd1.ckpt"
    torch.save({"state_dict": load_file(str(tiny_sd_files["sd1_file"]))}, str(ckpt))
    wf = _with(api_t2i("sd1.ckpt"), "5", width=64, height=64)
    wf["3"]["inputs"]["steps"] = 1
    refused(_run(world, wf), "pickle")
    code, _, err = _run(world, wf, "--allow-pickle", "--device", "cpu")
    assert code == 0, err
    assert len(list((world.work / "out").glob("t2i_*.png"))) == 1


def test_run_memory_estimate_while_planning(world, monkeypatch):
    """Item 11: `run` estimates memory while planning, as `generate` does: over what the machine has, one line
    with the figure and nothing run; --ignore-memory-limit runs it anyway."""
    from twosamplers.job import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 1 << 20)  # a 1 MB machine
    line = refused(_run(world, api_t2i()), "memory", "GB", "--ignore-memory-limit")
    assert "node 5 (EmptyLatentImage)" in line and "32x32" in line
    code, _, err = _run(world, api_t2i(), "--ignore-memory-limit")
    assert code == 0, err


def test_prefixes_are_checked_while_planning_before_any_node_runs(world):
    """Item 12: a bad SaveImage / SaveLatent prefix is a planning error (graph.plan), so no sampling is wasted."""
    from twosamplers.nodes.folders import Folders
    from twosamplers.workflow import WorkflowError
    from twosamplers.workflow.graph import plan

    for prefix in ("../x", "/abs/x", "a\0b", "x" * 300, "sub/.."):
        with pytest.raises(WorkflowError, match="filename_prefix"):
            plan(api_t2i(prefix=prefix), Folders.create(world.work / "models"))
    wf = {**api_t2i(), "15": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "../x"}}}
    with pytest.raises(WorkflowError, match="filename_prefix"):
        plan(wf, Folders.create(world.work / "models"))
    plan(api_t2i(prefix="sub/%year%-%width%/x"), Folders.create(world.work / "models"))  # placeholders are fine


def test_cli_last_resort_handler(world, monkeypatch):
    """Item 11: any unexpected exception is one line with the hint, exit 2; TWOSAMPLERS_DEBUG=1 shows it."""
    from twosamplers import cli as cli_module

    def boom(args):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(cli_module, "cmd_demo", boom)
    monkeypatch.setattr(cli_module, "_add_demo", lambda sub: sub.add_parser("demo").set_defaults(func=boom))
    line = refused(cli(["demo"]), "RuntimeError", "TWOSAMPLERS_DEBUG=1")
    assert "second line" in line  # joined into the one line
    monkeypatch.setenv("TWOSAMPLERS_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli_module.main(["demo"])
