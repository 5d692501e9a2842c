"""Impact Pack's logic, value and utility nodes (nodes/impact_logic.py, nodes/impact_util.py) and the runner's lazy
inputs (ImpactConditionalBranch, ImpactSwitch, LatentSwitch compute only the chosen side)."""

from __future__ import annotations

import pytest
import torch

from twosamplers.engine.conditioning import NEGATIVE_PLACEHOLDER, without_negative_placeholder
from twosamplers.nodes.registry import NODES
from twosamplers.workflow import WorkflowError, run

NEW = ("ImpactCompare", "ImpactConditionalBranch", "ImpactConditionalBranchSelMode", "ImpactIfNone",
       "ImpactLogicalOperators", "ImpactNeg", "ImpactMinMax", "ImpactImageInfo", "ImpactLatentInfo",
       "ImpactConvertDataType", "ImpactStringSelector", "ImpactDummyInput", "ImpactExecutionOrderController",
       "ImageMaskSwitch", "LatentSwitch", "RemoveNoiseMask", "ImpactMakeImageBatch", "ImpactMakeMaskBatch",
       "ImpactCombineConditionings", "ImpactConcatConditionings", "ImpactNegativeConditioningPlaceholder",
       "ImpactSchedulerAdapter", "PreviewBridgeLatent", "ImpactMakeImageList", "ImpactMakeMaskList",
       "ImpactMakeAnyList", "ImpactImageBatchToImageList", "ImageListToImageBatch", "MaskListToMaskBatch",
       "StringListToString")


def node(name):
    cls = NODES[name]
    return getattr(cls(), cls.FUNCTION)


def test_registered_and_listed(capsys):
    from twosamplers.cli import main

    assert set(NEW) <= set(NODES)
    assert main(["run", "--list-nodes"]) in (0, None)
    listed = capsys.readouterr().out
    assert all(name in listed for name in NEW)


@pytest.mark.parametrize("cmp, a, b, want", [
    ("a = b", 3, 3, True), ("a = b", "x", "y", False), ("a <> b", 2, 3, True), ("a > b", 2.5, 2, True),
    ("a < b", 2.5, 2, False), ("a >= b", 2, 2, True), ("a <= b", "a", "b", True), ("tt", None, None, True),
    ("ff", 1, 1, False), ("a = b", torch.tensor(4), 4, True)])
def test_compare(cmp, a, b, want):
    assert node("ImpactCompare")(cmp, a, b) == (want,)


def test_compare_bad_inputs():
    with pytest.raises(TypeError, match="cannot compare a .*int.* with b .*str"):
        node("ImpactCompare")("a > b", 1, "x")
    with pytest.raises(TypeError, match="input 'a' must be a number"):
        node("ImpactCompare")("a = b", torch.zeros(1, 8, 8, 3), 1)
    with pytest.raises(ValueError, match="cmp"):
        node("ImpactCompare")("a == b", 1, 1)


def test_logic_values():
    assert node("ImpactNeg")(True) == (False,)
    ops = node("ImpactLogicalOperators")
    assert [ops(o, a, b)[0] for o in ("and", "or", "xor") for a, b in ((True, False), (True, True))] == \
        [False, True, True, True, True, False]
    with pytest.raises(TypeError, match="bool_a"):
        ops("and", "yes", True)
    with pytest.raises(ValueError, match="operator"):
        ops("nand", True, True)
    assert node("ImpactMinMax")(True, 3, 7) == (7,) and node("ImpactMinMax")(False, 3, 7.5) == (3,)
    with pytest.raises(TypeError, match="cannot order"):
        node("ImpactMinMax")(True, 3, "7")
    assert node("ImpactIfNone")("sig", None) == ("sig", False) and node("ImpactIfNone")(None, 0) == (None, True)
    branch = node("ImpactConditionalBranch")
    assert branch(True, "t", "f") == ("t",) and branch(False, "t", "f") == ("f",)
    assert NODES["ImpactConditionalBranch"]().check_lazy_status(False) == ["ff_value"]
    assert node("ImpactConditionalBranchSelMode")(True, 1, 2) == (1,)
    assert node("ImpactDummyInput")() == ("DUMMY",)
    assert node("ImpactExecutionOrderController")(1, "v") == (1, "v")


@pytest.mark.parametrize("value, want", [(3, ("3", 3.0, 3, True)), ("-2.5", ("-2.5", -2.5, -2, True)),
                                         ("False", ("False", 0.0, 0, False)), (True, ("True", 1.0, 1, True)),
                                         ("cat", ("cat", 1.0, 1, True)), (0, ("0", 0.0, 0, False))])
def test_convert_data_type(value, want):
    assert node("ImpactConvertDataType")(value) == want


def test_image_and_latent_info():
    assert node("ImpactImageInfo")(torch.zeros(2, 48, 32, 3)) == (2, 48, 32, 3)
    assert node("ImpactLatentInfo")({"samples": torch.zeros(1, 16, 6, 5)}) == (1, 48, 40, 16)
    with pytest.raises(TypeError, match="IMAGE"):
        node("ImpactImageInfo")(torch.zeros(48, 32))
    with pytest.raises(TypeError, match="LATENT"):
        node("ImpactLatentInfo")(torch.zeros(1, 4, 8, 8))


def test_string_selector():
    sel = node("ImpactStringSelector")
    assert sel("a\nb\nc", False, 4) == ("b",)
    text = "#first\nline 1\n#second\nline 2\nline 3"
    assert sel(text, True, 1) == ("second\nline 2\nline 3",)
    assert sel(text, True, 2) == ("first\nline 1",)
    assert sel("no hash\nx", True, 0) == ("no hash\nx",)
    with pytest.raises(ValueError, match="select"):
        sel("a", False, -1)


def test_switches_batches_and_noise_mask():
    red, blue = torch.zeros(1, 8, 8, 3), torch.ones(1, 8, 8, 3)
    m = torch.ones(1, 8, 8)
    out = NODES["ImageMaskSwitch"]().doit(2, red, None, blue, m)
    assert out[0] is blue and out[1] is m
    with pytest.raises(ValueError, match="images3_opt, which is not connected"):
        NODES["ImageMaskSwitch"]().doit(3, red)
    lat = {"samples": torch.zeros(1, 4, 2, 2)}
    assert node("LatentSwitch")(2, latent1={"samples": 1}, latent2=lat)[0] is lat  # older files: latentN
    assert node("LatentSwitch")(1, input1=lat)[0] is lat
    masked = {"samples": torch.zeros(1, 4, 2, 2), "noise_mask": torch.ones(1, 1, 2, 2), "batch_index": [0]}
    assert set(node("RemoveNoiseMask")(masked)[0]) == {"samples", "batch_index"} and "noise_mask" in masked
    big = torch.rand(1, 16, 12, 3)
    (batch,) = node("ImpactMakeImageBatch")(image1=red, image2=blue, image3=big)
    assert batch.shape == (3, 8, 8, 3) and torch.equal(batch[1], blue[0])
    with pytest.raises(ValueError, match="channels"):
        node("ImpactMakeImageBatch")(image1=red, image2=torch.zeros(1, 8, 8, 4))
    (masks,) = node("ImpactMakeMaskBatch")(mask1=m, mask2=torch.zeros(8, 8))
    assert masks.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="mask2 is"):
        node("ImpactMakeMaskBatch")(mask1=m, mask2=torch.zeros(1, 4, 4))


def test_conditioning_nodes_and_the_placeholder():
    a = [[torch.ones(1, 3, 8), {"pooled_output": torch.ones(1, 8)}], [torch.full((1, 2, 8), 2.0), {}]]
    b = [[torch.zeros(1, 4, 8), {"x": 1}]]
    (comb,) = node("ImpactCombineConditionings")(conditioning1=a, conditioning2=b)
    assert len(comb) == 3 and comb[2][1] == {"x": 1}
    (cat,) = node("ImpactConcatConditionings")(conditioning1=a, conditioning2=b)
    assert [t.shape[1] for t, _ in cat] == [7, 6] and "pooled_output" in cat[0][1] and "x" not in cat[0][1]
    assert cat[0][1] is not a[0][1] and a[0][0].shape[1] == 3  # inputs untouched
    assert node("ImpactConcatConditionings")(conditioning1=a)[0][1][0] is a[1][0]
    with pytest.raises(ValueError, match="another text encoder"):
        node("ImpactConcatConditionings")(conditioning1=a, conditioning2=[[torch.zeros(1, 4, 16), {}]])
    (ph,) = node("ImpactNegativeConditioningPlaceholder")()
    assert ph is NEGATIVE_PLACEHOLDER
    with pytest.raises(TypeError, match="negative placeholder"):
        node("ImpactCombineConditionings")(conditioning1=a, conditioning2=ph)
    pos, neg, cfg = without_negative_placeholder(a, ph, 3.5)
    assert cfg == 1.0 and neg is pos and [o["guidance"] for _, o in pos] == [3.5, 3.5] and "guidance" not in a[0][1]
    assert without_negative_placeholder(a, b, 7.0) == (a, b, 7.0)


def test_scheduler_adapter():
    assert node("ImpactSchedulerAdapter")("karras", "None") == ("karras",)
    with pytest.raises(ValueError, match="AYS SDXL"):
        node("ImpactSchedulerAdapter")("karras", "AYS SDXL")


# ------------------------------------------------------------------------------------------ lazy inputs
def _branch_wf(cond_a: int, cond_b: int) -> dict:
    """Two values; the false side is an ImpactSchedulerAdapter that fails when it runs (an AYS schedule), so a run
    that computes the side not taken fails."""
    return {
        "1": {"class_type": "SolidMask", "inputs": {"value": 0.25, "width": 16, "height": 16}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "ImpactBoolean", "inputs": {"value": False}},
        "5": {"class_type": "ImpactIfNone", "inputs": {"any_input": ["4", 0]}},
        "6": {"class_type": "ImpactSchedulerAdapter", "inputs": {"scheduler": "normal", "extra_scheduler": "AYS SD1"}},
        "7": {"class_type": "ImpactInt", "inputs": {"value": cond_a}},
        "8": {"class_type": "ImpactInt", "inputs": {"value": cond_b}},
        "9": {"class_type": "ImpactCompare", "inputs": {"cmp": "a > b", "a": ["7", 0], "b": ["8", 0]}},
        "10": {"class_type": "ImpactConditionalBranch", "inputs": {"cond": ["9", 0], "tt_value": ["2", 0],
                                                                    "ff_value": ["6", 0]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }


def test_conditional_branch_computes_only_the_chosen_side(tmp_path):
    seen = []
    out = run(_branch_wf(3, 2), None, output_dir=tmp_path, progress=lambda i, n, nid, t: seen.append(nid))
    assert float(out[0]["images"].mean()) == 0.25
    assert "6" not in seen and "3" not in seen  # the false side never ran
    with pytest.raises(WorkflowError, match=r"node 6 \(ImpactSchedulerAdapter\).*AYS SD1"):
        run(_branch_wf(2, 3), None, output_dir=tmp_path)


def test_lazy_switch_skips_inputs_not_chosen_and_runs_shared_ones_once(tmp_path):
    wf = _branch_wf(3, 2)
    del wf["10"]
    wf["10"] = {"class_type": "ImpactSwitch", "inputs": {"select": 1, "sel_mode": False, "input1": ["3", 0],
                                                          "input2": ["6", 0], "input3": ["2", 0]}}
    wf["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}  # node 2 is needed eagerly too
    seen = []
    out = run(wf, None, output_dir=tmp_path, progress=lambda i, n, nid, t: seen.append(nid))
    assert float(out[0]["images"].mean()) == 0.75 and seen.count("2") == 1 and "6" not in seen
    wf["10"]["inputs"]["select"] = 2
    with pytest.raises(WorkflowError, match="ImpactSchedulerAdapter"):
        run(wf, None, output_dir=tmp_path)
    wf["10"]["inputs"]["select"] = 4
    with pytest.raises(WorkflowError, match="input4, which is not connected"):
        run(wf, None, output_dir=tmp_path)


def test_nested_lazy_branches(tmp_path):
    wf = _branch_wf(3, 2)
    wf["13"] = {"class_type": "ImpactNeg", "inputs": {"value": ["9", 0]}}
    wf["14"] = {"class_type": "ImpactConditionalBranch", "inputs": {"cond": ["13", 0], "tt_value": ["6", 0],
                                                                     "ff_value": ["3", 0]}}
    wf["10"]["inputs"]["tt_value"] = ["14", 0]  # true -> (not true -> failing side | inverted image)
    out = run(wf, None, output_dir=tmp_path)
    assert float(out[0]["images"].mean()) == 0.75


def _ui(nodes: list[tuple], links: list[tuple]) -> dict:
    """A UI-format workflow: nodes (id, type, widgets, [input names]); links (id, from, slot, to, input slot, type)."""
    out = {"last_node_id": max(n[0] for n in nodes), "last_link_id": len(links), "version": 0.4, "links": [],
           "nodes": []}
    for lid, src, slot, dst, dslot, typ in links:
        out["links"].append([lid, src, slot, dst, dslot, typ])
    for nid, typ, widgets, inputs in nodes:
        ins = [{"name": name, "type": "*", "link": next((lk[0] for lk in links if lk[3] == nid and lk[4] == i), None)}
               for i, name in enumerate(inputs)]
        outs = [{"name": "out", "type": "*", "links": [lk[0] for lk in links if lk[1] == nid and lk[2] == s]}
                for s in range(4)]
        out["nodes"].append({"id": nid, "type": typ, "mode": 0, "inputs": ins, "outputs": outs,
                             "widgets_values": widgets})
    return out


@pytest.mark.parametrize("limit, want", [(768, 0.25), (8, 0.75)])
def test_loop_test_logic_in_a_ui_workflow(tmp_path, limit, want):
    """Impact's loop-test logic without its queue loop: an image's size -> min(height, width) -> compare with a
    limit -> branch between two images (the saved widget layouts of ImpactCompare, ImpactMinMax, ImpactInt)."""
    wf = _ui([(1, "SolidMask", [0.25, 48, 32], []), (2, "MaskToImage", None, ["mask"]),
              (3, "ImageInvert", None, ["image"]), (4, "ImpactImageInfo", None, ["value"]),
              (5, "ImpactMinMax", [False], ["a", "b"]), (6, "ImpactInt", [limit], []),
              (7, "ImpactCompare", ["a > b"], ["a", "b"]),
              (8, "ImpactConditionalBranch", None, ["cond", "tt_value", "ff_value"]),
              (9, "PreviewImage", None, ["images"])],
             [(1, 1, 0, 2, 0, "MASK"), (2, 2, 0, 3, 0, "IMAGE"), (3, 2, 0, 4, 0, "IMAGE"), (4, 4, 1, 5, 0, "INT"),
              (5, 4, 2, 5, 1, "INT"), (6, 6, 0, 7, 0, "INT"), (7, 5, 0, 7, 1, "INT"), (8, 7, 0, 8, 0, "BOOLEAN"),
              (9, 2, 0, 8, 1, "IMAGE"), (10, 3, 0, 8, 2, "IMAGE"), (11, 8, 0, 9, 0, "IMAGE")])
    out = run(wf, None, output_dir=tmp_path)
    assert out[0]["images"].shape == (1, 32, 48, 3) and float(out[0]["images"].mean()) == want


# ------------------------------------------------------------------------------------------ lists
def _solid(nid: str, value: float, w: int = 16, h: int = 16) -> dict:
    return {nid: {"class_type": "SolidMask", "inputs": {"value": value, "width": w, "height": h}},
            nid + "i": {"class_type": "MaskToImage", "inputs": {"mask": [nid, 0]}}}


def test_a_list_runs_the_next_node_once_per_item(tmp_path):
    wf = {**_solid("1", 0.25), **_solid("2", 0.5), **_solid("3", 0.75, 8, 8),
          "4": {"class_type": "ImpactMakeImageBatch", "inputs": {"image1": ["1i", 0], "image2": ["2i", 0]}},
          "5": {"class_type": "ImpactImageBatchToImageList", "inputs": {"image": ["4", 0]}},
          "6": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
          "7": {"class_type": "ImageListToImageBatch", "inputs": {"images": ["6", 0]}},
          "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
          "9": {"class_type": "ImpactMakeImageList", "inputs": {"image1": ["1i", 0], "image2": ["3i", 0]}},
          "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "each"}}}
    out = {o["node"]: o for o in run(wf, None, output_dir=tmp_path)}
    batch = out["8"]["images"]
    assert batch.shape == (2, 16, 16, 3) and [float(b.mean()) for b in batch] == [0.75, 0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["each_00001_.png", "each_00002_.png"]
    assert len(out["10"]["files"]) == 2 and [tuple(i.shape) for i in out["10"]["images"]] == [(1, 16, 16, 3),
                                                                                               (1, 8, 8, 3)]


def test_list_nodes():
    a, b = torch.zeros(1, 8, 8, 3), torch.ones(2, 4, 4, 3)
    assert node("ImpactMakeImageList")(image1=a, image2=b)[0] == [a, b]
    assert [t.shape[0] for t in node("ImpactImageBatchToImageList")(b)[0]] == [1, 1]
    (batch,) = node("ImageListToImageBatch")([a, b])
    assert batch.shape == (3, 8, 8, 3)
    m = torch.ones(8, 8)
    assert [t.shape for t in node("ImpactMakeMaskList")(mask1=m, mask2=m[None])[0]] == [(1, 8, 8)] * 2
    assert node("MaskListToMaskBatch")([m, m[None, None]])[0].shape == (2, 8, 8)
    with pytest.raises(ValueError, match=r"mask\[1\] is"):
        node("MaskListToMaskBatch")([m, torch.ones(4, 4)])
    assert node("MaskListToMaskBatch")([])[0].shape == (1, 64, 64)
    assert node("ImpactMakeAnyList")(value1="a", value3=2)[0] == ["a", 2]
    assert node("StringListToString")(["\\n"], ["a", "b"]) == ("a\nb",)
    assert node("StringListToString")([", "], ["a", "b"]) == ("a, b",)


def test_latent_switch_of_an_older_file_computes_the_chosen_latent_only(tmp_path):
    wf = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}},
          "3": {"class_type": "LatentSwitch", "inputs": {"select": 2, "latent1": ["1", 0], "latent2": ["2", 0]}},
          "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "sw"}}}
    seen = []
    out = run(wf, None, output_dir=tmp_path, progress=lambda i, n, nid, t: seen.append(nid))
    assert out[0]["samples"]["samples"].shape == (2, 4, 4, 4) and "1" not in seen
