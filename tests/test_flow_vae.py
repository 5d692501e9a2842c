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


@pytest.mark.parametrize("name, cls", [("flux_dev_aio.safetensors", "FluxPipeline"),
                                       ("sd35_large_aio.safetensors", "StableDiffusion3Pipeline")])
def test_diffusers_pipeline_folder_gives_the_single_files_model(flow_models_dir, tmp_path, name, cls):
    """A diffusers folder (transformer/, text_encoder*/, vae/) of the same weights loads to the same numbers."""
    import json

    from twosamplers.models import load

    ref = load_flow_checkpoint(flow_models_dir / "checkpoints" / name, device="cpu")
    folder = tmp_path / "pipe"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": cls}))
    tr = ref.network.transformer
    (folder / "transformer" / "config.json").write_text(json.dumps(dict(tr.config)))
    save_file({k: v.contiguous() for k, v in tr.state_dict().items()},
              str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    for i, (kind, module) in enumerate(ref.text.lora_parts()):
        sub = folder / ("text_encoder" if i == 0 else f"text_encoder_{i + 1}")
        sub.mkdir()
        sd = {k if kind == "t5" or k.startswith(("text_model.", "text_projection")) else "text_model." + k:
              v.contiguous() for k, v in module.state_dict().items() if not k.endswith("position_ids")}
        sd.pop("encoder.embed_tokens.weight", None)
        save_file(sd, str(sub / "model.safetensors"))
    (folder / "vae").mkdir()
    save_file({k: v.contiguous() for k, v in ref.vae.vae.state_dict().items()},
              str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    m = load(folder, device="cpu")
    assert (m.family, m.variant) == (ref.family, ref.variant)
    kw = {"pooled_output": REF[f"in/pooled_{m.family}"]}
    with torch.no_grad():
        d = m.apply_model(REF["in/x"], REF["in/sigma"], REF["in/context"], **kw)
        e = ref.apply_model(REF["in/x"], REF["in/sigma"], REF["in/context"], **kw)
    assert float((d - e).abs().max()) < 1e-5  # same weights; the single file's are views of fused tensors (~5e-7)
    a, b = m.encode_prompt("a lighthouse"), ref.encode_prompt("a lighthouse")
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])
    assert torch.equal(m.decode_latent(REF["in/latent"]), ref.decode_latent(REF["in/latent"]))
