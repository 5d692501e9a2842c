"""The hostile-input rules of issue 21 over issue 24's regions: a job has a base pass and N regions, and every rule
holds for each of them (docs/security.md). Someone else's PNG with three regions does not choose any region's mask
file (masks embedded in the PNG are fine) nor ControlNets, nor downloads a region's model; a batch line's regions
name files only inside its folders; a region's LoRA names stay inside the LoRA folder; the origin tag covers every
region's mask chunk. Uses the `world` fixture (conftest.py) and the catalogue's helpers (security_cases.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from security_cases import cli, disc, mask_png, refused, someone_elses_png

from twosamplers.job import Job, JobError
from twosamplers.job.imageio import encode_mask_png, read_settings, region_mask_key
from twosamplers.job.trust import given

N = 3


def three_regions(world, region_over: dict | None = None) -> dict:
    """A valid 3-region job (textures, 16x16, one step) as a PNG records it: region k's mask file is work/rk.png;
    `region_over` = {index: fields} written over region `index` raw."""
    regions = []
    for i in range(N):
        mask_png(world.work / f"r{i}.png")
        regions.append({"mask": str(world.work / f"r{i}.png"), "prompt": ["brick", "sand", "gravel"][i]})
    d = Job.from_dict({"base_prompt": "grass", "regions": regions, "width": 16, "height": 16, "steps": 1},
                      mask_tensors=[disc(16)] * N).to_dict()
    for i, over in (region_over or {}).items():
        d["regions"][i].update(over)
    return d


def png_of(world, settings: dict, embedded: int = 0, name: str = "theirs.png"):
    """Someone else's PNG with the first `embedded` region masks embedded."""
    extra = {region_mask_key(i): encode_mask_png(disc(16)) for i in range(1, embedded)}
    return someone_elses_png(world.work / name, settings, mask=embedded > 0, extra=extra)


def generate_from(world, png, *extra):
    return cli(["generate", "--from", png, "-o", world.work / "out" / "o.png", "-q", *extra])


# ============================================================================================== --from
def test_someone_elses_png_with_three_regions_chooses_no_mask_file(world):
    """No region's mask is embedded: the first region's mask file is refused by its field, nothing is written."""
    settings = three_regions(world)
    settings["regions"][1]["mask"] = str(world.secret)  # a private file among them
    refused(generate_from(world, png_of(world, settings)), "regions[0].mask", "not rendered by this user")
    assert not list((world.work / "out").iterdir())


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_each_regions_mask_file_must_be_given_again(world, missing):
    """Every region but one given again with --region-mask N: the one left is refused, named by its field."""
    given_again = []
    for i in range(N):
        if i != missing:
            given_again += ["--region-mask", i + 1, world.work / "mask.png"]
    line = refused(generate_from(world, png_of(world, three_regions(world)), *given_again), "not rendered")
    assert f"regions[{missing}].mask" in line or f"--region-mask {missing + 1}" in line, line


def test_someone_elses_png_renders_with_every_region_mask_given_again(world):
    given_again = [a for i in range(N) for a in ("--region-mask", i + 1, world.work / "mask.png")]
    code, _, err = generate_from(world, png_of(world, three_regions(world)), *given_again)
    assert code == 0, err
    stored = read_settings(world.work / "out" / "o.png")[0]
    assert [r["mask"] for r in stored["regions"]] == [str(world.work / "mask.png")] * N


def test_embedded_region_masks_need_no_file(world):
    """Every region's mask embedded (what generate and the page write): the PNG's mask paths are only labels,
    never read, so even a private path there is fine and the picture renders."""
    settings = three_regions(world)
    for r in settings["regions"]:
        r["mask"] = str(world.secret)
    code, _, err = generate_from(world, png_of(world, settings, embedded=N))
    assert code == 0, err


def test_a_region_without_its_embedded_mask_is_refused(world):
    """Masks 1 and 2 embedded, region 3's not: region 3's mask file is someone else's choice."""
    line = refused(generate_from(world, png_of(world, three_regions(world), embedded=2)), "not rendered")
    assert "regions[2].mask" in line or "--region-mask 3" in line, line


def test_a_regions_controlnets_must_be_given_again(world):
    cn = {"file": str(world.private / "cn.safetensors"), "image": str(world.secret)}
    settings = three_regions(world, {1: {"controlnets": [cn]}})
    line = refused(generate_from(world, png_of(world, settings, embedded=N)), "ControlNet")
    assert "regions[1].controlnets" in line or "--region-controlnet 2" in line, line


def test_a_regions_model_is_never_downloaded(world):
    settings = three_regions(world, {2: {"model": "someone/model"}})
    line = refused(generate_from(world, png_of(world, settings, embedded=N)), "never downloaded")
    assert "regions[2].model" in line or "--region-model 3" in line, line


def test_a_regions_lora_entry_is_a_name_in_the_users_lora_folder(world):
    """A region's LoRA recorded with someone else's absolute path: looked up by its name in --lora-dir only."""
    settings = three_regions(world, {1: {"loras": [{"file": str(world.private / "secret.safetensors"),
                                                        "strength_model": 1.0, "strength_clip": 1.0}]}})
    line = refused(generate_from(world, png_of(world, settings, embedded=N), "--lora-dir", world.work / "loras"),
                   "regions[1].loras", "LoRA")
    assert "inside" in line or "not found" in line, line


def test_region_trust_at_the_job_layer(world):
    """Job.from_png with untrusted=True: a region's LoRA entry resolves inside the user's lora_dir (and the hash
    counts that file), the PNG's own LoRA folder is dropped, and Job.trusted stays out of the job's dict."""
    from twosamplers.job.loras import check_lora_names

    (world.work / "loras" / "style.safetensors").write_bytes((world.private / "secret.safetensors").read_bytes())
    entry = {"file": "/elsewhere/style.safetensors", "strength_model": 0.5, "strength_clip": 0.5}
    settings = {**three_regions(world, {2: {"loras": [entry]}}), "lora_dir": str(world.private)}
    png = png_of(world, settings, embedded=N)
    lora_dir = str(world.work / "loras")
    job = Job.from_png(png, {"lora_dir": lora_dir}, untrusted=True, trusted=given({"lora_dir": lora_dir}))
    check_lora_names(job)
    assert job.input_files()["regions[2].loras[0]"] == str(world.work / "loras" / "style.safetensors")
    assert "trusted" not in job.to_dict() and job.to_dict()["lora_dir"] == lora_dir
    with pytest.raises(JobError, match=r"regions\[0\]\.mask"):
        Job.from_png(png_of(world, three_regions(world), name="bare.png"), untrusted=True)


def test_given_reads_every_form_of_a_job_dict():
    """The user's own paths: flat keys, the shorthand, a `regions` list and per-region patches."""
    d = {"model": "m.safetensors", "mask": "a.png", "loras": ["x.safetensors:0.5"],
         "regions": [{"mask": "b.png", "model": "r.safetensors", "controlnets": ["c.safetensors:h.png"]}]}
    out = given(d, {2: {"mask": "q.png", "loras": [{"file": "y.safetensors"}]}})
    for p in ("m.safetensors", "a.png", "x.safetensors", "b.png", "r.safetensors", "c.safetensors", "h.png",
              "q.png", "y.safetensors"):
        assert p in out
    assert "r.safetensors" not in given(d, models=False)


# ============================================================================================== origin tag
def _own_three_region_png(world):
    out = world.work / "out" / "mine.png"
    code, _, err = cli(["generate", "--base-prompt", "grass", "--region", world.work / "mask.png", "brick",
                        "--region", world.work / "mask.png", "sand", "--region", world.work / "mask.png", "gravel",
                        "--steps", 1, "--width", 16, "--height", 16, "-o", out, "-q"])
    assert code == 0, err
    return out


def _rewrite(src, dst, change):
    with Image.open(src) as im:
        chunks, pixels = dict(im.text), np.asarray(im.convert("RGB"))
    change(chunks)
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    Image.fromarray(pixels).save(dst, pnginfo=info)
    return dst


def test_own_three_region_png_renders_again_and_the_tag_covers_every_chunk(world):
    mine = _own_three_region_png(world)
    assert read_settings(mine, with_origin=True)[2] is True
    code, _, err = cli(["generate", "--from", mine, "-o", world.work / "out" / "again.png", "-q"])
    assert code == 0, err
    with Image.open(mine) as a, Image.open(world.work / "out" / "again.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # the same chunks again: still ours; any region's mask swapped, or a chunk added: someone else's
    same = _rewrite(mine, world.work / "same.png", lambda c: None)
    assert read_settings(same, with_origin=True)[2] is True
    swapped = _rewrite(mine, world.work / "swapped.png",
                       lambda c: c.update({region_mask_key(2): encode_mask_png(1 - disc(16))}))
    assert read_settings(swapped, with_origin=True)[2] is False
    added = _rewrite(mine, world.work / "added.png",
                     lambda c: c.update({"twosamplers-regions": json.dumps([{"mask_png": "00", "prompt": "x"}])}))
    assert read_settings(added, with_origin=True)[2] is False


def test_own_png_whose_region_mask_path_was_changed_is_someone_elses(world):
    """Settings edited after rendering (region 2's mask pointed at a private file): the tag fails, so the path
    is not read; the embedded masks still render."""
    mine = _own_three_region_png(world)

    def point_at_secret(chunks):
        s = json.loads(chunks["twosamplers"])
        s["regions"][1]["mask"] = str(world.secret)
        chunks["twosamplers"] = json.dumps(s, sort_keys=True)

    edited = _rewrite(mine, world.work / "edited.png", point_at_secret)
    assert read_settings(edited, with_origin=True)[2] is False
    code, _, err = cli(["generate", "--from", edited, "-o", world.work / "out" / "e.png", "-q"])
    assert code == 0, err  # every mask is embedded: no file is read


# ============================================================================================== batch
def _batch(world, lines):
    path = world.work / "jobs.jsonl"
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    return cli(["batch", path, "-o", world.work / "out", "-q", "--workers", 1])


def _regions_line(**region2):
    return {"base_prompt": "grass", "steps": 1, "width": 16, "height": 16, "lora_dir": "loras",
            "regions": [{"mask": "mask.png", "prompt": "brick"}, {"mask": "mask.png", "prompt": "sand", **region2},
                        {"mask": "mask.png", "prompt": "gravel"}]}


BATCH_REGION_CASES = {
    "mask absolute outside": (lambda w: _regions_line(mask=str(w.secret)), ("regions[1].mask", "outside")),
    "mask relative escape": (lambda w: _regions_line(mask="../private/secret.png"), ("regions[1].mask", "outside")),
    "mask /dev/zero": (lambda w: _regions_line(mask="/dev/zero"), ("regions[1].mask",)),
    "hint outside": (lambda w: _regions_line(controlnets=[{"file": "cn.safetensors", "image": str(w.secret)}]),
                     ("regions[1].controlnets[0].image", "outside")),
    "controlnet string outside": (lambda w: _regions_line(controlnets=[f"{w.private}/cn.safetensors:mask.png"]),
                                  ("regions[1].controlnets[0].file", "outside")),
    "model outside": (lambda w: _regions_line(model=str(w.private / "secret.safetensors")),
                      ("regions[1].model", "outside")),
    "model hub": (lambda w: _regions_line(model="someone/model"), ("regions[1].model",)),
    "lora entry escapes": (lambda w: _regions_line(loras=["../private/secret:1"]), ("regions[1].loras",)),
    "lora entry absolute": (lambda w: _regions_line(loras=[f"{w.private}/secret.safetensors"]),
                            ("regions[1].loras",)),
    "prompt tag escapes": (lambda w: _regions_line(prompt="sand <lora:../private/secret>"),
                           ("regions[1].prompt", "prompt tag")),
}


@pytest.mark.parametrize("case", list(BATCH_REGION_CASES))
def test_batch_line_regions_name_files_only_inside_its_folders(world, case):
    make, words = BATCH_REGION_CASES[case]
    refused(_batch(world, [make(world)]), "line 1", *words)
    assert not list((world.work / "out").iterdir()), "nothing is written"


def test_batch_line_with_regions_inside_its_folders_renders(world):
    code, _, err = _batch(world, [_regions_line()])
    assert code == 0, err
    assert len(list((world.work / "out").glob("*.png"))) == 1


# ============================================================================================== LoRA names
@pytest.mark.parametrize("tag", ["<lora:../private/secret>", "<lora:/etc/passwd>", "<lora:~/x>"])
def test_region_prompt_tags_never_leave_the_lora_folder_even_on_the_command_line(world, tag):
    line = refused(cli(["generate", "--base-prompt", "grass", "--region", world.work / "mask.png", "brick",
                        "--region", world.work / "mask.png", f"sand {tag}", "--lora-dir", world.work / "loras",
                        "--steps", 1, "--width", 16, "--height", 16, "-o", world.work / "out" / "o.png", "-q"]),
                   "prompt tag")
    assert "region" in line, line


def test_region_lora_names_in_a_workflow_stay_in_the_folder(world):
    """In a workflow a region's LoRA comes from a LoraLoader node on its model: a `lora_name` leaving loras/ (here
    with Windows separators, which ComfyUI's names may use) is refused before anything runs."""
    from workflow_cases import api_t2i

    wf = api_t2i()
    wf["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0],
                                                                "lora_name": "..\\..\\private\\secret.safetensors",
                                                                "strength_model": 1.0}}
    wf["3"]["inputs"]["model"] = ["10", 0]
    (world.work / "wf.json").write_text(json.dumps(wf))
    refused(cli(["run", world.work / "wf.json", "--models", world.work / "models", "--output-dir",
                 world.work / "out", "-q"]), "loras")

