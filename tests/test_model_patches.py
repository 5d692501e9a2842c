"""Round 2 of issue 23 beyond the ComfyUI parity cases (test_model_nodes_parity.py): merge arithmetic weight by
weight, CheckpointSave (layout, round trip, atomic and deferred writes, refusals), CLIP merges, hypernetwork files,
diff ControlNets, the "uncond gets the positive's ControlNet / boxes" rule, GLIGEN box inputs, image prompts on
models that ignore them, and the run API's allow_pickle."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from twosamplers.conditioning import CondEntry, share_with_uncond  # noqa: E402
from twosamplers.models.merge import block_ratio, effective_state  # noqa: E402
from twosamplers.models.sd import load_sd  # noqa: E402
from twosamplers.nodes.folders import Folders  # noqa: E402
from twosamplers.nodes.handles import ClipHandle, ModelHandle, VaeHandle  # noqa: E402
from twosamplers.nodes.registry import NODES  # noqa: E402
from twosamplers.workflow import WorkflowError, run  # noqa: E402


@pytest.fixture(scope="module")
def two(tiny_sd_files):
    """Two different SD1.x models (the second's weights scaled) and the tiny SDXL."""
    a = load_sd(tiny_sd_files["sd1_file"], device="cpu", cache=False)
    b = load_sd(tiny_sd_files["sd1_file"], device="cpu", cache=False)
    with torch.no_grad():
        for p in list(b.unet.parameters()) + list(b.text_encoders[0].model.parameters()):
            p.mul_(1.25).add_(0.01)
    xl = load_sd(tiny_sd_files["sdxl_file"], device="cpu", cache=False)
    return a, b, xl


def _weights_while_sampling(model):
    with model.sampling_session():
        return {k: v.clone() for k, v in model.base.unet.state_dict().items()} if hasattr(model, "base") else None


def test_merge_simple_is_ratio_w1_plus_rest_w2_and_restores(two):
    a, b, _ = two
    before = {k: v.clone() for k, v in a.unet.state_dict().items()}
    (m,) = NODES["ModelMergeSimple"]().merge(ModelHandle(a), ModelHandle(b), 0.3)
    merged = effective_state(m, "unet")
    for k, w in b.unet.state_dict().items():
        want = before[k] * 0.3 + 0.7 * w  # ComfyUI's order: W *= ratio, then W += (1 - ratio) * W2
        assert torch.equal(merged[k], want), k
    seen = _weights_while_sampling(m)
    assert all(torch.equal(seen[k], merged[k]) for k in merged)
    assert all(torch.equal(before[k], v) for k, v in a.unet.state_dict().items())  # restored bit for bit


def test_merge_add_subtract_and_blocks(two):
    a, b, _ = two
    wa, wb = a.unet.state_dict(), b.unet.state_dict()
    (add,) = NODES["ModelMergeAdd"]().merge(ModelHandle(a), ModelHandle(b))
    (sub,) = NODES["ModelMergeSubtract"]().merge(ModelHandle(a), ModelHandle(b), 0.5)
    s_add, s_sub = effective_state(add, "unet"), effective_state(sub, "unet")
    k = "conv_in.weight"
    assert torch.equal(s_add[k], wa[k] + wb[k])
    assert torch.equal(s_sub[k], wa[k] * 0.5 + -0.5 * wb[k])
    (blocks,) = NODES["ModelMergeBlocks"]().merge(ModelHandle(a), ModelHandle(b), input=0.0, middle=1.0, out=0.5)
    s = effective_state(blocks, "unet")
    assert torch.equal(s["conv_in.weight"], wb["conv_in.weight"])  # input_blocks.0.0: ratio 0 -> model2
    mid = next(n for n in wa if n.startswith("mid_block."))
    assert torch.equal(s[mid], wa[mid])  # middle 1.0 -> model1 unchanged
    assert torch.equal(s["conv_out.weight"], wa["conv_out.weight"] * 0.5 + 0.5 * wb["conv_out.weight"])  # "out."
    tv = "time_embedding.linear_1.weight"  # no block: the first ratio (input)
    assert torch.equal(s[tv], wb[tv])


def test_block_ratio_takes_the_longest_prefix():
    pick = block_ratio({"input": 0.1, "middle": 0.2, "out": 0.3, "output_blocks.1": 0.4})
    assert [pick(n) for n in ("input_blocks.4.1.x", "middle_block.0.x", "out.2.weight", "output_blocks.1.0.x",
                              "output_blocks.2.0.x", "time_embed.0.weight")] == [0.1, 0.2, 0.3, 0.4, 0.3, 0.1]


def test_merge_of_another_family_is_refused(two):
    a, _, xl = two
    with pytest.raises(ValueError, match="cannot merge"):
        NODES["ModelMergeSimple"]().merge(ModelHandle(a), ModelHandle(xl), 0.5)


def test_merge_of_a_model_with_itself_through_a_lora(two, tmp_path):
    """model2 shares model1's network: its weights are read before model1's are written."""
    from test_lora import make_lora

    from twosamplers.models.lora import Lora

    a = two[0]
    save_file(make_lora(a, "kohya", "lora", seed=3, every=2)[0], str(tmp_path / "l.safetensors"))
    lora = a.with_loras([Lora(tmp_path / "l.safetensors", 1.0, 1.0)])
    want_lora = effective_state(lora, "unet")
    (m,) = NODES["ModelMergeSimple"]().merge(ModelHandle(a), lora, 0.25)
    got = _weights_while_sampling(m)
    base = a.unet.state_dict()
    for k in base:
        assert torch.allclose(got[k], base[k] * 0.25 + 0.75 * want_lora[k], atol=1e-6), k


def test_clip_merge(two):
    a, b, _ = two
    (c,) = NODES["CLIPMergeSimple"]().merge(ClipHandle(a), ClipHandle(b), 0.4)
    got = effective_state(c, "clip0")
    wa, wb = a.text_encoders[0].model.state_dict(), b.text_encoders[0].model.state_dict()
    k = next(n for n in wa if n.endswith("final_layer_norm.weight"))
    assert torch.equal(got[k], wa[k] * 0.4 + 0.6 * wb[k])
    plain = a.encode_prompt("a red barn")[0][0]
    merged = c.encode_prompt("a red barn")[0][0]
    assert not torch.equal(plain, merged) and torch.equal(plain, a.encode_prompt("a red barn")[0][0])


# ------------------------------------------------------------------------------------------ CheckpointSave
def test_checkpoint_save_round_trip(two, tmp_path):
    a, b, _ = two
    (m,) = NODES["ModelMergeSimple"]().merge(ModelHandle(a), ModelHandle(b), 0.3)
    (c,) = NODES["CLIPMergeSimple"]().merge(ClipHandle(a), ClipHandle(b), 0.3)
    node = NODES["CheckpointSave"](Folders(output_dir=tmp_path))
    node.save(m, c, VaeHandle(a), "checkpoints/merged", prompt={"1": {"class_type": "x", "inputs": {}}})
    node.save(m, c, VaeHandle(a), "checkpoints/merged")
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["merged_00001_.safetensors", "merged_00002_.safetensors"]
    path = tmp_path / "checkpoints" / "merged_00001_.safetensors"
    keys = load_file(str(path))
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    assert any(k.startswith("first_stage_model.decoder.") for k in keys)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["prompt"]) == {"1": {"class_type": "x", "inputs": {}}}
    assert meta["modelspec.predict_key"] == "epsilon"
    back = load_sd(path, device="cpu", cache=False)
    want = effective_state(m, "unet")
    assert all(torch.equal(v, want[k]) for k, v in back.unet.state_dict().items())
    want_c = effective_state(c, "clip0")
    got_c = back.text_encoders[0].model.state_dict()
    assert all(torch.equal(got_c[k], want_c[k]) for k in want_c if not k.endswith("position_ids"))
    assert all(torch.equal(v, a.vae.state_dict()[k]) for k, v in back.vae.state_dict().items())


def test_checkpoint_save_sdxl_and_refusals(two, tmp_path):
    a, _, xl = two
    node = NODES["CheckpointSave"](Folders(output_dir=tmp_path))
    node.save(ModelHandle(xl), ClipHandle(xl), VaeHandle(xl), "xl")
    path = tmp_path / "xl_00001_.safetensors"
    back = load_sd(path, device="cpu", cache=False)
    assert back.family == "sdxl"
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    for k, v in xl.text_encoders[1].model.state_dict().items():
        if not k.endswith("position_ids"):
            assert torch.equal(back.text_encoders[1].model.state_dict()[k], v), k
    with pytest.raises(ValueError, match="family"):
        node.save(ModelHandle(a), ClipHandle(xl), VaeHandle(a), "mixed")
    with pytest.raises(ValueError, match="inside the output folder"):
        node.save(ModelHandle(a), ClipHandle(a), VaeHandle(a), "../outside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xl_00001_.safetensors"]


def test_checkpoint_save_in_a_failing_workflow_writes_nothing(tiny_models_dir, tmp_path):
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
          "2": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["1", 0], "ratio": 0.5}},
          "3": {"class_type": "CheckpointSave", "inputs": {"model": ["2", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                            "filename_prefix": "checkpoints/ComfyUI"}},
          "4": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
          "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}}
    with pytest.raises(WorkflowError):
        run(wf, tiny_models_dir, output_dir=tmp_path / "out", input_dir=tmp_path, device="cpu", dtype="fp32")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.safetensors"))
    del wf["4"], wf["5"]
    out = run(wf, tiny_models_dir, output_dir=tmp_path / "out", device="cpu", dtype="fp32")
    files = [f for o in out for f in o["files"]]
    assert [p.rsplit("/", 2)[-2:] for p in map(str, files)] == [["checkpoints", "ComfyUI_00001_.safetensors"]]


# ------------------------------------------------------------------------------------------ hypernetworks
def _hypernet(dims=(32, 64), activation="relu"):
    g = torch.Generator().manual_seed(4)
    out = {d: [{"linear.0.weight": torch.randn(2 * d, d, generator=g) * 0.1, "linear.0.bias": torch.zeros(2 * d),
                "linear.1.weight": torch.randn(d, 2 * d, generator=g) * 0.1, "linear.1.bias": torch.zeros(d)}
               for _ in range(2)] for d in dims}
    out.update(activation_func=activation, is_layer_norm=False, use_dropout=False)
    return out


def test_hypernetwork_files(two, tmp_path):
    from twosamplers.models.hypernetwork import HypernetworkError, load_hypernetwork, with_hypernetwork

    a = two[0]
    torch.save(_hypernet(), str(tmp_path / "h.pt"))
    with pytest.raises(HypernetworkError, match="allow-pickle"):
        load_hypernetwork(tmp_path / "h.pt")
    hn = load_hypernetwork(tmp_path / "h.pt", allow_pickle=True)
    assert sorted(hn.mlps) == [32, 64]
    flat = {f"{d}.{i}.{k}": v for d, pair in _hypernet().items() if isinstance(d, int)
            for i, s in enumerate(pair) for k, v in s.items()}
    save_file(flat, str(tmp_path / "h_flat.pt"), metadata={"activation_func": "relu"})  # safetensors, any suffix
    m1 = with_hypernetwork(ModelHandle(a), tmp_path / "h.pt", 0.7, allow_pickle=True)
    m2 = with_hypernetwork(ModelHandle(a), tmp_path / "h_flat.pt", 0.7)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([3.0])
    plain = a.apply_model(x, s, ctx)
    out1, out2 = m1.apply_model(x, s, ctx), m2.apply_model(x, s, ctx)
    assert torch.equal(out1, out2) and not torch.equal(out1, plain)
    assert torch.equal(a.apply_model(x, s, ctx), plain)  # the hooks are gone
    torch.save(_hypernet(activation="gelu_tanh"), str(tmp_path / "bad.pt"))
    with pytest.raises(HypernetworkError, match="activation"):
        load_hypernetwork(tmp_path / "bad.pt", allow_pickle=True)
    with pytest.raises(ValueError, match="strength"):
        with_hypernetwork(ModelHandle(a), tmp_path / "h_flat.pt", 11.0)


# ------------------------------------------------------------------------------------------ conditioning rules
def _entry(**kw):
    return CondEntry(torch.zeros(1, 2, 4), **kw)


class _Ctl:
    def __init__(self, to_uncond):
        self.apply_to_uncond = to_uncond


def test_uncond_gets_the_positive_controlnet_only_when_it_has_none():
    c1, c2 = _Ctl(True), _Ctl(False)
    pos = [_entry(extras={"control": c1}), _entry(extras={"control": c2})]
    neg = [_entry(), _entry(area=(1, 1, 0, 0))]
    got = share_with_uncond(pos, neg, "control", lambda c: c.apply_to_uncond)
    assert got[0].extras["control"] is c1 and "control" not in got[1].extras and "control" not in neg[0].extras
    has = [_entry(extras={"control": c2})]
    assert share_with_uncond(pos, has, "control", lambda c: c.apply_to_uncond) is has
    two_pos = [_entry(extras={"gligen": "a"}), _entry(extras={"gligen": "b"})]
    assert share_with_uncond(two_pos, [_entry()], "gligen")[0].extras["gligen"] == "b"  # a later one replaces


def test_gligen_box_inputs():
    from twosamplers.models.gligen import MAX_OBJECTS, box_inputs

    e = torch.arange(4.0).reshape(1, 4)
    got = box_inputs([(e, 2, 4, 1, 3)], batch=2, height=8, width=16, key_dim=4)
    assert got["boxes"].shape == (2, MAX_OBJECTS, 4) and got["masks"][0, :2].tolist() == [1.0, 0.0]
    assert got["boxes"][0, 0].tolist() == [3 / 16, 1 / 8, 7 / 16, 3 / 8]
    assert torch.equal(got["positive_embeddings"][1, 0], e[0])
    with pytest.raises(ValueError, match="at most 30"):
        box_inputs([(e, 1, 1, 0, 0)] * 31, 1, 8, 8, 4)


def test_image_prompts_are_ignored_by_sd1_and_checked_for_sdxl(two):
    from twosamplers.models.clip_vision import ClipVisionOutput

    a, _, xl = two
    out = ClipVisionOutput(torch.zeros(1, 1, 8), torch.zeros(1, 1, 8), torch.randn(1, 64))
    item = [{"clip_vision_output": out, "strength": 1.0, "noise_augmentation": 0.0}]
    ex = a.extra_conds({"pooled_output": torch.zeros(1, 64), "unclip_conditioning": item}, latent_image=None,
                       denoise_mask=None, seed=1)
    assert "unclip_conditioning" not in ex and torch.equal(ex["pooled_output"], torch.zeros(1, 64))
    latent = torch.zeros(1, 4, 8, 8)  # SDXL's size values default from the sampled latent (always given there)
    ex = xl.extra_conds({"pooled_output": torch.zeros(1, 64), "unclip_conditioning": item}, latent_image=latent,
                        denoise_mask=None, seed=1)
    assert ex["pooled_output"].shape == (1, 64) and not torch.equal(ex["pooled_output"], torch.zeros(1, 64))
    wrong = [{"clip_vision_output": ClipVisionOutput(out.last_hidden_state, out.penultimate_hidden_states,
                                                    torch.randn(1, 48)), "strength": 1.0, "noise_augmentation": 0.0}]
    with pytest.raises(ValueError, match="64-wide"):
        xl.extra_conds({"pooled_output": torch.zeros(1, 64), "unclip_conditioning": wrong}, latent_image=latent,
                       denoise_mask=None, seed=1)


def test_model_sampling_nodes_refuse_other_families(two):
    a = two[0]
    with pytest.raises(ValueError, match="image-to-image"):
        NODES["ModelSamplingDiscrete"]().patch(ModelHandle(a), "img_to_img", False)
    with pytest.raises(ValueError, match="Playground"):
        NODES["ModelSamplingContinuousEDM"]().patch(ModelHandle(a), "edm_playground_v2.5", 120.0, 0.002)
    (m,) = NODES["ModelSamplingDiscrete"]().patch(ModelHandle(a), "lcm", False)
    ms = m.model_sampling
    assert len(ms.sigmas) == 50 and float(ms.timestep(ms.sigma_max)) == 999.0
    assert float(ms.timestep(ms.sigma_min)) == 19.0
    (z,) = NODES["ModelSamplingDiscrete"]().patch(ModelHandle(a), "v_prediction", True)
    assert 4000 < float(z.model_sampling.sigma_max) < 5000 and a.model_sampling.prediction == "eps"


# ------------------------------------------------------------------------------------------ pickles in a run
def test_run_allow_pickle_opens_pickle_checkpoints(tiny_sd_files, tmp_path):
    sd = load_file(str(tiny_sd_files["sd1_file"]))
    (tmp_path / "m" / "checkpoints").mkdir(parents=True)
    torch.save(sd, str(tmp_path / "m" / "checkpoints" / "old.ckpt"))
    save_file(sd, str(tmp_path / "m" / "checkpoints" / "renamed.ckpt"))  # safetensors content, .ckpt name
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "old.ckpt"}},
          "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
          "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    with pytest.raises((WorkflowError, ValueError), match="allow-pickle"):
        run(wf, tmp_path / "m", output_dir=tmp_path / "o", device="cpu", dtype="fp32")
    assert run(wf, tmp_path / "m", output_dir=tmp_path / "o", device="cpu", dtype="fp32", allow_pickle=True)
    wf["1"]["inputs"]["ckpt_name"] = "renamed.ckpt"
    assert run(wf, tmp_path / "m", output_dir=tmp_path / "o", device="cpu", dtype="fp32")


def test_freeu_patches_the_decoder_only_while_running(two):
    from twosamplers.models.freeu import up_resnets

    a = two[0]
    # tiny UNet: base width 32, so 2x = 64 is patched (b2, s2) and no block is 4x wide
    assert [w for _, w in up_resnets(a.unet)] == [64, 64, 64, 32]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([3.0])
    plain = a.apply_model(x, s, ctx)
    (f1,) = NODES["FreeU"]().patch(ModelHandle(a), 1.1, 1.2, 0.9, 0.2)
    (f2,) = NODES["FreeU_V2"]().patch(ModelHandle(a), 1.3, 1.4, 0.9, 0.2)
    o1, o2 = f1.apply_model(x, s, ctx), f2.apply_model(x, s, ctx)
    assert not torch.equal(o1, plain) and not torch.equal(o1, o2)
    (neutral,) = NODES["FreeU"]().patch(ModelHandle(a), 1.0, 1.0, 1.0, 1.0)
    assert torch.allclose(neutral.apply_model(x, s, ctx), plain, atol=1e-5)
    assert torch.equal(a.apply_model(x, s, ctx), plain)
    assert all(not r._forward_pre_hooks for r, _ in up_resnets(a.unet))


# ------------------------------------------------------------------------------------------ Impact switches
def _switch_wf(inversed: bool, select: int) -> dict:
    wf = {"1": {"class_type": "SolidMask", "inputs": {"value": 0.25, "width": 16, "height": 16}},
          "2": {"class_type": "SolidMask", "inputs": {"value": 0.75, "width": 16, "height": 16}},
          "3": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
          "4": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}}}
    if inversed:
        wf["5"] = {"class_type": "ImpactInversedSwitch", "inputs": {"select": select, "input": ["3", 0]}}
        wf["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "first"}}
        wf["7"] = {"class_type": "ImageInvert", "inputs": {"image": ["5", 1]}}
        wf["8"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "second"}}
    else:
        wf["5"] = {"class_type": "ImpactSwitch", "inputs": {"select": select, "sel_mode": False,
                                                              "input1": ["3", 0], "input2": ["4", 0]}}
        wf["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    return wf


def test_impact_switches(tmp_path):
    out = run(_switch_wf(False, 2), None, output_dir=tmp_path)
    assert float(out[0]["images"].mean()) == 0.75
    with pytest.raises(WorkflowError, match="input3, which is not connected"):
        run(_switch_wf(False, 3), None, output_dir=tmp_path)
    out = run(_switch_wf(True, 2), None, output_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["second_00001_.png"]  # the blocked branch ran nothing and wrote nothing
    assert [o["class_type"] for o in out] == ["SaveImage", "SaveImage"] and "images" not in out[0]
    assert float(out[1]["images"].mean()) == 0.75  # 1 - 0.25


def test_lora_after_clip_set_last_layer_joins_the_same_stack(two, tmp_path):
    """LoraLoader -> CLIPSetLastLayer -> LoraLoader (a common chain): one LoRA stack on the text encoder, at the
    chosen layer; it used to nest two stacks and fail."""
    from test_lora import make_lora

    from twosamplers.models.lora import Lora
    from twosamplers.nodes import LoraLoader as load  # the path-taking class (the registry's looks in loras/)

    a = two[0]
    for i, name in enumerate(("la", "lb")):
        save_file(make_lora(a, "kohya", "lora", seed=5 + i, every=2)[0], str(tmp_path / f"{name}.safetensors"))
    m1, c1 = load().load_lora(ModelHandle(a), ClipHandle(a), str(tmp_path / "la.safetensors"), 1.0, 0.8)
    (c2,) = NODES["CLIPSetLastLayer"]().set_last_layer(c1, -2)
    _m2, c3 = load().load_lora(m1, c2, str(tmp_path / "lb.safetensors"), 1.0, 0.6)
    (cond,) = NODES["CLIPTextEncode"]().encode(c3, "a red barn")
    want = a.with_loras([Lora(tmp_path / "la.safetensors", 1.0, 0.8), Lora(tmp_path / "lb.safetensors", 1.0, 0.6)])
    assert torch.equal(cond[0][0], want.encode_prompt("a red barn", clip_skip=-2)[0][0])
