"""LoRA family patches and textual-inversion embeddings on the tiny SD models of test_sd_backend.

LoRA files of every supported key format and adapter kind are built here from the model's own modules; the
expected weights are written out with the formulas (in the order of operations ComfyUI uses), independently
of the key map under test (the LDM names come from test_sd_backend's own LDM converter, by value).
"""

from __future__ import annotations

import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402
from test_sd_backend import to_ldm_unet  # noqa: E402

from twosamplers import common_ksampler  # noqa: E402
from twosamplers.models.embeddings import EmbeddingLibrary  # noqa: E402
from twosamplers.models.lora import Lora, LoraError, LoraModel, load_lora, patched, with_loras  # noqa: E402
from twosamplers.models.prompt_tags import extract_lora_tags, loras_from_prompt, resolve_lora  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402
from twosamplers.models.sd_loading import PickleNotAllowedError  # noqa: E402


@pytest.fixture(scope="module")
def files(tiny_sd_files):
    return {"sd1_folder": tiny_sd_files["sd1_folder"], "sd1": tiny_sd_files["sd1_file"],
            "sdxl_folder": tiny_sd_files["sdxl_folder"], "sdxl": tiny_sd_files["sdxl_file"]}


@pytest.fixture(scope="module")
def sd1(files):
    # float32 text encoders: these tests check the merge formula itself; the float16 rounding ComfyUI applies
    # by default is tested in test_comfy_fixes.py
    return load_sd(files["sd1"], device="cpu", fp32_text_enc=True, cache=False)


@pytest.fixture(scope="module")
def sdxl(files):
    return load_sd(files["sdxl"], device="cpu", fp32_text_enc=True, cache=False)


# ----------------------------------------------------------------------------------------- file builders
def snapshot(model) -> dict[str, torch.Tensor]:
    out = {"unet." + k: v.clone() for k, v in model.unet.state_dict().items()}
    for i, enc in enumerate(model.text_encoders):
        out.update({f"clip{i}.{k}": v.clone() for k, v in enc.model.state_dict().items()})
    return out


def assert_same_bits(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k].view(torch.int32) if a[k].dtype == torch.float32 else a[k],
                                           b[k].view(torch.int32) if b[k].dtype == torch.float32 else b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def ldm_names(unet) -> dict[str, str]:
    """diffusers param -> LDM param, by matching values with test_sd_backend's converter."""
    ldm = to_ldm_unet(unet)
    by_bytes = {}
    for k, v in ldm.items():
        by_bytes.setdefault((tuple(v.shape), v.numpy().tobytes()), []).append(k.removeprefix("model.diffusion_model."))
    out = {}
    for k, v in unet.state_dict().items():
        hits = by_bytes.get((tuple(v.shape), v.numpy().tobytes()), [])
        if len(hits) == 1:
            out[k] = hits[0]
    return out


def modules(model, clip=True):
    """[(part, diffusers/transformers module name, module)] of the Linear/Conv2d layers a LoRA can target."""
    out = [("unet", n, m) for n, m in model.unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if clip:
        for i, enc in enumerate(model.text_encoders):
            out += [(f"clip{i}", n, m) for n, m in enc.model.named_modules() if isinstance(m, torch.nn.Linear)]
    return out


def prefix(model, fmt: str, part: str, name: str, ldm: dict) -> str:
    if part == "unet":
        lname = ldm[name + ".weight"].removesuffix(".weight")
        return {"kohya": "lora_unet_" + name.replace(".", "_"), "kohya_ldm": "lora_unet_" + lname.replace(".", "_"),
                "comfy": "diffusion_model." + lname, "peft": "unet." + name, "diffusers_old": "unet." + name}[fmt]
    i = int(part[4:])
    canon = name if name.startswith("text_model.") else "text_model." + name
    xl = model.family == "sdxl"
    kohya = (f"lora_te{i + 1}_" if xl else "lora_te_") + canon.replace(".", "_")
    comfy = "text_encoders." + (["clip_l", "clip_g"][i] if xl else "clip_l") + ".transformer." + canon
    diff = ["text_encoder.", "text_encoder_2."][i] + canon
    return {"kohya": kohya, "kohya_ldm": kohya, "comfy": comfy, "peft": diff, "diffusers_old": diff}[fmt]


UPDOWN = {"kohya": (".lora_up.weight", ".lora_down.weight"), "kohya_ldm": (".lora_up.weight", ".lora_down.weight"),
          "comfy": (".lora_up.weight", ".lora_down.weight"), "peft": (".lora_B.weight", ".lora_A.weight"),
          "diffusers_old": (".lora.up.weight", ".lora.down.weight")}


def lora_tensors(m, rank, g, kind="lora"):
    """Random adapter tensors for module m. Returns {slot: tensor}."""
    w = m.weight
    out_f, in_f = w.shape[0], w.shape[1]
    conv = w.ndim == 4
    k = w.shape[2:] if conv else ()

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    if kind == "lora":
        return {"down": r(rank, in_f, *k), "up": r(out_f, rank, *([1, 1] if conv else []))}
    if kind == "locon_mid":
        return {"down": r(rank, in_f, 1, 1), "mid": r(rank, rank, *k), "up": r(out_f, rank, 1, 1)}
    if kind == "loha":
        return {"hada_w1_a": r(out_f, rank), "hada_w1_b": r(rank, w[0].numel()),
                "hada_w2_a": r(out_f, rank), "hada_w2_b": r(rank, w[0].numel())}
    if kind == "loha_cp":
        return {"hada_w1_a": r(rank, out_f), "hada_w1_b": r(rank, in_f), "hada_t1": r(rank, rank, *k),
                "hada_w2_a": r(rank, out_f), "hada_w2_b": r(rank, in_f), "hada_t2": r(rank, rank, *k)}
    if kind in ("lokr", "lokr_factored"):
        a = 2 if out_f % 2 == 0 else 1
        b = 2 if in_f % 2 == 0 else 1
        w1 = r(a, b)
        if kind == "lokr":
            return {"lokr_w1": w1, "lokr_w2": r(out_f // a, in_f // b, *k)}
        return {"lokr_w1": w1, "lokr_w2_a": r(out_f // a, rank), "lokr_w2_b": r(rank, (in_f // b) * int(
            torch.tensor(k).prod()) if conv else in_f // b)}
    if kind == "diff":
        return {"diff": r(*w.shape)}
    raise AssertionError(kind)


def expected_delta(t: dict, shape, strength: float, alpha: float | None) -> torch.Tensor:
    """The patch, written from the formulas (float32, ComfyUI's order of operations)."""
    if "diff" in t:
        return strength * t["diff"].float()
    if "up" in t:
        down = t["down"].float()
        a = alpha / down.shape[0] if alpha is not None else 1.0
        if "mid" in t:
            mid = t["mid"].float()
            down = torch.mm(down.transpose(0, 1).flatten(1), mid.transpose(0, 1).flatten(1)).reshape(
                [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]).transpose(0, 1)
        d = torch.mm(t["up"].float().flatten(1), down.flatten(1)).reshape(shape)
        return (strength * a) * d
    if "hada_w1_a" in t:
        a = alpha / t["hada_w1_b"].shape[0] if alpha is not None else 1.0
        if "hada_t1" in t:
            m1 = torch.einsum("i j k l, j r, i p -> p r k l", t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"])
            m2 = torch.einsum("i j k l, j r, i p -> p r k l", t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"])
        else:
            m1, m2 = t["hada_w1_a"] @ t["hada_w1_b"], t["hada_w2_a"] @ t["hada_w2_b"]
        return (strength * a) * (m1 * m2).reshape(shape)
    w1 = t["lokr_w1"]
    if "lokr_w2" in t:
        w2, a = t["lokr_w2"], 1.0
    else:
        w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
        a = alpha / t["lokr_w2_b"].shape[0] if alpha is not None else 1.0
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    return (strength * a) * torch.kron(w1, w2).reshape(shape)


def make_lora(model, fmt="kohya", kind="lora", rank=4, alpha=2.0, seed=0, clip=True, every=1, dtype=None):
    """(state dict, {(part, param): tensors}) for `kind` on every `every`-th target module."""
    g = torch.Generator().manual_seed(seed)
    ldm = {k: v for k, v in ldm_names(model.unet).items()}
    sd, truth = {}, {}
    for j, (part, name, m) in enumerate(modules(model, clip)):
        if j % every:
            continue
        conv = m.weight.ndim == 4
        if kind in ("locon_mid", "loha_cp") and not (conv and m.weight.shape[2] == 3):
            continue
        t = lora_tensors(m, rank, g, kind)
        pre = prefix(model, fmt, part, name, ldm)
        for slot, v in t.items():
            v = v.to(dtype) if dtype is not None else v
            t[slot] = v
            if slot in ("up", "down"):
                sd[pre + UPDOWN[fmt][0 if slot == "up" else 1]] = v.contiguous()
            elif slot == "mid":
                sd[pre + ".lora_mid.weight"] = v.contiguous()
            else:
                sd[pre + "." + slot] = v.contiguous()
        if alpha is not None and kind != "diff":
            sd[pre + ".alpha"] = torch.tensor(alpha)
        truth[(part, name)] = t
    return sd, truth


def save(tmp_path, name, sd):
    p = tmp_path / name
    save_file(sd, str(p))
    return p


def param(model, part, name):
    root = model.unet if part == "unet" else model.text_encoders[int(part[4:])].model
    return dict(root.named_parameters())[name]


# ----------------------------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("kind", ["lora", "locon_mid", "loha", "loha_cp", "lokr", "lokr_factored", "diff"])
def test_merged_weights_equal_the_formula_in_bits(sd1, tmp_path, kind):
    sd, truth = make_lora(sd1, "kohya", kind, every=3 if kind in ("lora", "diff") else 1)
    path = save(tmp_path, f"{kind}.safetensors", sd)
    before = snapshot(sd1)
    f = load_lora(sd1, path)
    assert len(f.patches) == len(truth) and not f.unmatched
    sm, sc = 0.7, -1.3
    alpha = None if kind == "diff" else 2.0
    with patched(sd1, [(f, sm, sc)]):
        for (part, name), t in truth.items():
            p = param(sd1, part, name + ".weight")
            orig = before[("unet." if part == "unet" else part + ".") + name + ".weight"]
            s = sm if part == "unet" else sc
            want = (orig.float() + expected_delta(t, orig.shape, s, alpha)).to(orig.dtype)
            assert torch.equal(p.view(torch.int32), want.view(torch.int32)), name
        after_in = snapshot(sd1)
    assert_same_bits(snapshot(sd1), before)  # restored bit for bit
    changed = [k for k in before if not torch.equal(before[k], after_in[k])]
    assert len(changed) == len(truth)  # nothing but the targets moved


def test_stack_of_loras_sums_in_float32_and_casts_once(sd1, tmp_path):
    sd_a, ta = make_lora(sd1, "kohya", "lora", seed=1, every=4)
    sd_b, tb = make_lora(sd1, "comfy", "loha", seed=2, every=4)
    fa = load_lora(sd1, save(tmp_path, "a.safetensors", sd_a))
    fb = load_lora(sd1, save(tmp_path, "b.safetensors", sd_b))
    before = snapshot(sd1)
    with patched(sd1, [(fa, 0.5, 1.0), (fb, 1.5, 0.0)]):
        for key in ta:
            part, name = key
            orig = before[("unet." if part == "unet" else part + ".") + name + ".weight"]
            w = orig.float() + expected_delta(ta[key], orig.shape, 0.5 if part == "unet" else 1.0, 2.0)
            if part == "unet" and key in tb:
                w = w + expected_delta(tb[key], orig.shape, 1.5, 2.0)
            assert torch.equal(param(sd1, part, name + ".weight"), w.to(orig.dtype))
    assert_same_bits(snapshot(sd1), before)


def test_dora_scale_follows_the_magnitude_formula(sd1, tmp_path):
    sd, truth = make_lora(sd1, "kohya", "lora", every=5, clip=False)
    g = torch.Generator().manual_seed(5)
    scales = {}
    ldm = ldm_names(sd1.unet)
    for part, name in truth:
        w = param(sd1, part, name + ".weight")
        axis_out = len(scales) % 2 == 0  # both DoRA layouts: magnitude per output row / per input column
        shape = (w.shape[0],) + (1,) * (w.ndim - 1) if axis_out else (1, w.shape[1]) + (1,) * (w.ndim - 2)
        scales[name] = torch.rand(*shape, generator=g) + 0.5
        sd[prefix(sd1, "kohya", part, name, ldm) + ".dora_scale"] = scales[name]
    f = load_lora(sd1, save(tmp_path, "dora.safetensors", sd))
    for strength in (1.0, 0.6):
        before = snapshot(sd1)
        with patched(sd1, [(f, strength, 1.0)]):
            for (part, name), t in truth.items():
                w = before["unet." + name + ".weight"].float()
                diff = expected_delta(t, w.shape, 1.0, 2.0)  # alpha folded in, strength applied after
                calc = w + diff
                ds = scales[name]
                if ds.shape[0] == w.shape[0]:
                    norm = w.reshape(w.shape[0], -1).norm(dim=1, keepdim=True).reshape(ds.shape)
                else:
                    norm = calc.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1, keepdim=True).reshape(
                        w.shape[1], *[1] * (w.ndim - 1)).transpose(0, 1)
                calc = calc * (ds / (norm + torch.finfo(torch.float32).eps))
                want = calc if strength == 1.0 else w + strength * (calc - w)
                p = param(sd1, part, name + ".weight")
                torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-7)
        assert_same_bits(snapshot(sd1), before)


def test_strength_zero_changes_nothing_and_skips_the_work(sd1, tmp_path):
    sd, _ = make_lora(sd1, "kohya", "lora", every=2)
    f = load_lora(sd1, save(tmp_path, "z.safetensors", sd))
    before = snapshot(sd1)
    with patched(sd1, [(f, 0.0, 0.0)]):
        assert_same_bits(snapshot(sd1), before)
    with patched(sd1, [(f, 0.0, 1.0)]):  # clip only: the UNet keeps its bits
        now = snapshot(sd1)
        assert all(torch.equal(now[k], before[k]) for k in before if k.startswith("unet."))
        assert any(not torch.equal(now[k], before[k]) for k in before if k.startswith("clip0."))
    assert_same_bits(snapshot(sd1), before)


def test_restore_is_bit_exact_after_an_error_and_for_fp16(files, tmp_path):
    m = load_sd(files["sd1"], device="cpu", dtype="fp16", cache=False)
    sd, truth = make_lora(m, "kohya", "lora", every=2, dtype=torch.float16)
    f = load_lora(m, save(tmp_path, "h.safetensors", sd))
    before = snapshot(m)
    with pytest.raises(KeyError):
        with patched(m, [(f, 1.0, 1.0)]):
            key = next(iter(truth))
            p = param(m, key[0], key[1] + ".weight")
            orig = before[("unet." if key[0] == "unet" else key[0] + ".") + key[1] + ".weight"]
            want = (orig.float() + expected_delta(truth[key], orig.shape, 1.0, 2.0)).to(torch.float16)
            assert p.dtype == torch.float16 and torch.equal(p, want)
            raise KeyError("boom")
    assert_same_bits(snapshot(m), before)


# ------------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_every_key_format_patches_the_same_weights(family, sd1, sdxl, tmp_path):
    model = sd1 if family == "sd1" else sdxl
    ref = None
    for fmt in ("kohya", "kohya_ldm", "comfy", "peft", "diffusers_old"):
        alpha = None if fmt in ("peft", "diffusers_old") else 4.0  # rank 4: alpha/rank == 1 either way
        sd, truth = make_lora(model, fmt, "lora", seed=3, every=2, alpha=alpha)
        f = load_lora(model, save(tmp_path, f"{fmt}.safetensors", sd))
        assert len(f.patches) == len(truth), fmt
        with patched(model, [(f, 0.8, 0.9)]):
            snap = snapshot(model)
        if ref is None:
            ref = snap
        else:
            assert_same_bits(snap, ref)
    parts = {p.part for p in f.patches}
    assert parts == ({"unet", "clip0", "clip1"} if family == "sdxl" else {"unet", "clip0"})


def test_old_diffusers_attention_processor_names(sd1, tmp_path):
    g = torch.Generator().manual_seed(0)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    sd = {}
    for proj, mod in (("to_q", "to_q"), ("to_out", "to_out.0")):
        w = param(sd1, "unet", f"{name}.{mod}.weight")
        sd[f"{name}.processor.{proj}_lora.down.weight"] = torch.randn(2, w.shape[1], generator=g)
        sd[f"{name}.processor.{proj}_lora.up.weight"] = torch.randn(w.shape[0], 2, generator=g)
    f = load_lora(sd1, save(tmp_path, "proc.safetensors", sd))
    assert sorted(t.param for t in f.patches) == [f"{name}.to_out.0", f"{name}.to_q"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_diffusers_load_lora_weights_and_fuse_lora_agree(files, sd1, tmp_path):
    """An independent implementation: diffusers' own kohya conversion + PEFT fusing on the same file."""
    pytest.importorskip("peft", reason="the cross-check needs peft (pip install -e '.[test]'; CI installs it)")
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = files["sd1_folder"]
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"), text_encoder=CLIPTextModel.from_pretrained(
            folder / "text_encoder"), tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=EulerDiscreteScheduler.from_pretrained(folder / "scheduler"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    sd, truth = make_lora(sd1, "kohya", "lora", seed=7, every=1, alpha=2.0)
    # diffusers' kohya loader takes attention/projection/ff layers; keep to those it converts
    keep = {k: v for k, v in sd.items() if any(s in k for s in ("attn", "proj", "ff_net", "mlp", "fc"))}
    path = save(tmp_path, "kohya_sd1.safetensors", keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=0.75)
    pipe.unload_lora_weights()  # keeps the fused weights, drops PEFT's wrappers
    theirs_unet = pipe.unet.state_dict()
    # diffusers' text-encoder LoRA path does not reach transformers 5's CLIP modules: fuse the text encoder's
    # part with PEFT itself (LoraConfig scaling = lora_alpha / r = strength * alpha / rank)
    te = _peft_fused_clip(folder / "text_encoder", truth, rank=4, scale=0.75 * 2.0 / 4)
    f = load_lora(sd1, path)
    with patched(sd1, [(f, 0.75, 0.75)]):
        ours_unet = {k: v.clone() for k, v in sd1.unet.state_dict().items()}
        ours_te = {k: v.clone() for k, v in sd1.text_encoders[0].model.state_dict().items()}
    compared = 0
    for t in f.patches:
        a = (ours_unet if t.part == "unet" else ours_te)[t.param + ".weight"]
        b = (theirs_unet if t.part == "unet" else te)[t.param + ".weight"]
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        compared += 1
    assert compared == len(f.patches) > 20 and {t.part for t in f.patches} == {"unet", "clip0"}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_diffusers_agrees_on_sdxl_kohya_ldm_names(files, sdxl, tmp_path):
    """kohya's SDXL LoRAs use LDM block names (input_blocks_4_1_...): diffusers maps them with its own SGM-block
    conversion; the UNet weights must agree with ours."""
    pytest.importorskip("peft", reason="the cross-check needs peft (pip install -e '.[test]'; CI installs it)")
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = files["sdxl_folder"]
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=EulerDiscreteScheduler.from_pretrained(folder / "scheduler"))
    sd, _ = make_lora(sdxl, "kohya_ldm", "lora", seed=7, every=1, alpha=2.0, clip=False)
    path = save(tmp_path, "kohya_xl.safetensors", {k: v for k, v in sd.items()
                                                    if any(s in k for s in ("attn", "proj", "ff_net"))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=0.75)
    pipe.unload_lora_weights()
    theirs = pipe.unet.state_dict()
    f = load_lora(sdxl, path)
    with patched(sdxl, [(f, 0.75, 1.0)]):
        ours = {k: v.clone() for k, v in sdxl.unet.state_dict().items()}
    for t in f.patches:
        torch.testing.assert_close(ours[t.param + ".weight"], theirs[t.param + ".weight"], rtol=1e-5, atol=1e-6)
    assert len(f.patches) > 40


def _peft_fused_clip(folder, truth, rank: int, scale: float) -> dict:
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(folder)
    names = sorted(name for part, name in truth if part == "clip0")
    te = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=scale * rank, target_modules=names), te)
    state = {}
    for name in names:
        state[name + ".lora_A.weight"] = truth[("clip0", name)]["down"]
        state[name + ".lora_B.weight"] = truth[("clip0", name)]["up"]
    res = set_peft_model_state_dict(te, state)
    assert not getattr(res, "unexpected_keys", [])
    for mod in te.modules():
        if isinstance(mod, BaseTunerLayer):
            mod.merge()
    return {k.replace(".base_layer", ""): v.clone() for k, v in te.state_dict().items() if "lora_" not in k}


# ------------------------------------------------------------------------------------------- bad input
def test_bad_files_are_one_clear_error_naming_the_file(sd1, sdxl, tmp_path):
    with pytest.raises(LoraError, match="not found"):
        load_lora(sd1, tmp_path / "nope.safetensors")
    sd, _ = make_lora(sd1, "kohya", "lora", every=7)
    bad = dict(sd)
    k = next(iter(bad))
    bad[k] = bad[k].clone()
    bad[k][0] = float("nan")
    p = save(tmp_path, "nan.safetensors", bad)
    with pytest.raises(LoraError, match=r"nan\.safetensors.*NaN"):
        load_lora(sd1, p)
    xl, _ = make_lora(sdxl, "kohya_ldm", "lora", every=3)
    p = save(tmp_path, "xl_lora.safetensors", xl)
    with pytest.raises(LoraError, match=r"xl_lora\.safetensors.*(another model family|matches)"):
        load_lora(sd1, p)
    p = save(tmp_path, "other.safetensors", {"foo.bar.lora_up.weight": torch.zeros(2, 2),
                                               "foo.bar.lora_down.weight": torch.zeros(2, 2)})
    with pytest.raises(LoraError, match=r"other\.safetensors.*no key"):
        load_lora(sd1, p)
    half = {k: v for k, v in sd.items() if not k.endswith(".lora_down.weight")}
    with pytest.raises(LoraError, match=r"half\.safetensors.*incomplete lora patch"):
        load_lora(sd1, save(tmp_path, "half.safetensors", half))
    torch.save(sd, tmp_path / "pickled.pt")
    with pytest.raises(PickleNotAllowedError, match="pickled.pt"):
        load_lora(sd1, tmp_path / "pickled.pt")
    assert len(load_lora(sd1, tmp_path / "pickled.pt", allow_pickle=True).patches) > 0
    for s in (float("nan"), float("inf"), 1e9):
        with pytest.raises(ValueError, match="strength_model"):
            Lora("x.safetensors", s)


def test_unmatched_keys_are_reported_once(sd1, tmp_path):
    sd, truth = make_lora(sd1, "kohya", "lora", every=6)
    sd["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(2, 2)
    sd["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(2, 2)
    with pytest.warns(UserWarning, match=r"2 LoRA keys match nothing.*not_a_layer") as rec:
        f = load_lora(sd1, save(tmp_path, "extra.safetensors", sd))
    assert len([w for w in rec if "match nothing" in str(w.message)]) == 1
    assert len(f.patches) == len(truth)


# ------------------------------------------------------------------------------------------- the model
def test_lora_model_equals_a_merged_copy_and_restores(files, sd1, tmp_path):
    import copy

    sd, _ = make_lora(sd1, "kohya", "lora", every=2)
    path = save(tmp_path, "m.safetensors", sd)
    lm = with_loras(sd1, [Lora(path, 0.9, 0.6)])
    assert isinstance(lm, LoraModel)
    merged = copy.deepcopy(sd1)
    f = load_lora(merged, path)
    before = snapshot(sd1)
    with patched(merged, [(f, 0.9, 0.6)]):
        pos_ref, neg_ref = merged.encode_prompt("a red cat"), merged.encode_prompt("")
        lat = {"samples": torch.zeros(1, 4, 8, 8)}
        ref = common_ksampler(merged, 5, 3, 6.0, "euler", "normal", pos_ref, neg_ref, lat, disable_pbar=True)
    pos, neg = lm.encode_prompt("a red cat"), lm.encode_prompt("")
    assert torch.equal(pos[0][0], pos_ref[0][0])
    assert not torch.equal(pos[0][0], sd1.encode_prompt("a red cat")[0][0])
    calls = []
    h = sd1.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        out = common_ksampler(lm, 5, 3, 6.0, "euler", "normal", pos, neg, lat, disable_pbar=True)
    finally:
        h.remove()
    assert torch.equal(out["samples"], ref["samples"]) and calls
    assert_same_bits(snapshot(sd1), before)
    plain = common_ksampler(sd1, 5, 3, 6.0, "euler", "normal", pos, neg, lat, disable_pbar=True)
    assert not torch.equal(plain["samples"], out["samples"])


def test_per_pass_isolation_base_pass_unchanged_by_a_mask_lora(sd1, tmp_path):
    from twosamplers import SamplerSettings, two_samplers_for_mask

    sd, _ = make_lora(sd1, "kohya", "lora", every=2)
    lm = with_loras(sd1, [Lora(save(tmp_path, "mask.safetensors", sd), 1.0, 1.0)])
    pos, neg = sd1.encode_prompt("grass"), sd1.encode_prompt("")
    lat = {"samples": torch.zeros(1, 4, 8, 8)}
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    before = snapshot(sd1)
    base = SamplerSettings(sd1, pos, neg, seed=1, steps=3, cfg=5.0)
    runs = {}
    for name, model in (("plain", sd1), ("lora", lm)):
        inside = SamplerSettings(model, model.encode_prompt("a cat"), neg, seed=2, steps=3, cfg=5.0)
        runs[name] = two_samplers_for_mask(lat, mask, base, inside, disable_pbar=True)["samples"]
    outside = mask == 0
    assert torch.equal(runs["plain"][..., outside], runs["lora"][..., outside])
    assert not torch.equal(runs["plain"][..., ~outside], runs["lora"][..., ~outside])
    assert_same_bits(snapshot(sd1), before)


def test_nesting_different_stacks_is_refused(sd1, tmp_path):
    sd, _ = make_lora(sd1, "kohya", "lora", every=9, clip=False)
    f = load_lora(sd1, save(tmp_path, "n.safetensors", sd))
    before = snapshot(sd1)
    with patched(sd1, [(f, 1.0, 1.0)]):
        with patched(sd1, [(f, 1.0, 1.0)]):  # the same stack again: fine
            pass
        with pytest.raises(RuntimeError, match="another LoRA stack"):
            with patched(sd1, [(f, 0.5, 1.0)]):
                pass
    assert_same_bits(snapshot(sd1), before)


def test_node_classes(sd1, tmp_path, monkeypatch):
    from twosamplers.nodes import NODE_CLASS_MAPPINGS, LoraLoader, LoraLoaderModelOnly

    assert NODE_CLASS_MAPPINGS["LoraLoader"] is LoraLoader
    sd, _ = make_lora(sd1, "comfy", "lora", every=2)
    save(tmp_path, "style.safetensors", sd)
    monkeypatch.setenv("TWOSAMPLERS_LORA_DIR", str(tmp_path))
    req = LoraLoader.INPUT_TYPES()["required"]
    assert list(req) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    assert "style.safetensors" in req["lora_name"][0]
    assert req["strength_model"][1] == {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
    m, c = LoraLoader().load_lora(sd1, sd1, "style.safetensors", 1.0, 0.5)
    assert isinstance(m, LoraModel) and m.loras[0][1:] == (1.0, 0.0) and c.loras[0][1:] == (0.0, 0.5)
    assert LoraLoader().load_lora(sd1, sd1, "style.safetensors", 0.0, 0.0) == (sd1, sd1)
    (mo,) = LoraLoaderModelOnly().load_lora_model_only(m, "style", 0.5)
    assert len(mo.loras) == 2 and mo.base is sd1  # chained like ComfyUI: patches accumulate in order
    with pytest.raises(FileNotFoundError, match="missing"):
        LoraLoaderModelOnly().load_lora_model_only(sd1, "missing", 1.0)


# -------------------------------------------------------------------------------------------------- tags
def test_prompt_tags(tmp_path):
    text, tags = extract_lora_tags("a cat <lora:style:0.7> on grass <lora:char:1:0.5><lora:style:0.2>")
    assert text == "a cat  on grass "
    assert [(t.name, t.strength_model, t.strength_clip) for t in tags] == [("style", 0.7, 0.7), ("char", 1.0, 0.5)]
    assert extract_lora_tags("<lora:x>")[1][0].strength_model == 1.0
    for bad in ("<lora:x:abc>", "<lora:x:nan>", "<lora:x:1:2:3>", "<lora:x:LBW=foo>"):
        with pytest.raises(ValueError, match="lora:"):
            extract_lora_tags(bad)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "char.safetensors").write_bytes(b"x")
    (tmp_path / "style.safetensors").write_bytes(b"x")
    assert resolve_lora("style", tmp_path) == tmp_path / "style.safetensors"
    assert resolve_lora("char", tmp_path) == tmp_path / "sub" / "char.safetensors"
    assert resolve_lora("sub/char.safetensors", tmp_path) == tmp_path / "sub" / "char.safetensors"
    with pytest.raises(FileNotFoundError, match="ghost"):
        resolve_lora("ghost", tmp_path)
    clean, loras = loras_from_prompt("x <lora:char:0.5>", tmp_path)
    assert clean == "x " and loras == [Lora(tmp_path / "sub" / "char.safetensors", 0.5, 0.5)]


# -------------------------------------------------------------------------------------------- embeddings
def _vectors_of(model, enc: int, words: list[str]) -> torch.Tensor:
    e = model.text_encoders[enc]
    ids = [e.spec.word_tokens(w)[0] for w in words]
    return getattr(e.model, "text_model", e.model).embeddings.token_embedding.weight[ids].detach().clone()


def test_embeddings_are_the_vectors_of_their_tokens(sd1, tmp_path):
    d = tmp_path / "emb"
    d.mkdir()
    save_file({"emb_params": _vectors_of(sd1, 0, ["dog"])[0].clone()}, str(d / "one.safetensors"))
    save_file({"emb_params": _vectors_of(sd1, 0, ["dog", "house"])}, str(d / "two.safetensors"))
    lib = EmbeddingLibrary(d)

    def enc(text, emb=lib):
        return sd1.encode_prompt(text, embeddings=emb)[0][0]

    assert torch.equal(enc("a embedding:one cat"), enc("a dog cat"))
    assert torch.equal(enc("a embedding:two.safetensors cat"), enc("a dog house cat"))
    assert torch.equal(enc("a (embedding:two:1.3) cat"), enc("a (dog house:1.3) cat"))
    assert torch.equal(enc("a embedding:one, cat"), enc("a dog , cat"))
    # only the embedding's token rows differ from a neighbouring word, and only inside the model's input
    seen = []
    tok = sd1.text_encoders[0].model.embeddings.token_embedding
    h = tok.register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
    try:
        enc("a embedding:two cat")
        enc("a cat cat cat")
    finally:
        h.remove()
    diff = (seen[0] - seen[1]).abs().amax(dim=-1)[0]
    assert diff[2] > 0 and diff[3] > 0 and diff[[0, 1] + list(range(4, 77))].max() == 0
    with pytest.warns(UserWarning, match="does not exist"):
        assert torch.equal(enc("a embedding:ghost cat"), enc("a cat"))
    with pytest.warns(UserWarning, match="no embeddings directory"):
        enc("a embedding:one cat", None)
    torch.save({"string_to_param": {"*": _vectors_of(sd1, 0, ["dog"])}}, d / "a1111.pt")
    with pytest.raises(PickleNotAllowedError, match="a1111.pt"):
        enc("embedding:a1111")
    assert torch.equal(sd1.encode_prompt("a embedding:a1111 cat", embeddings=EmbeddingLibrary(d, allow_pickle=True))
                       [0][0], enc("a dog cat"))


def test_sdxl_embeddings_per_encoder(sdxl, tmp_path):
    d = tmp_path / "xl"
    d.mkdir()
    save_file({"clip_l": _vectors_of(sdxl, 0, ["dog", "house"]), "clip_g": _vectors_of(sdxl, 1, ["dog", "house"])},
              str(d / "xl.safetensors"))
    lib = EmbeddingLibrary(d)
    a = sdxl.encode_prompt("a embedding:xl cat", embeddings=lib)
    b = sdxl.encode_prompt("a dog house cat")
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_per_pass_loras_metadata_and_from(files, sd1, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from twosamplers.cli import main
    from twosamplers.job.imageio import load_image, read_settings

    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    loras = tmp_path / "loras"
    loras.mkdir()
    save(loras, "style.safetensors", make_lora(sd1, "kohya", "lora", seed=1, every=2)[0])
    save(loras, "char.safetensors", make_lora(sd1, "comfy", "loha", seed=2, every=3)[0])
    emb = tmp_path / "emb"
    emb.mkdir()
    save_file({"emb_params": _vectors_of(sd1, 0, ["dog"])}, str(emb / "pet.safetensors"))
    common = ["generate", "--model", files["sd1"], "--mask", tmp_path / "mask.png", "--width", 64, "--height", 64,
              "--steps", 2, "--cfg", 4, "--device", "cpu", "-q", "--json"]

    def run(*extra):
        code = main([str(a) for a in common + list(extra)])
        out, err = capsys.readouterr()
        return code, out, err

    out1 = tmp_path / "plain.png"
    assert run("--base-prompt", "grass", "--mask-prompt", "a cat", "-o", out1, "--save-latent",
               tmp_path / "plain.latent")[0] == 0
    out2 = tmp_path / "lora.png"
    code, stdout, err = run("--base-prompt", "grass", "--mask-prompt", "a embedding:pet <lora:char:0.8:0.5>",
                            "--mask-lora", "style:0.6", "--lora-dir", loras, "--embeddings", emb, "-o", out2,
                            "--save-latent", tmp_path / "lora.latent")
    assert code == 0, err
    s = json.loads(stdout)["settings"]
    assert s["base_loras"] == []
    assert [(r["name"], r["strength_model"], r["strength_clip"], r["source"]) for r in s["mask_loras"]] == [
        ("style", 0.6, 0.6, "flag"), ("char", 0.8, 0.5, "tag")]
    assert all(len(r["sha256"]) == 64 for r in s["mask_loras"])
    from twosamplers import load_latent

    a, b = (load_latent(tmp_path / f"{n}.latent")["samples"] for n in ("plain", "lora"))
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 2:6] = False
    # per-pass isolation through the CLI: outside the mask the base pass alone decides
    assert torch.equal(a[..., outside], b[..., outside]) and not torch.equal(a[..., ~outside], b[..., ~outside])
    b = load_image(out2)
    assert read_settings(out2)[0]["mask_loras"] == s["mask_loras"]
    # --from reproduces (LoRAs and embeddings found again and checked)
    again = tmp_path / "again.png"
    code, _, err = run("--from", out2, "-o", again)
    assert code == 0, err
    assert torch.equal(load_image(again), b)
    # new LoRA flags replace the recorded ones (no complaint about the replaced file)
    code, stdout, err = run("--from", out2, "--mask-lora", "style:0.3", "-o", tmp_path / "override.png")
    assert code == 0, err
    assert [r["strength_model"] for r in json.loads(stdout)["settings"]["mask_loras"]] == [0.3, 0.8]
    # a changed file: reproduced with a clear warning; a missing one: one clear error, nothing written
    save(loras, "style.safetensors", make_lora(sd1, "kohya", "lora", seed=9, every=2)[0])
    with pytest.warns(UserWarning, match="style.*not the file this job was made with"):
        code, _, err = run("--from", out2, "-o", tmp_path / "changed.png")
    assert code == 0
    (loras / "char.safetensors").unlink()
    code, _, err = run("--from", out2, "-o", tmp_path / "missing.png")
    assert code == 2 and "char" in err and "not found" in err and not (tmp_path / "missing.png").exists()
    # bad input before any sampling
    xl = save(tmp_path, "xl.safetensors", make_lora_xl_like(sd1))
    code, _, err = run("--base-prompt", "g", "--mask-prompt", "c", "--lora", f"{xl}:1", "-o", tmp_path / "x.png")
    assert code == 2 and "xl.safetensors" in err and not (tmp_path / "x.png").exists()
    code, _, err = run("--base-prompt", "g", "--mask-prompt", "c", "--lora", f"{xl}:nan", "-o", tmp_path / "x.png")
    assert code == 2 and "finite" in err
    code = main(["generate", "--model", "textures", "--mask", str(tmp_path / "mask.png"), "--base-prompt", "grass",
                 "--mask-prompt", "brick", "--lora", f"{xl}:1", "-o", str(tmp_path / "t.png"), "-q"])
    assert code == 2 and "Stable Diffusion" in capsys.readouterr().err


def make_lora_xl_like(model) -> dict:
    """A LoRA whose layer names exist in SD1 but whose shapes are another model's (an SDXL LoRA on SD1.5)."""
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    return {name + ".lora_down.weight": torch.randn(4, 2048), name + ".lora_up.weight": torch.randn(640, 4)}


def test_interleaved_regions_switch_loras_every_step(sd1, tmp_path):
    """Regional mode alternates base and region calls on one network, patching around each: the result equals
    the same run with the region on a separate, permanently merged copy of the network."""
    import copy

    from twosamplers import SamplerSettings, regional_sample

    sd, _ = make_lora(sd1, "kohya", "lora", every=2, clip=False)
    path = save(tmp_path, "region.safetensors", sd)
    lm = with_loras(sd1, [Lora(path, 1.2)])
    merged = copy.deepcopy(sd1)
    f = load_lora(merged, path)
    ctx = patched(merged, [(f, 1.2, 1.0)])
    ctx.__enter__()  # left patched: a merged copy
    pos, neg = sd1.encode_prompt("grass"), sd1.encode_prompt("")
    lat = {"samples": torch.zeros(1, 4, 8, 8)}
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0
    before = snapshot(sd1)
    base = SamplerSettings(sd1, pos, neg, seed=3, steps=3, cfg=5.0)
    out = {}
    for name, model in (("lora", lm), ("merged", merged)):
        region = SamplerSettings(model, pos, neg, seed=4, steps=3, cfg=5.0, sampler_name="dpmpp_2m")
        out[name] = regional_sample(lat, base, [(mask, region)], overlap_factor=0, disable_pbar=True)["samples"]
    assert torch.equal(out["lora"], out["merged"])
    assert_same_bits(snapshot(sd1), before)


def test_a_pass_patches_once_and_files_are_read_once(sd1, tmp_path, monkeypatch):
    import twosamplers.models.lora as L

    sd, _ = make_lora(sd1, "kohya", "lora", every=3)
    path = save(tmp_path, "once.safetensors", sd)
    a = with_loras(sd1, [Lora(path, 1.0)])
    b = with_loras(sd1, [Lora(path, 0.5)])
    assert a.loras[0][0] is b.loras[0][0]  # the file was read and mapped once
    applied = []
    real = L._apply
    monkeypatch.setattr(L, "_apply", lambda root, plan: applied.append(1) or real(root, plan))
    pos, neg = sd1.encode_prompt("grass"), sd1.encode_prompt("")
    common_ksampler(a, 1, 4, 5.0, "euler", "normal", pos, neg, {"samples": torch.zeros(1, 4, 8, 8)},
                    disable_pbar=True)
    assert len(applied) == 1  # one patch for the whole 4-step pass, not one per UNet call
    save(tmp_path, "once.safetensors", make_lora(sd1, "kohya", "lora", every=3, seed=5)[0])
    assert with_loras(sd1, [Lora(path, 1.0)]).loras[0][0] is not a.loras[0][0]  # changed on disk: read again


@pytest.mark.parametrize("mode", ["two-pass", "regional"])
def test_sampler_settings_loras_field(sd1, tmp_path, mode):
    """SamplerSettings(..., loras=[...]) (a Pass field) samples like a pass on model.with_loras(...)."""
    from twosamplers import SamplerSettings, two_samplers_for_mask

    sd, _ = make_lora(sd1, "kohya", "lora", every=2)
    path = save(tmp_path, "field.safetensors", sd)
    pos, neg = sd1.encode_prompt("grass"), sd1.encode_prompt("")
    lat = {"samples": torch.zeros(1, 4, 8, 8)}
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    base = SamplerSettings(sd1, pos, neg, seed=1, steps=2, cfg=5.0)
    via_field = SamplerSettings(sd1, pos, neg, seed=2, steps=2, cfg=5.0, loras=[Lora(path, 0.7)])
    assert isinstance(via_field.net, LoraModel) and via_field.model is sd1
    via_model = SamplerSettings(sd1.with_loras([Lora(path, 0.7)]), pos, neg, seed=2, steps=2, cfg=5.0)
    kw = {"differential": True} if mode == "two-pass" else {"overlap_factor": 0}
    a = two_samplers_for_mask(lat, mask, base, via_field, mode=mode, disable_pbar=True, **kw)["samples"]
    b = two_samplers_for_mask(lat, mask, base, via_model, mode=mode, disable_pbar=True, **kw)["samples"]
    plain = two_samplers_for_mask(lat, mask, base, SamplerSettings(sd1, pos, neg, seed=2, steps=2, cfg=5.0),
                                  mode=mode, disable_pbar=True, **kw)["samples"]
    assert torch.equal(a, b) and not torch.equal(a, plain)
    with pytest.raises(ValueError, match=r"loras: .*not found"):
        SamplerSettings(sd1, pos, neg, loras=[Lora(tmp_path / "nope.safetensors")])
