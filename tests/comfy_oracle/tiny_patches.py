# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""Lets ComfyUI 0.30.0 load the tiny text encoders of tests/flow_models.py (import it before using ComfyUI).

ComfyUI builds its text encoders from fixed full-size configs (sd1_clip_config.json, clip_config_bigg.json,
t5_config_xxl.json) and tells them apart by full-size keys (CLIP-G: 32 layers; T5-XXL: 24 blocks of width
10240). Wrappers only, nothing of ComfyUI's code changed or copied: the config a text model is built from is
replaced by the tiny one of the same kind, and `comfy.sd.detect_te_model` (and the SD3 CLIP's routing of a
loaded file) recognise the tiny towers (CLIP-L 32 wide, CLIP-G 48 wide, T5 128 wide). Everything else
(tokenizers, encoders, weight dtypes, prompt handling, conditioning layout) is ComfyUI's own.
"""

import os

import comfy_env  # noqa: F401
import comfy.sd
import comfy.sd1_clip

TINY_CONFIGS = {
    "sd1_clip_config.json": {"hidden_act": "quick_gelu", "hidden_size": 32, "intermediate_size": 128,
                             "num_attention_heads": 1, "num_hidden_layers": 3, "max_position_embeddings": 77,
                             "layer_norm_eps": 1e-05, "projection_dim": 32, "vocab_size": 49408, "bos_token_id": 0,
                             "eos_token_id": 49407, "pad_token_id": 1, "model_type": "clip_text_model"},
    "clip_config_bigg.json": {"hidden_act": "gelu", "hidden_size": 48, "intermediate_size": 192,
                              "num_attention_heads": 1, "num_hidden_layers": 3, "max_position_embeddings": 77,
                              "layer_norm_eps": 1e-05, "projection_dim": 48, "vocab_size": 49408, "bos_token_id": 0,
                              "eos_token_id": 49407, "pad_token_id": 1, "model_type": "clip_text_model"},
    "t5_config_xxl.json": {"d_ff": 96, "d_kv": 64, "d_model": 128, "num_heads": 2, "num_layers": 2,
                           "num_decoder_layers": 2, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
                           "layer_norm_epsilon": 1e-06, "relative_attention_num_buckets": 32, "vocab_size": 32128,
                           "eos_token_id": 1, "pad_token_id": 0, "decoder_start_token_id": 0, "model_type": "t5",
                           "is_encoder_decoder": True, "tie_word_embeddings": False},
}

_init = comfy.sd1_clip.SDClipModel.__init__


def _tiny_init(self, *args, textmodel_json_config=None, **kwargs):
    name = "sd1_clip_config.json" if textmodel_json_config is None else os.path.basename(str(textmodel_json_config))
    if name in TINY_CONFIGS:
        textmodel_json_config = dict(TINY_CONFIGS[name])
    return _init(self, *args, textmodel_json_config=textmodel_json_config, **kwargs)


comfy.sd1_clip.SDClipModel.__init__ = _tiny_init

_detect = comfy.sd.detect_te_model


def _tiny_detect(sd):
    ln = sd.get("text_model.final_layer_norm.weight")
    if ln is not None and ln.shape[0] == 48:
        return comfy.sd.TEModel.CLIP_G
    shared = sd.get("shared.weight")
    if shared is not None and shared.shape[1] == 128 and "encoder.block.0.layer.1.DenseReluDense.wi_1.weight" in sd:
        return comfy.sd.TEModel.T5_XXL
    return _detect(sd)


comfy.sd.detect_te_model = _tiny_detect

import comfy.text_encoders.sd3_clip  # noqa: E402

_sd3_load = comfy.text_encoders.sd3_clip.SD3ClipModel.load_sd


def _tiny_sd3_load(self, sd):  # ComfyUI routes CLIP-G by its 31st layer; the tiny G is told by its width
    ln = sd.get("text_model.final_layer_norm.weight")
    if ln is not None and ln.shape[0] == 48:
        return self.clip_g.load_sd(sd)
    return _sd3_load(self, sd)


comfy.text_encoders.sd3_clip.SD3ClipModel.load_sd = _tiny_sd3_load

import comfy.ldm.modules.diffusionmodules.model as vae_model  # noqa: E402

# The tiny 16-channel VAE (tests/flow_models.flow_vae): 32 base channels, multipliers (1, 2, 2, 2), one res block
# per encoder level; ComfyUI's VAE class hard-codes the full-size 128 / (1, 2, 4, 4) / 2.
TINY_VAE = {"ch": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1}


def _tiny_vae(cls):
    init = cls.__init__

    def tiny_init(self, *args, **kwargs):
        if kwargs.get("z_channels") == 16:
            kwargs.update(TINY_VAE)
        return init(self, *args, **kwargs)

    cls.__init__ = tiny_init


_tiny_vae(vae_model.Encoder)
_tiny_vae(vae_model.Decoder)


import comfy.cldm.dit_embedder as dit_embedder  # noqa: E402

# Stability's SD3.5 ControlNets: ComfyUI builds their pooled-text embedder 2048 wide (CLIP-L 768 + CLIP-G 1280); the
# tiny text encoders' pooled output is 32 + 48 = 80 wide.
_cn_init = dit_embedder.ControlNetEmbedder.__init__


def _tiny_cn_init(self, *args, adm_in_channels=2048, **kwargs):
    return _cn_init(self, *args, adm_in_channels=80 if adm_in_channels == 2048 else adm_in_channels, **kwargs)


dit_embedder.ControlNetEmbedder.__init__ = _tiny_cn_init
