"""The command line: demo, generate, --from, --json, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from twosamplers.cli import main
from twosamplers.job.imageio import load_image, read_settings

pytest.importorskip("twosamplers.engine.front")  # the CLI drives the front door (two_samplers_for_mask)

FAST = ["--steps", "3"]


def disc_png(path, w=32, h=32):
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.3 * min(w, h)) ** 2).astype(np.uint8) * 255
    Image.fromarray(m, "L").save(path)
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo.png"
    code, stdout, _ = run(["demo", "-o", out, "--size", 32, "--steps", 3, "--json", "-q"], capsys)
    assert code == 0
    info = json.loads(stdout)
    assert info["outputs"] == {"image": str(out), "preview": str(tmp_path / "demo-preview.png")}
    img = load_image(out)
    assert img.shape == (1, 32, 32, 3)
    prev = Image.open(tmp_path / "demo-preview.png")
    assert prev.size == (3 * 32 + 2 * 4, 32)  # mask | base | result
    settings, mask = read_settings(out)
    assert settings["base_prompt"] == "grass" and settings["mask_prompt"] == "brick"
    assert settings["base_seed"] == 0 and settings["base_steps"] == 3 and mask.shape == (32, 32)
    # inside the disc: brick-red (r > g); outside: grass-green (g > r)
    px = img[0]
    assert float(px[16, 16, 0]) > float(px[16, 16, 1]) and float(px[1, 1, 1]) > float(px[1, 1, 0])


def test_generate_and_reproduce_from_png(tmp_path, capsys):
    mask = disc_png(tmp_path / "mask.png", 64, 48)  # any size with the output's aspect ratio
    out = tmp_path / "out.png"
    lat = tmp_path / "out.latent"
    code, stdout, _ = run(["generate", "--base-prompt", "grass", "--mask-prompt", "gravel, sand", "--mask", mask,
                           "--width", 32, "--height", 24, "--seed", 5, "--mask-seed", 9, "--cfg", 2, *FAST,
                           "--mask-sampler", "dpmpp_2m", "--feather", 1.5, "-o", out, "--save-latent", lat,
                           "--json", "-q"], capsys)
    assert code == 0, stdout
    settings = json.loads(stdout)["settings"]
    assert settings["base_seed"] == 5 and settings["mask_seed"] == 9 and settings["mask_sampler"] == "dpmpp_2m"
    first = load_image(out)
    assert first.shape == (1, 24, 32, 3) and lat.is_file()
    from twosamplers import load_latent
    assert load_latent(lat)["samples"].shape == (1, 3, 24, 32)

    again = tmp_path / "again.png"
    code, _, _ = run(["generate", "--from", out, "-o", again, "-q"], capsys)
    assert code == 0
    assert torch.equal(load_image(again), first)
    # flags override what --from brings
    other = tmp_path / "other.png"
    code, _, _ = run(["generate", "--from", out, "--mask-seed", 10, "-o", other, "-q"], capsys)
    assert code == 0 and read_settings(other)[0]["mask_seed"] == 10
    assert not torch.equal(load_image(other), first)


def test_generate_from_image(tmp_path, capsys):
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "in.png")
    mask = disc_png(tmp_path / "m.png", 16, 16)
    code, _, err = run(["generate", "--image", tmp_path / "in.png", "--base-prompt", "water", "--mask-prompt",
                        "brick", "--mask", mask, "--denoise", 0.5, *FAST, "-o", tmp_path / "o.png", "-q"], capsys)
    assert code == 0, err
    assert load_image(tmp_path / "o.png").shape == (1, 16, 16, 3)


@pytest.mark.parametrize("case", ["missing_mask", "not_image", "aspect", "model", "word", "multiple", "range"])
def test_bad_input_exit_2(tmp_path, capsys, monkeypatch, case):
    mask = disc_png(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"previous")  # an existing output survives a failed run
    args = ["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", mask, *FAST, "-o", out, "-q"]
    if case == "missing_mask":
        args[args.index("--mask") + 1] = tmp_path / "nope.png"
    elif case == "not_image":
        (tmp_path / "bad.png").write_text("hello")
        args[args.index("--mask") + 1] = tmp_path / "bad.png"
    elif case == "aspect":
        args += ["--width", 32, "--height", 16]
    elif case == "model":
        args += ["--model", "no-such-model"]
    elif case == "word":
        args[args.index("--mask-prompt") + 1] = "brick unicorn"
    elif case == "multiple":
        from twosamplers.models import IdealModel, LatentFormat

        coarse = IdealModel()
        coarse.latent_format = LatentFormat(1.0, 3, 8)
        monkeypatch.setattr("twosamplers.models.registry.load", lambda name, **kw: coarse)
        args += ["--width", 36, "--height", 36]
    elif case == "range":
        args += ["--denoise", 1.5]
    code, stdout, err = run(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twosamplers: error:"), err
    expect = {"missing_mask": "not found", "not_image": "not a readable image", "aspect": "aspect ratio",
              "model": "unknown model", "word": "unknown prompt word 'unicorn'", "multiple": "multiple of 8",
              "range": "out of range"}[case]
    assert expect in lines[0]
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"mask.png", "out.png", "bad.png"} &
                                                                {p.name for p in tmp_path.iterdir()})


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--sampler", "nope"])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_interrupt_leaves_no_file(tmp_path, capsys, monkeypatch):
    import twosamplers.engine.front as front

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(front, "two_samplers_for_mask", boom)
    mask = disc_png(tmp_path / "mask.png")
    code, _, err = run(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", mask,
                        "-o", tmp_path / "out.png", "-q"], capsys)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


@pytest.mark.parametrize("cmd", [[], ["generate"], ["demo"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: twosamplers" in capsys.readouterr().out


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "twosamplers", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("twosamplers ")


def test_sd_loading_flags_reach_the_loader(monkeypatch, tmp_path):
    """--device/--dtype/--allow-pickle/--clip-skip/--prediction are handed to models.load; the built-in models
    reject the SD-only ones with a one-line error."""
    from twosamplers import cli

    seen = {}

    def fake_load(name, **options):
        seen.update(options, name=name)
        raise ValueError("stop here")

    monkeypatch.setattr("twosamplers.models.registry.load", fake_load)
    mask = tmp_path / "m.png"
    from PIL import Image

    Image.new("L", (16, 16), 255).save(mask)
    rc = cli.main(["generate", "--base-prompt", "a", "--mask-prompt", "b", "--mask", str(mask),
                   "--model", "x.safetensors", "--device", "cpu", "--dtype", "fp16", "--allow-pickle",
                   "--clip-skip", "-2", "--prediction", "v", "-o", str(tmp_path / "o.png")])
    assert rc == 2
    assert seen == {"name": "x.safetensors", "device": "cpu", "dtype": "fp16", "allow_pickle": True, "clip_skip": -2,
                    "prediction": "v"}
    monkeypatch.undo()
    rc = cli.main(["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", str(mask),
                   "--clip-skip", "-2", "-o", str(tmp_path / "o.png")])
    assert rc == 2 and not (tmp_path / "o.png").exists()
