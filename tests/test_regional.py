"""TwoAdvancedSamplersForMask / RegionalSampler: the Impact Pack reference cases (the real upstream code's output),
upstream's quirks, the opt-in fixes, no mutation and clear errors."""

import json
from pathlib import Path

import pytest
import torch
from conftest import PARITY_DIR, ToyNet, assert_close

import twosamplers as ts
from twosamplers.models import NetworkModel
from twosamplers.nodes.regional import CombineRegionalPrompts, second_seed

REGIONAL_DIR = PARITY_DIR / "regional"


def _cases():
    path = Path(REGIONAL_DIR / "manifest.json")
    if not path.is_file():
        return []
    M = json.loads(path.read_text())
    return sorted(k for k, v in M.items() if k.startswith("regional/") and isinstance(v, dict) and v.get("node"))


@pytest.fixture(scope="module")
def regional():
    if not (REGIONAL_DIR / "reference.safetensors").is_file():
        pytest.skip(f"regional reference not found at {REGIONAL_DIR}")
    from safetensors.torch import load_file

    manifest = json.loads((REGIONAL_DIR / "manifest.json").read_text())
    return load_file(str(REGIONAL_DIR / "reference.safetensors")), manifest


@pytest.fixture(scope="module")
def model():
    return NetworkModel(ToyNet())


def adv(model, T, spec):
    return ts.KSamplerAdvancedWrapper(model, spec["cfg"], spec["sampler_name"], spec["scheduler"],
                                      [[T[spec["positive"]], {}]], [[T[spec["negative"]], {}]],
                                      sigma_factor=spec["sigma_factor"])


def run_case(model, T, c, latent):
    base = adv(model, T, c["base_sampler"])
    if "mask_sampler" in c:
        return ts.TwoAdvancedSamplersForMask().doit(c["seed"], c["steps"], c["denoise"], latent, base,
                                                    adv(model, T, c["mask_sampler"]), T[c["mask"]],
                                                    c["overlap_factor"], disable_pbar=True)[0], None
    rps = []
    for r in c["regions"]:
        rps += ts.RegionalPrompt().doit(T[r["mask"]], adv(model, T, r["sampler"]))[0]
    out = ts.RegionalSampler().doit(c["seed"], c["seed_2nd"], c["seed_2nd_mode"], c["steps"], c["base_only_steps"],
                                    c["denoise"], latent, base, rps, c["overlap_factor"], c["restore_latent"],
                                    c["additional_mode"], c["additional_sampler"], c["additional_sigma_ratio"],
                                    disable_pbar=True)[0]
    return out, rps


@pytest.mark.parametrize("key", _cases())
def test_matches_impact_pack(regional, model, key):
    T, M = regional
    c = M[key]
    latent = {"samples": T[c["latent"]].clone()}
    if c.get("batch_index") is not None:
        latent["batch_index"] = list(c["batch_index"])
    before = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in latent.items()}
    masks_before = {k: T[k].clone() for k in c["mask_keys"]}
    out, rps = run_case(model, T, c, latent)
    assert_close(out["samples"], T[key])
    assert set(out) == set(c["out_keys"])
    # nothing mutated
    assert set(latent) == set(before) and torch.equal(latent["samples"], before["samples"])
    assert all(torch.equal(T[k], v) for k, v in masks_before.items())
    # the region masks (diagnostics of the real run)
    items = rps if rps is not None else ts.RegionalPrompt().doit(T[c["mask"]], adv(model, T, c["mask_sampler"]))[0]
    for j, rp in enumerate(items, 1):
        ref = T[c["diag_keys"][f"region_mask{j}"]]
        assert torch.equal(rp.get_mask_erosion(c["overlap_factor"]).reshape(ref.shape), ref)


def test_reference_has_the_regional_cases():
    if not _cases():
        pytest.skip("regional reference not present")
    names = _cases()
    assert len(names) >= 4
    assert any("/ta" in n for n in names) and any("/rs" in n for n in names)  # both node types


# ------------------------------------------------------------------------------------------------ own cases
H = W = 8


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(21)
    return [[[torch.randn(1, 3, 8, generator=g), {}]] for _ in range(4)]


def sampler(model, cond, name="euler", scheduler="normal", cfg=5.0, which=0, **kw):
    return ts.KSamplerAdvancedWrapper(model, cfg, name, scheduler, cond[which], cond[which + 1], **kw)


@pytest.fixture
def latent():
    return {"samples": torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(4))}


def box(top, left, bottom, right, h=H, w=W):
    m = torch.zeros(h, w)
    m[top:bottom, left:right] = 1.0
    return m


def rs(latent, base, regions, seed=1, seed_2nd=0, mode="ignore", steps=4, bos=1, denoise=1.0, overlap=3,
       restore=True, add="ratio between", **kw):
    return ts.RegionalSampler().doit(seed, seed_2nd, mode, steps, bos, denoise, latent, base, regions, overlap, restore,
                                     add, "AUTO", 0.3, disable_pbar=True, **kw)[0]


def test_two_advanced_is_regional_sampler_with_one_region(model, cond, latent):
    base, msk, m = sampler(model, cond), sampler(model, cond, "dpmpp_2m", "karras", which=2), box(2, 2, 6, 5)
    a = ts.TwoAdvancedSamplersForMask().doit(3, 4, 1.0, latent, base, msk, m, 3, disable_pbar=True)[0]
    b = rs(latent, base, ts.RegionalPrompt().doit(m, msk)[0], seed=3, bos=1, overlap=3)
    assert torch.equal(a["samples"], b["samples"])


def test_combine_and_tuple_regions(model, cond, latent):
    base = sampler(model, cond)
    r1 = ts.RegionalPrompt().doit(box(0, 0, 4, 4), sampler(model, cond, which=2))[0]
    r2 = ts.RegionalPrompt().doit(box(4, 4, 8, 8), sampler(model, cond, "heun", which=1))[0]
    combined = CombineRegionalPrompts().doit(regional_prompts1=r1, regional_prompts2=r2)[0]
    a = rs(latent, base, combined)
    b = rs(latent, base, [(r1[0].mask, r1[0].sampler), (r2[0].mask, r2[0].sampler)])
    assert torch.equal(a["samples"], b["samples"])


def test_same_seed_identical_and_region_prompt_changes_region(model, cond, latent):
    base = sampler(model, cond)
    m = box(2, 2, 5, 5)
    a = rs(latent, base, [(m, sampler(model, cond, "euler_ancestral", which=2))], overlap=0)
    b = rs(latent, base, [(m, sampler(model, cond, "euler_ancestral", which=2))], overlap=0)
    assert torch.equal(a["samples"], b["samples"])
    c = rs(latent, base, [(m, sampler(model, cond, "euler_ancestral", which=1))], overlap=0)
    inside = (m > 0).expand_as(a["samples"])
    # the regions denoise together, so the base area next to a region feels it through the network;
    # the region itself changes most
    assert float((a["samples"] - c["samples"])[inside].abs().mean()) > \
        10 * float((a["samples"] - c["samples"])[~inside].abs().mean())


def test_seed_2nd_modes():
    assert second_seed(5, 3, "ignore") == 5
    assert second_seed(5, 3, "seed+seed_2nd") == 8
    assert second_seed(5, 3, "seed-seed_2nd") == 2
    assert second_seed(3, 5, "seed-seed_2nd") == 2**50 - 2
    assert second_seed(2**50, 7, "seed+seed_2nd") == 7
    for mode in ("fixed", "increment", "decrement", "randomize"):
        assert second_seed(5, 3, mode) == 3


def test_noise_is_readded_every_step_upstream_and_once_with_the_fix(model, cond, latent):
    base, reg = sampler(model, cond), [(box(2, 2, 5, 5), sampler(model, cond, which=2))]
    up = rs(latent, base, reg, bos=0)["samples"]
    fixed = rs(latent, base, reg, bos=0, noise_once=True)["samples"]
    ignore = rs(latent, base, reg, bos=1)["samples"]
    ignore_fixed = rs(latent, base, reg, bos=1, noise_once=True)["samples"]
    assert torch.equal(ignore, ignore_fixed)  # ignore mode with base-only steps never re-adds noise
    assert float((up - fixed).abs().max()) > 1.0
    # the fix lands where the noise should be: same scale as the leftover-noise run
    assert float(fixed.abs().mean()) < float(up.abs().mean())


def test_soft_mask_hole_and_fix(model, cond, latent):
    soft = torch.zeros(H, W)
    soft[2:6, 2:6] = 0.4  # 0 < m <= 0.5: in no region (round) and not in the base area (ceil) upstream
    base, reg = sampler(model, cond), [(soft, sampler(model, cond, which=2))]
    up = rs(latent, base, reg, overlap=0, bos=1, add="DISABLE")["samples"]
    fixed = rs(latent, base, reg, overlap=0, bos=1, add="DISABLE", fix_soft_masks=True)["samples"]
    first_step = base.sample_advanced(True, 1, 4, latent, 0, 1, True)["samples"]  # the base-only stage
    hole = (soft > 0).expand_as(up)
    scale = float(first_step.abs().max())
    # upstream: the grey pixels keep the first step's noisy state to the end
    assert float((up - first_step)[hole].abs().max()) <= 1e-5 * scale
    # fixed: they are denoised by the region sampler like the rest
    assert float((fixed - first_step)[hole].abs().min()) > 1e-3


def test_non_square_masks_keep_orientation(model, cond):
    g = torch.Generator().manual_seed(2)
    latent = {"samples": torch.randn(1, 4, 8, 6, generator=g)}
    m = torch.zeros(64, 48)
    m[:16, :] = 1.0  # the top quarter
    rp = ts.RegionalPrompt().doit(m, sampler(model, cond, which=2))[0]
    assert rp[0].get_mask_erosion(3).shape == (1, 1, 64, 48)
    a = rs(latent, sampler(model, cond), rp, overlap=3)["samples"]
    b = rs(latent, sampler(model, cond), [(torch.zeros(64, 48), rp[0].sampler)], overlap=3)["samples"]
    changed = (a - b).abs().amax(dim=(0, 1)) > 1e-4
    assert bool(changed[:2].all()) and not bool(changed[4:].any())


def test_batch_masks_one_per_image(model, cond):
    g = torch.Generator().manual_seed(3)
    latent = {"samples": torch.randn(2, 4, H, W, generator=g)}
    masks = torch.stack([box(0, 0, 4, 8), box(0, 4, 8, 8)])
    reg = sampler(model, cond, which=2)
    out = rs(latent, sampler(model, cond), [(masks, reg)])["samples"]
    single = [rs({"samples": latent["samples"][i:i + 1], "batch_index": [i]}, sampler(model, cond), [(masks[i], reg)])
              ["samples"] for i in range(2)]
    assert torch.allclose(out, torch.cat(single), rtol=1e-5, atol=1e-4)


def test_restore_latent_false_and_denoise(model, cond, latent):
    base, reg = sampler(model, cond), [(box(2, 2, 5, 5), sampler(model, cond, "uni_pc", which=2))]
    a = rs(latent, base, reg, restore=False, denoise=0.5)
    assert set(a) == {"samples"} and torch.isfinite(a["samples"]).all()
    zero = rs(latent, base, reg, denoise=0.0)
    assert torch.equal(zero["samples"], latent["samples"])


def test_errors(model, cond, latent):
    base = sampler(model, cond)
    with pytest.raises(ValueError, match="regional_prompts is empty"):
        rs(latent, base, [])
    with pytest.raises(TypeError, match="base_sampler must be a KSAMPLER_ADVANCED"):
        rs(latent, ts.KSamplerWrapper(model, 0, 4, 5.0, "euler", "normal", cond[0], cond[1]), [(box(0, 0, 2, 2), base)])
    with pytest.raises(TypeError, match=r"regional_prompts\[0\].*advanced_sampler must be a KSAMPLER_ADVANCED"):
        rs(latent, base, [(box(0, 0, 2, 2), "euler")])
    with pytest.raises(ValueError, match=r"regional_prompts\[0\] mask has batch 3"):
        rs(latent, base, [(torch.zeros(3, H, W), base)])
    with pytest.raises(ValueError, match="NaN"):
        rs(latent, base, [(torch.full((H, W), float("nan")), base)])
    with pytest.raises(ValueError, match="seed_2nd_mode"):
        rs(latent, base, [(box(0, 0, 2, 2), base)], mode="double")
    with pytest.raises(TypeError, match="mask_sampler must be a KSAMPLER_ADVANCED"):
        ts.TwoAdvancedSamplersForMask().doit(0, 4, 1.0, latent, base, object(), box(0, 0, 2, 2), 3)


class SpyAdvanced(ts.KSamplerAdvancedWrapper):
    """A KSAMPLER_ADVANCED that records every sample_advanced call (add_noise, start, end)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = []

    def sample_trusted(self, add_noise, seed, steps, latent_image, start_at_step, end_at_step, leftover, **kw):
        self.calls.append((bool(add_noise), start_at_step, end_at_step))
        return super().sample_trusted(add_noise, seed, steps, latent_image, start_at_step, end_at_step, leftover,
                                      **kw)


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_3m_sde_gpu", "dpmpp_sde", "uni_pc"])
def test_recovery_pass_covers_the_same_steps_as_the_main_call(model, cond, latent, name):
    """Upstream's 2-step "compensate" is unreachable: every recovery call runs exactly the main call's steps."""
    s = sampler(model, cond, name, "karras")
    totals = []
    lat = dict(latent, noise_mask=box(2, 2, 6, 6))
    s.sample_advanced(True, 5, 8, lat, 4, 5, True, recovery_mode="ratio between", recovery_sampler="AUTO",
                      callback=lambda step, x0, x, total: totals.append(total), disable_pbar=True)
    assert totals == [1, 1]  # the main step 4 -> 5, then the recovery step 4 -> 5 (was 2 -> 5 for 2m/3m SDE)


@pytest.mark.parametrize("bos,mode", [(0, "ignore"), (1, "fixed")])
def test_add_noise_only_for_the_first_per_step_base_call(model, cond, latent, bos, mode):
    """Upstream sets add_noise False after the first per-step iteration (its noise tensor is still re-added)."""
    base = SpyAdvanced(model, 5.0, "uni_pc", "normal", cond[0], cond[1])
    rs(latent, base, [(box(2, 2, 5, 5), sampler(model, cond, which=2))], bos=bos, mode=mode, steps=4)
    per_step = [c for c in base.calls if c[2] == c[1] + 1 and (bos == 0 or c[1] >= bos)]
    assert [c[0] for c in per_step] == [True, False, False, False][: len(per_step)] and len(per_step) == 4 - bos


def test_add_noise_reaches_the_recovery_call_even_with_a_noise_tensor(model, cond, latent):
    """With a noise tensor given, add_noise only decides the recovery call's noise (seeded draw vs zeros)."""
    base = sampler(model, cond, "uni_pc", "karras")
    lat = dict(latent, noise_mask=box(0, 0, 4, 8))
    noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(9))
    kw = dict(recovery_mode="ratio between", recovery_sampler="AUTO", noise=noise, disable_pbar=True)
    off = base.sample_advanced(False, 5, 6, lat, 3, 4, True, **kw)["samples"]
    on = base.sample_advanced(True, 5, 6, lat, 3, 4, True, **kw)["samples"]
    assert float((on - off).abs().max()) > 1e-3


def test_restore_latent_off_makes_no_closing_base_call(model, cond, latent):
    base = SpyAdvanced(model, 5.0, "dpmpp_2m_sde", "karras", cond[0], cond[1])
    reg = [(box(2, 2, 5, 5), sampler(model, cond, which=2))]
    a = rs(latent, base, reg, restore=False, steps=4, bos=1)
    assert [c[1:] for c in base.calls] == [(0, 1), (1, 2), (2, 3), (3, 4)]  # no call from step 4 (a no-op)
    assert torch.isfinite(a["samples"]).all()
