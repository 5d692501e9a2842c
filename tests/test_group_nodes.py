"""Group nodes defined in a UI workflow's extra.groupNodes are expanded into their inner nodes, wired as ComfyUI's
frontend wires them: the same API prompt (up to node ids) as the workflow with the group ungrouped."""

from __future__ import annotations

import pytest

from twosamplers.nodes.registry import NODES, input_types
from twosamplers.workflow import WorkflowError
from twosamplers.workflow.formats import ui_to_api


def types_of(t):
    cls = NODES.get(t)
    return None if cls is None else input_types(cls)


def node(nid, type_, widgets=None, inputs=(), outputs=(), order=0):
    return {"id": nid, "type": type_, "mode": 0, "order": order, "widgets_values": widgets or [],
            "inputs": [{"name": n, "type": t, "link": lk, **({"widget": {"name": n}} if w else {})}
                       for n, t, lk, w in inputs],
            "outputs": [{"name": n, "type": t, "links": list(lks)} for n, t, lks in outputs]}


# The group "prompts": a checkpoint loader, two CLIPTextEncode and an EmptyLatentImage whose height is converted to
# an input; exposed: widgets ckpt_name, text, text, width, batch_size, then the converted height; outputs MODEL, VAE
# (CLIP only feeds the encoders inside), the two CONDITIONINGs and the LATENT.
GROUP = {
    "nodes": [
        {"index": 0, "type": "CheckpointLoaderSimple", "widgets_values": ["stored.safetensors"], "inputs": [],
         "outputs": [{"name": "MODEL", "type": "MODEL"}, {"name": "CLIP", "type": "CLIP"},
                     {"name": "VAE", "type": "VAE"}]},
        {"index": 1, "type": "CLIPTextEncode", "widgets_values": ["stored pos"],
         "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
         "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING"}]},
        {"index": 2, "type": "CLIPTextEncode", "widgets_values": ["stored neg"],
         "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
         "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING"}]},
        {"index": 3, "type": "EmptyLatentImage", "widgets_values": [512, 512, 1],
         "inputs": [{"name": "height", "type": "INT", "link": None, "widget": {"name": "height"}}],
         "outputs": [{"name": "LATENT", "type": "LATENT"}]},
    ],
    "links": [[0, 1, 1, 0, 1, "CLIP"], [0, 1, 2, 0, 1, "CLIP"]],
    "external": [],
}


def grouped() -> dict:
    nodes = [
        node(1, "workflow>prompts", ["textures", "grass", "", 64, 1],
             inputs=[("height", "INT", 20, True)],
             outputs=[("MODEL", "MODEL", [11]), ("VAE", "VAE", [14]), ("CONDITIONING", "CONDITIONING", [12]),
                      ("CONDITIONING", "CONDITIONING", [13]), ("LATENT", "LATENT", [15])]),
        node(5, "PrimitiveNode", [48], outputs=[("INT", "INT", [20])]),
        node(2, "KSampler", [7, "fixed", 2, 1.0, "euler", "normal", 1.0],
             inputs=[("model", "MODEL", 11, False), ("positive", "CONDITIONING", 12, False),
                     ("negative", "CONDITIONING", 13, False), ("latent_image", "LATENT", 15, False)],
             outputs=[("LATENT", "LATENT", [16])], order=1),
        node(3, "VAEDecode", inputs=[("samples", "LATENT", 16, False), ("vae", "VAE", 14, False)],
             outputs=[("IMAGE", "IMAGE", [17])], order=2),
        node(4, "PreviewImage", inputs=[("images", "IMAGE", 17, False)], order=3),
    ]
    links = [[11, 1, 0, 2, 0, "MODEL"], [12, 1, 2, 2, 1, "CONDITIONING"], [13, 1, 3, 2, 2, "CONDITIONING"],
             [14, 1, 1, 3, 1, "VAE"], [15, 1, 4, 2, 3, "LATENT"], [16, 2, 0, 3, 0, "LATENT"],
             [17, 3, 0, 4, 0, "IMAGE"], [20, 5, 0, 1, 0, "INT"]]
    return {"nodes": nodes, "links": links, "extra": {"groupNodes": {"prompts": GROUP}}}


def test_group_node_expands_to_its_inner_nodes():
    prompt = ui_to_api(grouped(), types_of)
    by_type = {}
    for nid, n in prompt.items():
        by_type.setdefault(n["class_type"], []).append((nid, n["inputs"]))
    (ck, ck_in), = by_type["CheckpointLoaderSimple"]
    assert ck_in == {"ckpt_name": "textures"}
    texts = sorted(i["text"] for _n, i in by_type["CLIPTextEncode"])
    assert texts == ["", "grass"] and all(i["clip"] == [ck, 1] for _n, i in by_type["CLIPTextEncode"])
    (lat, lat_in), = by_type["EmptyLatentImage"]
    assert lat_in == {"width": 64, "height": 48, "batch_size": 1}  # height from the Primitive, through the group
    (_k, ks), = by_type["KSampler"]
    pos = next(n for n, i in by_type["CLIPTextEncode"] if i["text"] == "grass")
    assert ks["model"] == [ck, 0] and ks["positive"] == [pos, 0] and ks["latent_image"] == [lat, 0]
    (_v, vae), = by_type["VAEDecode"]
    assert vae["vae"] == [ck, 2]


def test_group_node_workflow_runs(tmp_path):
    from twosamplers.workflow import run

    out = run(grouped(), output_dir=tmp_path)
    assert out[0]["images"].shape == (1, 48, 64, 3)


def test_group_node_without_definition_is_named():
    wf = grouped()
    wf["extra"] = {}
    with pytest.raises(WorkflowError, match=r'"workflow>prompts" \(node 1\) \(a group node'):
        ui_to_api(wf, types_of)
