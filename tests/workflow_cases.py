"""Hand-written ComfyUI workflows for the workflow-runner tests (API format, and a UI-format twin)."""

from __future__ import annotations

import copy

SIZE = 32
STEPS = 3


def api_t2i(ckpt: str = "textures", seed: int = 1, prefix: str = "t2i", text: str = "grass") -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": seed, "steps": STEPS, "cfg": 3.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def _node(nid, kind, inputs=(), outputs=(), widgets=None, mode=0, order=0):
    n = {"id": nid, "type": kind, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": order, "mode": mode,
         "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {}}
    if widgets is not None:
        n["widgets_values"] = list(widgets)
    return n


def ui_t2i(ckpt: str = "textures", seed: int = 1, prefix: str = "t2i") -> dict:
    """The UI-format twin of `api_t2i`, with a Reroute on the MODEL link, a Primitive node driving the seed
    (a widget converted to an input), a bypassed ImageScale before SaveImage, a muted SaveImage and a Note."""
    def out(kind, links):
        return {"name": kind, "type": kind, "links": links}

    nodes = [
        _node(4, "CheckpointLoaderSimple", outputs=[out("MODEL", [20]), out("CLIP", [3, 5]), out("VAE", [8])],
              widgets=[ckpt], order=0),
        _node(20, "Reroute", inputs=[{"name": "", "type": "*", "link": 20}], outputs=[out("MODEL", [1])]),
        _node(6, "CLIPTextEncode", inputs=[{"name": "clip", "type": "CLIP", "link": 3}],
              outputs=[out("CONDITIONING", [4])], widgets=["grass"], order=2),
        _node(7, "CLIPTextEncode", inputs=[{"name": "clip", "type": "CLIP", "link": 5}],
              outputs=[out("CONDITIONING", [6])], widgets=[""], order=3),
        _node(5, "EmptyLatentImage", outputs=[out("LATENT", [2])], widgets=[SIZE, SIZE, 1], order=1),
        _node(30, "PrimitiveNode", outputs=[{"name": "INT", "type": "INT", "links": [30],
                                             "widget": {"name": "seed"}}], widgets=[seed, "fixed"]),
        _node(3, "KSampler", inputs=[
            {"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": 4},
            {"name": "negative", "type": "CONDITIONING", "link": 6}, {"name": "latent_image", "type": "LATENT",
                                                                       "link": 2},
            {"name": "seed", "type": "INT", "link": 30, "widget": {"name": "seed"}}],
            outputs=[out("LATENT", [7])], widgets=[999, "randomize", STEPS, 3.0, "euler", "normal", 1.0], order=4),
        _node(8, "VAEDecode", inputs=[{"name": "samples", "type": "LATENT", "link": 7},
                                      {"name": "vae", "type": "VAE", "link": 8}],
              outputs=[out("IMAGE", [9, 11])], order=5),
        _node(11, "ImageScale", inputs=[{"name": "image", "type": "IMAGE", "link": 9}], outputs=[out("IMAGE", [10])],
              widgets=["nearest-exact", 16, 16, "disabled"], mode=4, order=6),
        _node(9, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 10}], widgets=[prefix], order=7),
        _node(12, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 11}], widgets=["muted"], mode=2,
              order=8),
        _node(13, "Note", widgets=["a note"]),
    ]
    links = [[1, 20, 0, 3, 0, "MODEL"], [20, 4, 0, 20, 0, "MODEL"], [3, 4, 1, 6, 0, "CLIP"],
             [5, 4, 1, 7, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"], [6, 7, 0, 3, 2, "CONDITIONING"],
             [2, 5, 0, 3, 3, "LATENT"], [30, 30, 0, 3, 4, "INT"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"],
             [9, 8, 0, 11, 0, "IMAGE"], [10, 11, 0, 9, 0, "IMAGE"], [11, 8, 0, 12, 0, "IMAGE"]]
    return {"last_node_id": 30, "last_link_id": 30, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


def api_inpaint() -> dict:
    """LoadImage -> VAEEncode, LoadImageMask (red) -> SetLatentNoiseMask -> KSampler (denoise 0.8)."""
    wf = api_t2i(prefix="inpaint")
    del wf["5"]
    wf.update({
        "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
        "12": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "13": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["12", 0]}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/inpaint"}},
    })
    wf["3"]["inputs"].update(latent_image=["13", 0], denoise=0.8, seed=4)
    return wf


def api_two_samplers() -> dict:
    """Providers fed by basic pipes (ToBasicPipe, EditBasicPipe, FromBasicPipe_v2), TwoSamplersForMask on a
    LoadImageMask mask."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "textures"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "grass", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "16": {"class_type": "CLIPTextEncode", "inputs": {"text": "brick", "clip": ["4", 1]}},
        "20": {"class_type": "ToBasicPipe", "inputs": {"model": ["4", 0], "clip": ["4", 1], "vae": ["4", 2],
                                                        "positive": ["6", 0], "negative": ["7", 0]}},
        "21": {"class_type": "EditBasicPipe", "inputs": {"basic_pipe": ["20", 0], "positive": ["16", 0]}},
        "22": {"class_type": "FromBasicPipe_v2", "inputs": {"basic_pipe": ["21", 0]}},
        "23": {"class_type": "KSamplerProvider", "inputs": {
            "seed": 3, "steps": STEPS, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "basic_pipe": ["20", 0]}},
        "24": {"class_type": "KSamplerProvider", "inputs": {
            "seed": 5, "steps": STEPS, "cfg": 4.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "denoise": 0.9, "basic_pipe": ["22", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "12": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "25": {"class_type": "TwoSamplersForMask", "inputs": {"latent_image": ["5", 0], "base_sampler": ["23", 0],
                                                               "mask_sampler": ["24", 0], "mask": ["12", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["25", 0], "vae": ["22", 3]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "two"}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["25", 0], "filename_prefix": "two"}},
    }


def api_regional() -> dict:
    """RegionalSampler with two regions: masks from LoadImage (1 - alpha) and LoadImageMask (red)."""
    wf = api_two_samplers()
    for k in ("23", "24", "25", "8", "9"):
        del wf[k]
    wf.update({
        "17": {"class_type": "CLIPTextEncode", "inputs": {"text": "water", "clip": ["4", 1]}},
        "30": {"class_type": "KSamplerAdvancedProvider", "inputs": {
            "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "sigma_factor": 1.0, "basic_pipe": ["20", 0]}},
        "31": {"class_type": "KSamplerAdvancedProvider", "inputs": {
            "cfg": 3.0, "sampler_name": "euler_ancestral", "scheduler": "normal", "sigma_factor": 1.0,
            "basic_pipe": ["21", 0]}},
        "32": {"class_type": "EditBasicPipe", "inputs": {"basic_pipe": ["20", 0], "positive": ["17", 0]}},
        "33": {"class_type": "KSamplerAdvancedProvider", "inputs": {
            "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "normal", "sigma_factor": 1.0,
            "basic_pipe": ["32", 0]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "alpha.png"}},
        "34": {"class_type": "RegionalPrompt", "inputs": {"mask": ["12", 0], "advanced_sampler": ["31", 0]}},
        "35": {"class_type": "RegionalPrompt", "inputs": {"mask": ["10", 1], "advanced_sampler": ["33", 0]}},
        "36": {"class_type": "CombineRegionalPrompts", "inputs": {"regional_prompts1": ["34", 0],
                                                                   "regional_prompts2": ["35", 0]}},
        "37": {"class_type": "RegionalSampler", "inputs": {
            "seed": 7, "seed_2nd": 0, "seed_2nd_mode": "ignore", "steps": STEPS, "base_only_steps": 1,
            "denoise": 1.0, "samples": ["5", 0], "base_sampler": ["30", 0], "regional_prompts": ["36", 0],
            "overlap_factor": 2, "restore_latent": True, "additional_mode": "ratio between",
            "additional_sampler": "AUTO", "additional_sigma_ratio": 0.3}},
    })
    wf["14"]["inputs"]["samples"] = ["37", 0]
    return wf


def with_inputs(wf: dict, nid: str, **inputs) -> dict:
    wf = copy.deepcopy(wf)
    wf[nid]["inputs"].update(inputs)
    return wf


def api_to_ui(prompt: dict, input_types) -> dict:
    """A UI-format twin of an API prompt, as ComfyUI's "Save" writes it: sockets with links, widget values in
    INPUT_TYPES order with a "randomize" control value after seed widgets, an upload value after LoadImage's."""
    from twosamplers.workflow.formats import has_control_widget, widget_inputs

    nodes, links = [], []
    outputs: dict[tuple[str, int], list[int]] = {}
    for nid, node in prompt.items():
        types = input_types(node["class_type"])
        widgets, values = {n for n, _s, _r in widget_inputs(types)}, []
        for name, spec, _req in widget_inputs(types):
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                values.append(node["inputs"][name])
                if has_control_widget(name, spec):
                    values.append("randomize")
        if node["class_type"] in ("LoadImage", "LoadImageMask"):
            values.append("image")
        ins = []
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(nid), len(ins), "*"])
                outputs.setdefault((str(value[0]), value[1]), []).append(link_id)
                entry = {"name": name, "type": "*", "link": link_id}
                if name in widgets:
                    entry["widget"] = {"name": name}
                ins.append(entry)
        nodes.append(_node(int(nid), node["class_type"], inputs=ins, widgets=values, order=len(nodes)))
    for n in nodes:
        n["outputs"] = [{"name": "out", "type": "*", "links": outputs.get((str(n["id"]), slot), [])}
                        for slot in range(1 + max([s for (i, s) in outputs if i == str(n["id"])], default=-1))]
    return {"nodes": nodes, "links": links, "version": 0.4}
