"""Writes model_shapes.json for random_models.py: the LDM keys and shapes of a one-level SD1.5-like UNet
(model_channels 320, context 768, 8 heads), of a ControlNet for it, of a one-level SD2.1-unCLIP-like UNet (context
1024, linear projections, a 2048-wide class embedding) and of a tiny CLIP vision tower (transformers' names, which
ComfyUI shares), from diffusers' / transformers' modules renamed by the test helpers (the project's interpreter:
`python tests/comfy_refs/make_model_shapes.py`)."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402
from test_controlnet import to_ldm_controlnet  # noqa: E402
from test_sd_backend import to_ldm_unet  # noqa: E402

# a tiny CLIP vision tower (ComfyUI builds the same from this dict: CLIPVisionModel(config))
VISION_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "projection_dim": 1024, "num_hidden_layers": 3,
                 "num_attention_heads": 1, "num_channels": 3, "image_size": 56, "patch_size": 14, "hidden_act": "gelu",
                 "layer_norm_eps": 1e-5}


def main():
    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(320,), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D",),
                                    up_block_types=("CrossAttnUpBlock2D",), attention_head_dim=8,
                                    cross_attention_dim=768, norm_num_groups=32)
        cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
        unclip = UNet2DConditionModel(sample_size=8, block_out_channels=(320,), layers_per_block=1,
                                      down_block_types=("CrossAttnDownBlock2D",),
                                      up_block_types=("CrossAttnUpBlock2D",), attention_head_dim=5,
                                      cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
                                      class_embed_type="projection", projection_class_embeddings_input_dim=2048)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION_CONFIG))
    u = {k.removeprefix("model.diffusion_model."): list(v.shape) for k, v in to_ldm_unet(unet).items()}
    c = {k: list(v.shape) for k, v in to_ldm_controlnet(cn).items()}
    un = {}
    for k, v in unclip.state_dict().items():  # to_ldm_unet leaves the class embedding (label_emb) to us
        if k.startswith("class_embedding."):
            _, lin, t = k.split(".")
            un[f"label_emb.0.{0 if lin == 'linear_1' else 2}.{t}"] = list(v.shape)

    class Rest:
        config = unclip.config

        @staticmethod
        def state_dict():
            return {k: v for k, v in unclip.state_dict().items() if not k.startswith("class_embedding.")}

    un.update({k.removeprefix("model.diffusion_model."): list(v.shape) for k, v in to_ldm_unet(Rest).items()})
    vis = {k: list(v.shape) for k, v in vision.state_dict().items() if not k.endswith("position_ids")}
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    gl = {}
    for block in ("input_blocks.1.1", "middle_block.1", "output_blocks.0.1", "output_blocks.1.1"):
        fuser = GatedSelfAttentionDense(320, 768, 8, 40)
        gl.update({f"{block}.transformer_blocks.0.fuser.{k}": list(v.shape) for k, v in fuser.state_dict().items()})
    gl.update({f"position_net.{k}": list(v.shape)
               for k, v in GLIGENTextBoundingboxProjection(768, 768).state_dict().items()})
    out = {"unet": sorted([k, s] for k, s in u.items()), "controlnet": sorted([k, s] for k, s in c.items()),
           "unclip_unet": sorted([k, s] for k, s in un.items()), "clip_vision": sorted([k, s] for k, s in vis.items()),
           "clip_vision_config": VISION_CONFIG, "gligen": sorted([k, s] for k, s in gl.items())}
    (HERE / "model_shapes.json").write_text(json.dumps(out))
    print({k: len(v) for k, v in out.items()})


if __name__ == "__main__":
    main()
