"""UI-format conversion (widget order, control_after_generate, links, Reroute/Primitive, muted and bypassed
nodes), unsupported nodes, the node registry and the README's node list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_cases import _node, api_t2i

from twosamplers.nodes.registry import input_types
from twosamplers.workflow import NODES, WorkflowError, node_list_markdown, ui_to_api
from twosamplers.workflow.graph import plan

README = Path(__file__).resolve().parents[1] / "README.md"


def types_of(kind):
    return input_types(NODES[kind]) if kind in NODES else None


def convert(nodes, links=()):
    return ui_to_api({"nodes": nodes, "links": [list(x) for x in links]}, types_of)


def test_seed_control_value_is_skipped_but_combo_values_are_not():
    rs = _node(1, "RegionalSampler", widgets=[5, "randomize", 3, "fixed", 12, 2, 0.75, 4, False, "DISABLE",
                                              "dpm_fast", 0.25])
    got = convert([rs])["1"]["inputs"]
    assert got == {"seed": 5, "seed_2nd": 3, "seed_2nd_mode": "fixed", "steps": 12, "base_only_steps": 2,
                   "denoise": 0.75, "overlap_factor": 4, "restore_latent": False, "additional_mode": "DISABLE",
                   "additional_sampler": "dpm_fast", "additional_sigma_ratio": 0.25}
    ka = _node(2, "KSamplerAdvanced", widgets=["enable", 9, "increment", 30, 6.5, "dpmpp_2m", "karras", 5, 25,
                                               "enable"])
    got = convert([ka])["2"]["inputs"]
    assert got == {"add_noise": "enable", "noise_seed": 9, "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                   "scheduler": "karras", "start_at_step": 5, "end_at_step": 25, "return_with_leftover_noise": "enable"}


def test_upload_widget_and_dict_widget_values_and_defaults():
    assert convert([_node(1, "LoadImage", widgets=["photo.png", "image"])])["1"]["inputs"] == {"image": "photo.png"}
    assert convert([_node(1, "LoadImageMask", widgets=["m.png", "red", "image"])])["1"]["inputs"] == \
        {"image": "m.png", "channel": "red"}
    n = _node(1, "EmptyLatentImage")
    n["widgets_values"] = {"width": 64, "height": 128}
    assert convert([n])["1"]["inputs"] == {"width": 64, "height": 128, "batch_size": 1}
    # a node saved before an input existed: the missing widget takes its default
    assert convert([_node(1, "KSampler", widgets=[1, "fixed", 20, 8.0, "euler", "normal"])])["1"]["inputs"][
        "denoise"] == 1.0


def test_muted_source_leaves_the_input_missing():
    nodes = [_node(1, "EmptyLatentImage", widgets=[64, 64, 1], mode=2, outputs=[{"type": "LATENT", "links": [1]}]),
             _node(2, "SaveLatent", inputs=[{"name": "samples", "type": "LATENT", "link": 1}], widgets=["x"])]
    prompt = convert(nodes, [[1, 1, 0, 2, 0, "LATENT"]])
    assert list(prompt) == ["2"] and "samples" not in prompt["2"]["inputs"]
    with pytest.raises(WorkflowError, match=r"node 2 \(SaveLatent\): required input 'samples' is missing"):
        plan(prompt)


def test_bypass_passes_the_matching_input_through_chains():
    nodes = [
        _node(1, "EmptyLatentImage", widgets=[64, 64, 1], outputs=[{"type": "LATENT", "links": [1]}]),
        _node(2, "SolidMask", widgets=[1.0, 8, 8], outputs=[{"type": "MASK", "links": [2]}]),
        _node(3, "SetLatentNoiseMask", mode=4, inputs=[{"name": "samples", "type": "LATENT", "link": 1},
                                                        {"name": "mask", "type": "MASK", "link": 2}],
              outputs=[{"type": "LATENT", "links": [3]}]),
        _node(4, "Reroute", inputs=[{"name": "", "type": "*", "link": 3}], outputs=[{"type": "LATENT", "links": [4]}]),
        _node(5, "SaveLatent", inputs=[{"name": "samples", "type": "LATENT", "link": 4}], widgets=["x"]),
    ]
    links = [[1, 1, 0, 3, 0, "LATENT"], [2, 2, 0, 3, 1, "MASK"], [3, 3, 0, 4, 0, "LATENT"], [4, 4, 0, 5, 0, "LATENT"]]
    prompt = convert(nodes, links)
    assert "3" not in prompt and "4" not in prompt
    assert prompt["5"]["inputs"]["samples"] == ["1", 0]


def test_unsupported_and_group_nodes_are_listed_together():
    nodes = [_node(1, "FaceDetailer"), _node(2, "workflow>my group"), _node(3, "SAMLoader", mode=4),
             _node(4, "EmptyLatentImage", widgets=[64, 64, 1])]
    with pytest.raises(WorkflowError) as e:
        convert(nodes)
    msg = str(e.value)
    assert '"FaceDetailer" (node 1)' in msg and '"workflow>my group" (node 2) (a group node' in msg
    assert "SAMLoader" not in msg  # bypassed nodes never run
    sub = "6c1b8b0e-1f43-4f0a-9d1c-0a5f7d0b2e11"
    with pytest.raises(WorkflowError, match=f'"{sub}" \\(node 7\\) \\(a subgraph'):
        ui_to_api({"nodes": [_node(7, sub)], "links": [], "definitions": {"subgraphs": [{"id": sub}]}}, types_of)


def test_numbered_inputs_and_int_link_ids():
    prompt = api_t2i()
    prompt["8"]["inputs"]["samples"] = [3, 0]  # some writers store the node id as a number
    assert plan(prompt).order[-1] == "9"
    from twosamplers.workflow.graph import spec_of

    combine = input_types(NODES["CombineRegionalPrompts"])
    assert spec_of(combine, "regional_prompts2")[0] == ("REGIONAL_PROMPTS",)
    assert spec_of(combine, "regional_prompts")[0] is None


def test_only_needed_nodes_run_in_dependency_order():
    prompt = api_t2i()
    prompt["50"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p = plan(prompt)
    assert "50" not in p.order
    pos = {nid: i for i, nid in enumerate(p.order)}
    for nid in p.order:
        for v in prompt[nid]["inputs"].values():
            if isinstance(v, list):
                assert pos[str(v[0])] < pos[nid]


def test_primitive_nodes_feed_widget_inputs_and_are_type_checked():
    prompt = api_t2i()
    prompt["40"] = {"class_type": "PrimitiveInt", "inputs": {"value": 5}}
    prompt["41"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 2.5}}
    prompt["3"]["inputs"].update(seed=["40", 0], steps=["40", 0])
    assert {"40"} < set(plan(prompt).order)
    prompt["3"]["inputs"]["steps"] = ["41", 0]
    with pytest.raises(WorkflowError, match=r"input 'steps' expects INT but node 41 \(PrimitiveFloat\) output 0 "
                                            "gives FLOAT"):
        plan(prompt)


def test_no_output_node_is_an_error():
    prompt = {k: v for k, v in api_t2i().items() if k != "9"}
    with pytest.raises(WorkflowError, match="no output node"):
        plan(prompt)


def test_registry_nodes_follow_the_comfyui_convention():
    for name, cls in NODES.items():
        t = input_types(cls)
        assert set(t) <= {"required", "optional", "hidden"}, name
        assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls, cls.FUNCTION)), name


def test_readme_node_list_is_current():
    text = README.read_text()
    m = re.search(r"<!-- nodes:start -->\n(.*?)\n<!-- nodes:end -->", text, re.S)
    assert m, "README.md has no <!-- nodes:start --> ... <!-- nodes:end --> section"
    assert m.group(1) == node_list_markdown(), "README node list is stale: paste workflow.node_list_markdown()"


@pytest.mark.parametrize("name", ["t2i", "inpaint", "two_samplers", "regional"])
def test_ui_twins_of_the_run_workflows_convert_back_exactly(name):
    import workflow_cases as wc

    api = getattr(wc, f"api_{name}")()
    prompt = ui_to_api(wc.api_to_ui(api, types_of), types_of)
    assert sorted(prompt) == sorted(api)
    for nid in api:
        assert prompt[nid]["inputs"] == api[nid]["inputs"], nid
