"""Shared fixtures: the public ComfyUI parity reference and the toy network it was made with."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

# the PNG origin key (twosamplers._origin): a key of the test session, not the user's ~/.config one; every process
# the tests start inherits it
os.environ.setdefault("TWOSAMPLERS_KEY_FILE", os.path.join(tempfile.mkdtemp(prefix="twosamplers-tests-"),
                                                           "png-origin.key"))

# ComfyUI's reference tensors travel with the code: tests/parity/engine (made by ComfyUI's own code with
# tests/parity/engine/make.py). TWOSAMPLERS_PARITY_DIR points the tests at another set of the same layout (e.g.
# the project's shared/parity, which test_shared_parity.py also checks whole when it is beside the checkout).
IN_REPO_PARITY = Path(__file__).resolve().parent / "parity" / "engine"
SHARED_PARITY = Path(os.environ.get("TWOSAMPLERS_SHARED_PARITY_DIR")
                     or Path(__file__).resolve().parents[1].parent / "shared" / "parity")
PARITY_DIR = Path(os.environ.get("TWOSAMPLERS_PARITY_DIR") or IN_REPO_PARITY)
PARITY_MISSING = (f"parity reference not found at {PARITY_DIR}: the ComfyUI parity cases are skipped (the "
                  "repository's tests/parity/engine, or the folder TWOSAMPLERS_PARITY_DIR names; under CI=true this "
                  "is an error)")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _parity_present() -> bool:
    return (PARITY_DIR / "reference.safetensors").is_file() and (PARITY_DIR / "manifest.json").is_file()


# "slow" (CONTRIBUTING.md): a test that builds or loads the tiny Stable Diffusion checkpoints, drives a browser or
# runs whole batches in worker processes or on Ray, by the fixtures it uses; others carry @pytest.mark.slow.
# `python -m pytest -m "not slow"` is the everyday run; CI (.ci/run) runs everything.
SLOW_FIXTURES = ("tiny_sd_files", "inpaint_files", "chromium", "local_run", "wf_run")


def pytest_collection_modifyitems(config, items):
    """Marks the slow tests; and without the parity reference, the parity tests are not silently dropped: locally
    each is skipped with one and the same reason; under CI=true the run stops with an error."""
    for it in items:
        if any(f in getattr(it, "fixturenames", ()) for f in SLOW_FIXTURES):
            it.add_marker(pytest.mark.slow)
    if _parity_present():
        return
    uses = [it for it in items if "parity" in getattr(it, "fixturenames", ()) or "regional" in
            getattr(it, "fixturenames", ())]
    if _ci():
        pytest.exit(f"error: {PARITY_MISSING}", returncode=1)
    for it in uses:
        it.add_marker(pytest.mark.skip(reason=PARITY_MISSING), append=False)
ATOL = 1e-4
RTOL = 1e-4


class ToyNet(torch.nn.Module):
    """The parity reference's EPS "UNet" (shared/parity/README.md):
    eps = tanh(conv2d(x, W, b)) * (0.5 + t/1000) + 0.1 * mean(context) + 0.05 * roll(x, 1, dim=1)."""

    def __init__(self) -> None:
        super().__init__()
        idx = torch.arange(4 * 4 * 3 * 3, dtype=torch.float64).reshape(4, 4, 3, 3)
        self.weight = torch.nn.Parameter((0.1 * torch.sin(1.0 + idx)).float(), requires_grad=False)
        self.bias = torch.nn.Parameter((0.01 * torch.arange(1, 5, dtype=torch.float64)).float(), requires_grad=False)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x, timesteps, context, **kwargs):
        self.calls.append(tuple(x.shape))
        h = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)
        tt = (timesteps.float() / 1000.0).view(-1, 1, 1, 1)
        c = context.float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return torch.tanh(h) * (0.5 + tt) + 0.1 * c + 0.05 * torch.roll(x, shifts=1, dims=1)


def closed_form_denoiser(mean: float = 0.3, var: float = 0.25):
    """The exact denoiser of N(mean, var) data: D(x, s) = x v/(v+s^2) + m s^2/(v+s^2)."""

    def D(x, sigma, **kwargs):
        s2 = sigma.view(-1, *([1] * (x.ndim - 1))) ** 2
        return x * var / (var + s2) + mean * s2 / (var + s2)

    return D


def run_kd_case(parity_data, key: str) -> None:
    """One `kd/*` reference case: the sampler on the closed-form denoiser from kd/x_unit * sigmas[0]."""
    from twosamplers.engine.schedules import ModelSamplingDiscrete, calculate_sigmas
    from twosamplers.samplers import get_sampler

    T, M = parity_data
    p = M[key]
    sig = calculate_sigmas(ModelSamplingDiscrete(), p["scheduler"], p["steps"])
    x = T["kd/x_unit"].clone() * sig[0]
    out = get_sampler(p["sampler"])(closed_form_denoiser(), x, sig, extra_args={}, disable=True)
    assert_close(out, T[key])


@pytest.fixture(scope="session")
def parity():
    """(tensors, manifest) of the parity set (tests/parity/engine, or TWOSAMPLERS_PARITY_DIR's)."""
    if not _parity_present():
        pytest.skip(PARITY_MISSING)
    from safetensors.torch import load_file

    tensors = load_file(str(PARITY_DIR / "reference.safetensors"))
    manifest = json.loads((PARITY_DIR / "manifest.json").read_text())
    return tensors, manifest


def parity_keys(prefix: str) -> list[str]:
    """Manifest keys under `prefix` (collected at import time so each case is its own test). Without the
    reference: one placeholder (shaped like a key), so that the test is still collected and then skipped."""
    path = PARITY_DIR / "manifest.json"
    if not path.is_file():
        return [f"{prefix.rstrip('/')}/missing/missing/missing/missing"]
    manifest = json.loads(path.read_text())
    return sorted(k for k in manifest if k.startswith(prefix) and not k.endswith("/in"))


def assert_close(out: torch.Tensor, ref: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> None:
    assert tuple(out.shape) == tuple(ref.shape), f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    a, b = out.detach().double().cpu(), ref.double()
    assert torch.equal(a.isnan(), b.isnan()), "NaN pattern differs"
    ok = torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    assert bool(ok.all()), f"max |diff| {float((a - b).abs().nan_to_num().max()):.3e}"


@pytest.fixture
def toy_model():
    from twosamplers.models import NetworkModel

    return NetworkModel(ToyNet())


@pytest.fixture
def conds():
    g = torch.Generator().manual_seed(7)
    pos = [[torch.randn(1, 3, 8, generator=g), {}]]
    neg = [[torch.randn(1, 3, 8, generator=g), {}]]
    return pos, neg


def build_tiny_sd(root: Path) -> dict:
    """The tiny random SD1.x and SDXL models of test_sd_backend.py under `root`, each as a diffusers folder and as
    a single-file LDM checkpoint: {"sd1_folder", "sd1_file", "sdxl_folder", "sdxl_file"}."""
    from test_sd_backend import folder_to_single_file, save_folder

    paths = {}
    for name, sdxl in (("sd1", False), ("sdxl", True)):
        folder = save_folder(root / f"{name}_diffusers", sdxl)
        paths[name + "_folder"] = folder
        paths[name + "_file"] = folder_to_single_file(folder, root / f"{name}.safetensors", sdxl)
    return paths


def build_models_dir(root: Path, sd_files: dict) -> Path:
    """A ComfyUI-style models folder `root` around the tiny SD1.x checkpoint of `sd_files` (build_tiny_sd):
    checkpoints/sd1.safetensors, loras/style.safetensors (test_lora's builder), controlnet/cn.safetensors
    (test_controlnet's builder, LDM layout) and embeddings/pet.safetensors (the token vector of "dog")."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from test_controlnet import tiny_controlnet, to_ldm_controlnet
    from test_lora import _vectors_of, make_lora

    from twosamplers.models.sd import load_sd

    for sub in ("checkpoints", "loras", "controlnet", "embeddings"):
        (root / sub).mkdir(parents=True)
    (root / "checkpoints" / "sd1.safetensors").symlink_to(sd_files["sd1_file"])
    sd1 = load_sd(sd_files["sd1_file"], device="cpu", cache=False)
    save_file(make_lora(sd1, "kohya", "lora", seed=1, every=2)[0], str(root / "loras" / "style.safetensors"))
    save_file({"emb_params": _vectors_of(sd1, 0, ["dog"])}, str(root / "embeddings" / "pet.safetensors"))
    cn = tiny_controlnet(UNet2DConditionModel.from_pretrained(sd_files["sd1_folder"] / "unet"))
    save_file(to_ldm_controlnet(cn), str(root / "controlnet" / "cn.safetensors"))
    return root


@pytest.fixture(scope="session")
def tiny_sd_files(tmp_path_factory):
    """`build_tiny_sd`, built once per session."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_sd_files, tmp_path_factory):
    """`build_models_dir` around the session's tiny SD1.x checkpoint: for the UI's model pickers and renders."""
    return build_models_dir(tmp_path_factory.mktemp("models"), tiny_sd_files)


@pytest.fixture(scope="session")
def flow_models_dir(tmp_path_factory):
    """The tiny Flux.1 / SD3.5 model files of tests/flow_models.py in a ComfyUI-style models folder (built once)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from flow_models import write_models

    root = tmp_path_factory.mktemp("flow_models")
    write_models(root)
    return root


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A user's machine in miniature. private/: files no document may name; work/: the current folder (a mask,
    a LoRA folder, an input folder, a models folder). No case may change a private file, nor download. Used by the
    hostile-input catalogue (tests/test_security*.py)."""
    from types import SimpleNamespace

    from safetensors.torch import save_file
    from security_cases import mask_png, snapshot, write_png

    private = tmp_path / "private"
    private.mkdir()
    write_png(private / "secret.png", 7)
    save_file({"lora_unet_x.lora_down.weight": torch.ones(1, 1)}, str(private / "secret.safetensors"))
    (private / "notes.txt").write_text("my notes")
    work = tmp_path / "work"
    for sub in ("loras", "input", "models/checkpoints", "models/loras", "out"):
        (work / sub).mkdir(parents=True)
    mask_png(work / "mask.png")
    mask_png(work / "input" / "mask.png")
    write_png(work / "input" / "photo.png", 100)
    monkeypatch.chdir(work)

    def no_download(*a, **k):
        raise AssertionError("a download was started")

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    before = snapshot(private)
    yield SimpleNamespace(root=tmp_path, private=private, work=work, secret=private / "secret.png")
    assert snapshot(private) == before, "a private file was changed or deleted"
