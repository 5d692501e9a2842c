"""The 16-channel VAE (ae.safetensors / SD3's) and the all-in-one Flux / SD3.5 checkpoints against ComfyUI 0.30.0
(references: tests/data/flow_vae_ckpt.safetensors from tests/comfy_oracle/flow_vae_ckpt.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from twosamplers.models.flow_loading import load_flow_checkpoint
from twosamplers.models.flow_vae import FlowVAE, is_flow_vae, load_flow_vae
from twosamplers.models.sd_loading import CheckpointError

REF = load_file(str(Path(__file__).parent / "data" / "flow_vae_ckpt.safetensors"))


@pytest.mark.parametrize("name", ["ae.safetensors", "sd35_vae.safetensors"])
def test_vae_encode_decode_match_comfyui(flow_models_dir, name):
    v = load_flow_vae(flow_models_dir / "vae" / name, device="cpu")
    assert isinstance(v, FlowVAE) and v.latent_format.channels == 16 and v.latent_format.downscale == 8
    z = v.encode_image(REF["in/image"])  # 43 x 61 pixels: cropped to 40 x 56, centred, as ComfyUI
    assert z.shape == (1, 16, 5, 7)
    assert float((z - REF[f"vae/{name}/encode"]).abs().max()) < 1e-4
    img = v.decode_latent(REF["in/latent"])
    assert img.shape == (1, 40, 56, 3) and img.min() >= 0 and img.max() <= 1
    assert float((img - REF[f"vae/{name}/decode"]).abs().max()) < 1e-4


def test_vae_detection_by_keys(flow_models_dir, tmp_path):
    sd = load_file(str(flow_models_dir / "vae" / "ae.safetensors"))
    assert is_flow_vae(sd) and is_flow_vae({"vae." + k: v for k, v in sd.items()})
    four = {k: v for k, v in sd.items()}
    four["decoder.conv_in.weight"] = torch.zeros(64, 4, 3, 3)
    assert not is_flow_vae(four)
    save_file(four, str(tmp_path / "sd_vae.safetensors"))
    with pytest.raises(CheckpointError, match="16-channel"):
        load_flow_vae(tmp_path / "sd_vae.safetensors")
    with pytest.raises(ValueError, match="16"):
        load_flow_vae(sd, device="cpu").decode_latent(torch.zeros(1, 4, 2, 2))


@pytest.mark.parametrize("name, fam", [("flux_dev_aio.safetensors", "flux"), ("sd35_large_aio.safetensors", "sd3")])
def test_all_in_one_checkpoint_matches_comfyui(flow_models_dir, name, fam):
    m = load_flow_checkpoint(flow_models_dir / "checkpoints" / name, device="cpu")
    assert m.text is not None and m.vae is not None and m.family == fam
    assert m.vae.latent_format is m.latent_format
    kw = {"pooled_output": REF[f"in/pooled_{fam}"]}
    if fam == "flux":
        kw["guidance"] = torch.tensor([3.5])
    with torch.no_grad():
        d = m.apply_model(REF["in/x"], REF["in/sigma"], REF["in/context"], **kw)
    assert float((d - REF[f"ckpt/{name}/fwd"]).abs().max()) < 1e-4
    assert float((m.encode_image(REF["in/image"]) - REF[f"ckpt/{name}/encode"]).abs().max()) < 1e-4
    if fam == "flux":
        c = m.encode_prompt("a lighthouse at dawn")
        assert float((c[0][0] - REF[f"ckpt/{name}/cond"]).abs().max()) < 1e-4
        assert float((c[0][1]["pooled_output"] - REF[f"ckpt/{name}/pooled"]).abs().max()) < 1e-4
    else:  # the triple encoders: CLIP-L ++ CLIP-G (80 wide) padded to the T5 width, then 77 T5 tokens
        c = m.encode_prompt("a lighthouse at dawn")
        assert c[0][0].shape == (1, 77 + 77, 128) and c[0][1]["pooled_output"].shape == (1, 80)
