"""The web page's render path (handlers + render adapter, no browser) on Flux.1 and SD3.5: a two-pass render and a
3-region joint render (base + two painted regions) from a ComfyUI-style models folder, PNG round trip."""

from __future__ import annotations

import pytest
import torch

from twosamplers.job.imageio import load_image
from twosamplers.ui import handlers as H
from twosamplers.ui.render import render

pytest.importorskip("diffusers")

CKPT = {"flux": "checkpoints/flux_dev_aio.safetensors", "sd3": "checkpoints/sd35_large_aio.safetensors"}


def _masks():
    a, b = torch.zeros(64, 64), torch.zeros(64, 64)
    a[:, :28] = 1.0
    b[40:, 36:] = 1.0
    return a, b


def _fields(models, family, **over):
    f = H.default_fields(str(models.resolve() / CKPT[family]))
    cfg = 1.0 if family == "flux" else 3.0
    f.update({"width": 64, "height": 64, "base_steps": 2, "mask_steps": 2, "base_cfg": cfg, "mask_cfg": cfg,
              "r2_cfg": cfg, "base_prompt": "a meadow", "mask_prompt": "a red barn", "feather": 0.0, **over})
    return f


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_page_renders_two_pass_and_three_region_joint(flow_models_dir, tmp_path, family):
    found = H.scan_models(flow_models_dir)
    assert CKPT[family].split("/", 1)[1] in found["checkpoints"]
    a, b = _masks()
    two = H.fields_to_settings(_fields(flow_models_dir, family, crop_to_mask=True), 1, flow_models_dir)
    res = render(two, [a], output=tmp_path / "two.png")
    assert load_image(res["image"]).shape == (1, 64, 64, 3)
    joint_f = _fields(flow_models_dir, family, mode="regional", regional_algorithm="joint", r2_prompt="a pond",
                      crop_to_mask=False)
    joint = render(H.fields_to_settings(joint_f, 2, flow_models_dir), [a, b], output=tmp_path / "joint.png")
    assert joint["note"] is None
    img = load_image(joint["image"])
    settings, masks = H.load_png_settings(joint["image"])
    assert settings["mode"] == "joint" and len(masks) == 2 and torch.equal(masks[1], b)
    again = render(H.fields_to_settings(joint_f, 2, flow_models_dir), [a, b], output=tmp_path / "again.png")
    assert torch.equal(load_image(again["image"]), img)
