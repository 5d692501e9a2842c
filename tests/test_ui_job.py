"""The page drives the Job (issue 24): a picture made in the page (canvas layers, an uploaded mask of another size,
per-region passes) is a `Job` with every region, and renders bit for bit again from its PNG with `twosamplers
generate --from`, from a batch line naming that PNG, and from a batch line holding the page's job dict (its masks
saved as files). PNGs the page wrote before regions were part of the job (their regions chunk) still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from twosamplers.cli import main as cli_main
from twosamplers.job import Job
from twosamplers.job.imageio import load_image, png_writer, read_png_job
from twosamplers.ui import handlers as H
from twosamplers.ui.render import page_job, render

SIZE = 32


def _layer(box: tuple[slice, slice], alpha: int = 255) -> np.ndarray:
    a = np.zeros((SIZE, SIZE, 4), np.uint8)
    a[..., 0] = 255
    a[box + (3,)] = alpha
    return a


def _upload() -> np.ndarray:
    """A 64x64 mask with a soft edge: resized to the 32x32 canvas, its values are not k/255 until the page
    makes them 8-bit (what the PNG embeds)."""
    m = np.zeros((64, 64), np.uint8)
    m[10:40, 6:50] = 255
    m[40, 6:50], m[41, 6:50], m[42, 6:50] = 170, 85, 30
    m[9, 6:50] = 77
    return m


def _canvas(n: int) -> list[torch.Tensor]:
    bg = np.full((SIZE, SIZE, 4), 120, np.uint8)
    layers = [_layer((slice(2, 12), slice(3, 29))), _layer((slice(10, 22), slice(3, 29)), 160),
              _layer((slice(20, 31), slice(5, 27)))][:n]
    return H.canvas_masks({"background": bg, "layers": layers}, _upload())


def _fields(**over) -> dict:
    f = H.default_fields()
    f.update({"width": SIZE, "height": SIZE, "base_steps": 3, "mask_steps": 3, "r2_steps": 2, "r3_steps": 3,
              "feather": 1.0, **over})
    return f


def cli(*args) -> int:
    return cli_main([str(a) for a in args])


def same_png_pixels(a, b) -> bool:
    with Image.open(a) as x, Image.open(b) as y:
        return np.array_equal(np.asarray(x), np.asarray(y))


def batch(tmp_path, line: dict, name: str) -> tuple[str, str]:
    """`twosamplers batch` over one line in tmp_path -> (the picture it wrote, the job's hash)."""
    jobs = tmp_path / f"{name}.jsonl"
    jobs.write_text(json.dumps(line) + "\n")
    out = tmp_path / f"{name}-out"
    assert cli("batch", jobs, "-o", out, "--workers", 1, "-q") == 0
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["status"] == "done", records
    return str(out / records[0]["output"]), records[0]["job"]


THREE = {"mode": "regional", "mask_seed": 4, "r2_seed": 5, "r2_model": "ideal", "r2_prompt": "water",
         "r3_cfg": 2.0, "r3_sampler": "heun", "r3_negative": "sand", "grow": 1}
TWO_PASS = {"mode": "two-pass", "crop_to_mask": True, "mask_seed": 9, "mask_denoise": 0.9, "grow": -1}


@pytest.mark.parametrize(("n", "over"), [(3, THREE), (1, TWO_PASS)], ids=["three-regions", "two-pass"])
def test_a_page_picture_renders_the_same_bits_from_generate_from(tmp_path, n, over):
    masks = _canvas(n)
    settings = H.fields_to_settings(_fields(**over), n)
    job = page_job(settings, masks)
    assert len(job.regions) == n and all(r.mask_tensor is not None for r in job.regions)
    page = render(settings, masks, output=tmp_path / "page.png", preview=tmp_path / "strip.png")
    # the PNG's job is the page's job: every region, its pass and its (8-bit) mask
    stored, embedded, _ = read_png_job(page["image"])
    assert {k: v for k, v in stored.items() if k != "twosamplers_version"} == job.to_dict()
    assert len(embedded) == n and all(torch.equal(a, b) for a, b in zip(embedded, masks, strict=True))
    assert Job.from_png(page["image"]).hash() == job.hash()
    assert job.input_files() == {}  # the masks are the page's tensors: no file is read
    assert cli("generate", "--from", page["image"], "-o", tmp_path / "cli.png", "-q") == 0
    assert same_png_pixels(page["image"], tmp_path / "cli.png")
    assert torch.equal(load_image(tmp_path / "cli.png"), load_image(page["image"]))
    # "Load settings from PNG" -> the same fields -> Generate: the same picture again
    loaded, loaded_masks = H.load_png_settings(page["image"])
    fields = H.settings_to_fields(loaded, H.default_fields())
    again = render(H.fields_to_settings(fields, n), loaded_masks, output=tmp_path / "again.png")
    assert same_png_pixels(page["image"], again["image"])


@pytest.mark.slow
@pytest.mark.parametrize(("n", "over"), [(3, THREE), (1, TWO_PASS)], ids=["three-regions", "two-pass"])
def test_a_page_picture_renders_the_same_bits_from_a_batch_line(tmp_path, n, over):
    masks = _canvas(n)
    settings = H.fields_to_settings(_fields(**over), n)
    page = render(settings, masks, output=tmp_path / "page.png")
    # a line naming the page's PNG (its masks embedded, this user's origin tag): the same job, the same bits
    output, digest = batch(tmp_path, {"from": "page.png"}, "from")
    assert digest == page_job(settings, masks).hash() and same_png_pixels(page["image"], output)
    # the page's job dict itself as a line, its masks saved as mask files next to the jobs file
    line = json.loads(json.dumps(settings))
    regions = line.pop("regions", None) or [None]
    for i, m in enumerate(masks):
        Image.fromarray(H.mask_image(m)[..., 0]).save(tmp_path / f"region{i + 1}.png")
    if n == 1:
        line["mask"] = "region1.png"
    else:
        line["regions"] = [dict(r, mask=f"region{i + 1}.png") for i, r in enumerate(regions)]
    assert same_png_pixels(page["image"], batch(tmp_path, line, "dict")[0])


def test_joint_regions_from_the_page_render_again_from_the_png(tmp_path):
    masks = _canvas(2)
    settings = H.fields_to_settings(_fields(mode="regional", regional_algorithm="joint", r2_prompt="water"), 2)
    assert settings["mode"] == "joint"
    page = render(settings, masks, output=tmp_path / "page.png")
    assert page["note"] is None
    assert cli("generate", "--from", page["image"], "-o", tmp_path / "cli.png", "-q") == 0
    assert same_png_pixels(page["image"], tmp_path / "cli.png")


def test_an_older_page_png_with_its_regions_chunk_still_loads(tmp_path):
    """Before regions were part of the job, the page wrote regions 2.. in a "twosamplers-regions" chunk (each with
    its pass and its mask as an embedded PNG): the job layer reads it as the job's regions, so the page loads
    every region and renders what `generate --from` renders."""
    from twosamplers.job.imageio import encode_mask_png

    masks = _canvas(2)
    one = H.fields_to_settings(_fields(mode="regional"), 1)
    region2 = {"prompt": "water", "model": H.SAME_MODEL, "seed": 5, "steps": 2, "cfg": 1.0, "sampler": "euler",
               "scheduler": "normal", "denoise": 1.0, "negative": "", "loras": [], "controlnets": [],
               "mask_png": encode_mask_png(masks[1])}
    write = png_writer(np.full((SIZE, SIZE, 3), 99, np.uint8), settings=one, mask=masks[0],
                       text={"twosamplers-regions": json.dumps([region2])})
    write(str(tmp_path / "old.png"))
    settings, loaded = H.load_png_settings(tmp_path / "old.png")
    assert len(loaded) == 2 and torch.equal(loaded[1], masks[1])
    assert [r["prompt"] for r in settings["regions"]] == ["brick", "water"] and "model" not in settings["regions"][1]
    fields = H.settings_to_fields(settings, H.default_fields())
    assert (fields["r2_prompt"], fields["r2_seed"], fields["r2_model"]) == ("water", 5, H.SAME_MODEL)
    page = render(H.fields_to_settings(fields, 2), loaded, output=tmp_path / "page.png")
    assert cli("generate", "--from", tmp_path / "old.png", "-o", tmp_path / "cli.png", "-q") == 0
    assert same_png_pixels(page["image"], tmp_path / "cli.png")


def test_a_png_with_more_regions_than_panels_is_refused_clearly(tmp_path):
    paths = []
    for i in range(4):
        m = np.zeros((SIZE, SIZE), np.uint8)
        m[i * 8:i * 8 + 8] = 255
        Image.fromarray(m).save(tmp_path / f"m{i}.png")
        paths += ["--region", tmp_path / f"m{i}.png", ("brick", "water", "sand", "grass")[i]]
    assert cli("generate", "--base-prompt", "grass", *paths, "--width", SIZE, "--height", SIZE, "--steps", 1,
               "-o", tmp_path / "four.png", "-q") == 0
    with pytest.raises(H.UIError, match="4 regions; the page has panels for 3"):
        H.load_png_settings(tmp_path / "four.png")


def test_errors_name_the_pages_fields(tmp_path):
    masks = _canvas(3)
    with pytest.raises(H.UIError, match=r"^region 3 cfg: "):
        H.fields_to_settings(_fields(mode="regional", r3_cfg=-1), 3)
    with pytest.raises(H.UIError, match=r"^region 2 model: .nope. is neither a built-in model"):
        render(H.fields_to_settings(_fields(mode="regional", r2_model="nope"), 3), masks,
               output=tmp_path / "x.png")
    with pytest.raises(H.UIError, match="2 masks for 3 regions"):
        render(H.fields_to_settings(_fields(mode="regional"), 3), masks[:2], output=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_region_names_only_the_pages_files(tmp_path):
    """Region 2's model, ControlNet hint and LoRA as a hostile client would send them: the model and the hint are
    refused by the page's rule (its own files only), the LoRA by the job layer's (a name inside the models
    folder's loras/, never a path); nothing is written."""
    models, page_dir, private = tmp_path / "models", tmp_path / "page", tmp_path / "private"
    for d in (models / "checkpoints", models / "loras", models / "controlnet", page_dir / "inputs", private):
        d.mkdir(parents=True)
    (models / "controlnet" / "cn.safetensors").write_bytes(b"x")
    (private / "secret.safetensors").write_bytes(b"secret")
    secret = str(private / "secret.safetensors")
    masks = _canvas(2)

    def settings(**over):
        s = H.fields_to_settings(_fields(mode="regional", **over), 2, models)
        return H.confine_settings(s, models, page_dir)

    with pytest.raises(H.UIError, match="^region 2 model .* is not one of the checkpoints"):
        settings(r2_model=secret)
    with pytest.raises(H.UIError, match="^region 2 ControlNets hint image .* is not one of the page's own uploads"):
        settings(r2_controlnets=f"cn.safetensors:{secret}:1:0:1")
    for line in (f"{secret}:1", "../private/secret:1", "../../private/secret.safetensors:1"):
        confined = settings(r2_loras=line)
        assert confined["lora_dir"] == str((models / "loras").resolve())
        with pytest.raises(H.UIError, match=r"^region 2 loras(\[0\])?: .*(not found in|must be a name inside)"):
            render(confined, masks, output=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_the_page_lists_the_models_the_workflow_runner_loads(tmp_path):
    """One listing rule (models/listing.py) for the page's pickers and the workflow runner's folders: `.sft`
    files (ComfyUI's short safetensors name) and diffusers folders included."""
    from twosamplers.nodes.folders import Folders

    for rel in ("checkpoints/flux1-dev.sft", "checkpoints/sd15.safetensors", "checkpoints/Sub/XL.SafeTensors",
                "checkpoints/notes.txt", "loras/detail.sft", "controlnet/canny.pth", "embeddings/neg.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "checkpoints" / "pipe").mkdir()
    (tmp_path / "checkpoints" / "pipe" / "model_index.json").write_text("{}")
    found = H.scan_models(tmp_path)
    assert found["checkpoints"] == ["Sub/XL.SafeTensors", "flux1-dev.sft", "pipe", "sd15.safetensors"]
    assert found["loras"] == ["detail.sft"]
    runner = Folders.create(models=tmp_path)
    for kind in ("checkpoints", "loras", "controlnet", "embeddings"):
        assert found[kind] == runner.list_models(kind), kind
