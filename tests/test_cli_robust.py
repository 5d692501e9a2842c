"""Issue 10's command-line promises: exit 2, one line naming the flag the user typed, nothing written and no
sampling when any input or output is bad; outputs written together; older-ComfyUI seeding end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import twosamplers.engine.front as front_mod
from twosamplers.cli import main
from twosamplers.job.imageio import read_settings

pytest.importorskip("twosamplers.engine.front")


def disc_png(path, w=32, h=32):
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.3 * min(w, h)) ** 2).astype(np.uint8) * 255
    Image.fromarray(m).save(path)
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mask(tmp_path):
    return disc_png(tmp_path / "mask.png")


@pytest.fixture
def no_sampling(monkeypatch):
    """Any sampling fails the test: the checks must come first."""
    def boom(*a, **k):
        raise AssertionError("sampled before the input was checked")
    monkeypatch.setattr(front_mod, "two_samplers_for_mask", boom)


def gen(mask, *extra):
    return ["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", mask, "--steps", 2, "-q",
            *extra]


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twosamplers"), err
    for n in needles:
        assert n in lines[0], (n, err)
    assert "Traceback" not in err and ".tmp" not in err


# ------------------------------------------------------------------------------------------ outputs
def test_output_onto_a_fifo_is_refused(tmp_path, mask, capsys, no_sampling):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code, _, err = run(gen(mask, "-o", fifo), capsys)
    one_line_error(code, err, "-o/--output", str(fifo), "FIFO")


@pytest.mark.parametrize("which", ["-o", "--preview", "--save-latent"])
def test_output_onto_an_input_or_another_output_is_refused(tmp_path, mask, capsys, no_sampling, which):
    before = mask.read_bytes()
    out = tmp_path / "out.png"
    args = {"-o": out}
    args[which] = mask
    argv = gen(mask, *[x for k, v in args.items() for x in (k, v)])
    code, _, err = run(argv, capsys)
    one_line_error(code, err, str(mask), "same file")
    assert mask.read_bytes() == before and not out.exists()
    # two outputs on one file (through a symbolic link, too)
    link = tmp_path / "link.png"
    link.symlink_to(out)
    code, _, err = run(gen(mask, "-o", out, "--preview", link), capsys)
    one_line_error(code, err, "--preview", "same file")


def test_output_folder_must_take_a_new_file(tmp_path, mask, monkeypatch):
    import tempfile

    from twosamplers._paths import PathError, check_output

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PathError, match=r"cannot write in the folder of .*out.png \(Permission denied\)") as e:
        check_output("output", tmp_path / "out.png")
    assert e.value.field == "output"


def test_output_symlink_replaces_the_target_and_keeps_the_link(tmp_path, mask, capsys):
    target = tmp_path / "real.png"
    target.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    code, _, err = run(gen(mask, "-o", link), capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    settings, _ = read_settings(target)  # the target now holds the new PNG
    assert settings["base_prompt"] == "grass"


def test_failed_write_leaves_every_output_as_it_was_and_names_the_users_path(tmp_path, mask, capsys, monkeypatch):
    import twosamplers.engine.latent as latent_mod

    out, lat = tmp_path / "out.png", tmp_path / "out.latent"
    out.write_bytes(b"old image")
    lat.write_bytes(b"old latent")

    def failing_writer(*a, **k):
        def write(tmp):
            raise OSError(28, "No space left on device", tmp)
        return write
    monkeypatch.setattr(latent_mod, "latent_writer", failing_writer)
    code, _, err = run(gen(mask, "-o", out, "--save-latent", lat), capsys)
    assert code == 1 and "Traceback" not in err and ".tmp" not in err
    assert f"cannot write {lat}" in err and "No space left" in err
    assert out.read_bytes() == b"old image" and lat.read_bytes() == b"old latent"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "out.latent", "out.png"]


# ------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("flag,value", [("--feather", "inf"), ("--feather", "1e300"), ("--grow", "99999999999"),
                                        ("--grow", "-99999999999"), ("--crop-context", "10000000"),
                                        ("--clip-skip", "-100000000")])
def test_huge_and_infinite_sizes_are_errors_naming_the_flag(mask, capsys, no_sampling, flag, value):
    code, _, err = run(gen(mask, "-o", "never.png", flag, value), capsys)
    one_line_error(code, err, flag)
    assert not os.path.exists("never.png")


def test_front_door_bounds_and_a_grow_beyond_the_mask_is_the_mask_side():
    from twosamplers.engine.mask_ops import grow

    m = torch.zeros(1, 16, 12)
    m[0, 5:7, 4:6] = 1.0
    assert torch.equal(grow(m, 10**9), grow(m, 16)) and bool(grow(m, 10**9).all())
    assert torch.equal(grow(m, -10**9), grow(m, -16))
    from conftest import ToyNet

    import twosamplers as ts
    from twosamplers.models import NetworkModel

    model = NetworkModel(ToyNet())
    c = [[torch.zeros(1, 3, 8), {}]]
    s = ts.SamplerSettings(model, c, c, steps=1)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    for kw, name in (({"feather": float("inf")}, "feather"), ({"grow": 10**9}, "grow"),
                     ({"crop_context": 10**9, "crop_to_mask": True}, "crop_context")):
        with pytest.raises(ValueError, match=name):
            ts.two_samplers_for_mask(latent, torch.ones(8, 8), s, s, disable_pbar=True, **kw)


def test_memory_estimate_refuses_huge_sizes_unless_overridden(tmp_path, mask, capsys, monkeypatch, no_sampling):
    import twosamplers.job.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 8 * memory.GB)
    code, _, err = run(gen(mask, "-o", tmp_path / "o.png", "--width", 16384, "--height", 16384), capsys)
    one_line_error(code, err, "--width/--height", "GB", "--ignore-memory-limit")
    code, _, err = run(["demo", "-o", tmp_path / "d.png", "--size", 4096, "-q"], capsys)
    one_line_error(code, err, "--size", "GB")
    assert memory.estimate_bytes(_textures(), 4096, 4096) > 20 * memory.GB
    assert memory.estimate_bytes(_textures(), 256, 256) < 1 * memory.GB


def _textures():
    from twosamplers.models import load

    return load("textures")


def test_ignore_memory_limit_renders(tmp_path, capsys, monkeypatch):
    import twosamplers.job.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 1)
    code, _, err = run(["demo", "-o", tmp_path / "d.png", "--size", 16, "--steps", 1, "-q", "--no-preview"], capsys)
    one_line_error(code, err, "--size", "needs about")
    code, _, err = run(["demo", "-o", tmp_path / "d.png", "--size", 16, "--steps", 1, "-q", "--no-preview",
                        "--ignore-memory-limit"], capsys)
    assert code == 0, err and (tmp_path / "d.png").is_file()


# ------------------------------------------------------------------------------------------ --from metadata
def _png_with_settings(path, text):
    info = PngImagePlugin.PngInfo()
    info.add_text("twosamplers", text)
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    return path


def _settings(mask, **kw):
    d = {"base_prompt": "grass", "mask_prompt": "brick", "mask": str(mask), "base_steps": 2, "mask_steps": 2}
    d.update(kw)
    return json.dumps(d)


def test_from_metadata_booleans_must_be_json_booleans(tmp_path, mask, capsys, no_sampling):
    png = _png_with_settings(tmp_path / "s.png", _settings(mask, invert_mask="false"))
    code, _, err = run(["generate", "--from", png, "-o", tmp_path / "o.png"], capsys)
    one_line_error(code, err, "invert_mask", "true or false", str(png))


def test_from_metadata_deeply_nested_json_is_an_error(tmp_path, capsys, no_sampling):
    png = _png_with_settings(tmp_path / "deep.png", "[" * 100000 + "]" * 100000)
    code, _, err = run(["generate", "--from", png, "-o", tmp_path / "o.png"], capsys)
    one_line_error(code, err, "nested too deeply")


def test_model_names_are_compared_exactly(tmp_path, mask, capsys, no_sampling):
    png = _png_with_settings(tmp_path / "m.png", _settings(mask, model=" TEXTURES "))
    code, _, err = run(["generate", "--from", png, "-o", tmp_path / "o.png"], capsys)
    one_line_error(code, err, "' TEXTURES '")
    from twosamplers.models.registry import defaults_for

    assert defaults_for(" TEXTURES ").cfg == 8.0  # a path, with checkpoint defaults: not textures


# ------------------------------------------------------------------------------------------ device, Ctrl-C
@pytest.mark.parametrize("device,needle", [("bogus", "not a device"), ("cuda:7", "CUDA"), ("tpu", "")])
def test_bad_device_is_one_line(mask, capsys, no_sampling, device, needle):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    code, _, err = run(gen(mask, "-o", "never.png", "--device", device), capsys)
    one_line_error(code, err, "--device", needle)


def test_ctrl_c_while_importing_is_the_interrupted_line(monkeypatch, capsys):
    import twosamplers.cli as cli

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    code = main(["demo"])
    _, err = capsys.readouterr()
    assert code == 130 and err.strip() == "twosamplers: interrupted (no partial file was written)"


def test_cli_module_imports_no_torch():
    """`twosamplers ...` reaches main() (and its Ctrl-C handler) before torch is imported."""
    code = "import sys, twosamplers.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------------------------------ --help, flag names
def test_help_shows_o_required_and_lists_sampler_names(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert "-o PNG" in usage and "[-o PNG]" not in usage
    text = " ".join(out.split())
    assert "dpmpp_2m_sde_gpu" in text and "uni_pc_bh2" in text and "karras" in text
    assert "symbolic link" in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "euler_ancestral" in capsys.readouterr().out


@pytest.mark.parametrize("typed,named", [("--steps", "--steps:"), ("--base-steps", "--base-steps:"),
                                         ("--mask-steps", "--mask-steps:")])
def test_errors_name_the_flag_that_was_typed(mask, capsys, no_sampling, typed, named):
    argv = ["generate", "--base-prompt", "grass", "--mask-prompt", "brick", "--mask", mask, typed, 0, "-o", "x.png"]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, named)


def test_demo_errors_name_demo_flags(tmp_path, capsys):
    code, _, err = run(["demo", "-o", tmp_path / "d.png", "--steps", 0], capsys)
    one_line_error(code, err, "--steps:")


# ------------------------------------------------------------------------------------------ older ComfyUI
@pytest.mark.slow
def test_comfyui_version_through_cli_png_metadata_and_from(tmp_path, mask, capsys):
    common = ["--sampler", "euler_ancestral", "--seed", 3]
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert run(gen(mask, *common, "--comfyui-version", "0.3.64", "-o", a, "--save-latent", tmp_path / "a.latent"),
               capsys)[0] == 0
    assert run(gen(mask, *common, "-o", b, "--save-latent", tmp_path / "b.latent"), capsys)[0] == 0
    sa, _ = read_settings(a)
    sb, _ = read_settings(b)
    assert sa["comfyui_version"] == "0.3.64" and sb["comfyui_version"] == "0.30"
    from twosamplers.engine.latent import load_latent

    la, lb = load_latent(tmp_path / "a.latent")["samples"], load_latent(tmp_path / "b.latent")["samples"]
    assert not torch.equal(la, lb)
    assert run(["generate", "--from", a, "-o", c, "--save-latent", tmp_path / "c.latent", "-q"], capsys)[0] == 0
    assert torch.equal(load_latent(tmp_path / "c.latent")["samples"], la)


def test_comfyui_version_through_node_classes_and_front_door():
    from conftest import ToyNet

    import twosamplers as ts
    from twosamplers.models import NetworkModel

    model = NetworkModel(ToyNet())
    g = torch.Generator().manual_seed(2)
    pos, neg = [[torch.randn(1, 3, 8, generator=g), {}]], [[torch.randn(1, 3, 8, generator=g), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    pipe = (model, None, None, pos, neg)
    args = (4, 3, 5.0, "euler_ancestral", "normal", 1.0, pipe)
    old = ts.KSamplerProvider().doit(*args, comfyui_version="0.3.64")[0].sample(latent, disable_pbar=True)
    new = ts.KSamplerProvider().doit(*args)[0].sample(latent, disable_pbar=True)
    ref = ts.common_ksampler(model, 4, 3, 5.0, "euler_ancestral", "normal", pos, neg, latent, disable_pbar=True,
                             comfyui_version="0.3.64")
    assert torch.equal(old["samples"], ref["samples"]) and not torch.equal(old["samples"], new["samples"])
    adv_old = ts.KSamplerAdvancedProvider().doit(5.0, "euler_ancestral", "normal", pipe,
                                                 comfyui_version="0.3.64")[0]
    assert adv_old.comfyui_version == "0.3.64"
    m = torch.zeros(8, 8)
    m[2:6, 2:6] = 1.0
    for mode in ("two-pass", "regional"):
        outs = []
        for version in ("0.3.64", "0.30"):
            s = ts.SamplerSettings(model, pos, neg, seed=1, steps=3, cfg=5.0, sampler_name="euler_ancestral",
                                   comfyui_version=version)
            outs.append(ts.two_samplers_for_mask(latent, m, s, s, mode=mode, disable_pbar=True)["samples"])
        assert not torch.equal(*outs), mode
    with pytest.raises(ValueError, match="comfyui_version"):
        ts.SamplerSettings(model, pos, neg, comfyui_version="new")


def test_feather_wider_than_the_image_is_an_error(mask, capsys, no_sampling):
    code, _, err = run(gen(mask, "-o", "never.png", "--width", 32, "--height", 32, "--feather", 500), capsys)
    one_line_error(code, err, "--feather", "wider than the image")


def test_region_dilation_with_a_huge_overlap_is_bounded_and_exact():
    import math

    import torch.nn.functional as F

    from twosamplers.engine.mask_ops import dilate_region

    def conv_reference(mask, k, threshold):  # the box filter as upstream computes it
        m = mask.reshape(-1, 1, *mask.shape[-2:]).float()
        h, w = m.shape[-2:]
        binarize = torch.round if threshold == "round" else (lambda t: (t > 0).to(t.dtype))
        if k == 0:
            return binarize(m)
        pad = math.ceil((k - 1) / 2)
        return binarize(torch.clamp(F.conv2d(binarize(m), torch.ones(1, 1, k, k), padding=pad), 0, 1)[:, :, :h, :w])

    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        h, w = torch.randint(1, 14, (2,), generator=g).tolist()
        m = torch.rand(h, w, generator=g) ** 3
        k = int(torch.randint(0, 40, (1,), generator=g))
        for th in ("round", "nonzero"):
            assert torch.equal(dilate_region(m, k, th), conv_reference(m, k, th)), (h, w, k, th)
    m = torch.zeros(16, 16)
    m[3, 4] = 1.0
    assert bool(dilate_region(m, 10000).all())  # covers everything, without a 10000 x 10000 box
    assert not bool(dilate_region(torch.zeros(16, 16), 10000).any())
