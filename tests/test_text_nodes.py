"""ComfyUI's text nodes: the outputs ComfyUI 0.30's own node classes give for the same inputs (recorded from
comfy_extras.nodes_string through ../shared/comfy on 2026-12-07), a prompt built from pieces in a workflow equals
the prompt typed whole, bad values named, and the regular-expression nodes refused by name."""

from __future__ import annotations

import pytest

from twosamplers.nodes.registry import NODES, scope_note
from twosamplers.workflow import run

COMFY = [
    ("StringConcatenate", {"string_a": "a cat", "string_b": "on a mat", "delimiter": ", "}, "a cat, on a mat"),
    ("StringSubstring", {"string": "masterpiece, cat", "start": -3, "end": 100}, "cat"),
    ("StringSubstring", {"string": "masterpiece, cat", "start": 2, "end": -4}, "sterpiece,"),
    ("StringLength", {"string": "héllo\n"}, 6),
    ("CaseConverter", {"string": "a rED cAT's hat", "mode": "Capitalize"}, "A red cat's hat"),
    ("CaseConverter", {"string": "a rED cAT's hat", "mode": "Title Case"}, "A Red Cat'S Hat"),
    ("StringTrim", {"string": "  \n x y \t", "mode": "Left"}, "x y \t"),
    ("StringReplace", {"string": "a.b.c", "find": ".", "replace": "::"}, "a::b::c"),
    ("StringContains", {"string": "Red Cat", "substring": "cat", "case_sensitive": False}, True),
    ("StringContains", {"string": "Red Cat", "substring": "cat", "case_sensitive": True}, False),
    ("StringCompare", {"string_a": "Red Cat", "string_b": "red", "mode": "Starts With", "case_sensitive": False},
     True),
    ("StringCompare", {"string_a": "Red Cat", "string_b": "Cat", "mode": "Ends With", "case_sensitive": True}, True),
    ("StringCompare", {"string_a": "Red", "string_b": "red", "mode": "Equal", "case_sensitive": True}, False),
]


@pytest.mark.parametrize(("name", "inputs", "expected"), COMFY)
def test_text_nodes_give_comfyuis_outputs(name, inputs, expected):
    node = NODES[name]()
    (out,) = getattr(node, node.FUNCTION)(**inputs)
    assert out == expected and type(out) is type(expected)


def _workflow(text_node: dict) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "textures"}},
        "2": text_node,
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": ["2", 0], "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 3, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
    }


def test_a_prompt_built_from_pieces_renders_as_the_whole_prompt(tmp_path):
    joined = {"class_type": "StringConcatenate", "inputs": {"string_a": "brick", "string_b": "wall",
                                                            "delimiter": " "}}
    whole = {"class_type": "PrimitiveString", "inputs": {"value": "brick wall"}}
    a = run(_workflow(joined), output_dir=tmp_path)
    b = run(_workflow(whole), output_dir=tmp_path)
    assert a[0]["images"].equal(b[0]["images"])


@pytest.mark.parametrize(("name", "inputs", "word"), [
    ("CaseConverter", {"string": "x", "mode": "Shout"}, "mode"),
    ("StringTrim", {"string": "x", "mode": "Middle"}, "mode"),
    ("StringSubstring", {"string": "x", "start": 1.5, "end": 2}, "start"),
    ("StringContains", {"string": "x", "substring": "x", "case_sensitive": "no"}, "case_sensitive"),
    ("StringConcatenate", {"string_a": 3, "string_b": "x", "delimiter": ""}, "string_a"),
])
def test_bad_values_are_named(name, inputs, word):
    node = NODES[name]()
    with pytest.raises((ValueError, TypeError), match=word):
        getattr(node, node.FUNCTION)(**inputs)


@pytest.mark.parametrize("name", ["RegexMatch", "RegexExtract", "RegexReplace"])
def test_regular_expression_nodes_are_refused_by_name(name):
    assert name not in NODES
    assert scope_note(name) == "out of scope: regular-expression text nodes"
