"""Stable Diffusion 1.x / 2.x / SDXL through diffusers and transformers: the engine plus a network.

`SDModel` is a `NetworkModel`: the eps/v math, the quantized timesteps and the latent scale are
NetworkModel's own. The network is `UNetAdapter`, which calls diffusers' `UNet2DConditionModel` the way
ComfyUI calls its UNet (x_in, timestep, context, SDXL's pooled output and size conditioning). Text encoders
follow ComfyUI's prompt conventions (`sd_text.py`); the VAE encodes and decodes like ComfyUI's VAEEncode/
VAEDecode.

`load_sd(path_or_repo)` takes a diffusers folder (model_index.json), a single-file `.safetensors`
checkpoint (ComfyUI's models/checkpoints/*.safetensors; family detected from its keys and shapes), a
pickle checkpoint with `allow_pickle=True`, or a Hugging Face repo id.

diffusers and transformers are optional (`pip install twosamplers[sd]`); they are imported lazily.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .._paths import read_regular
from ..engine.schedules import ModelSamplingDiscrete
from .base import NetworkModel
from .cast import store_as
from .devices import _vae_dtype, resolve_device_dtype  # noqa: F401  (re-exported: models.sd.resolve_device_dtype)
from .embeddings import EmbeddingLibrary
from .inpaint import CONCAT_KEYS, EXTRA_CHANNELS, SD15_BLANK_LATENT, concat_cond
from .ip2p import EXTRA_CHANNELS as IP2P_CHANNELS
from .ip2p import ip2p_concat
from .packed_conv import pack as pack_convolutions
from .sd_loading import (
    FAMILY_NAMES,
    LATENT_SCALE,
    SUPPORTED,
    CheckpointError,
    PickleNotAllowedError,
    UnsupportedModelError,
    build_clip_l,
    build_open_clip,
    build_unet,
    build_vae,
    check_sdxl_markers,
    detect_family,
    edm_vpred_range,
    guess_prediction,
    pickle_only_folder,
    read_state_dict,
    read_state_dict_mapped,
    releasing,
)
from .sd_text import END_TOKEN, ClipTextEncoder, TokenizerSpec, clip_tokenizer, normalize_clip_skip
from .vae_file import AutoencoderCoder

__all__ = [
    "CheckpointError",
    "PickleNotAllowedError",
    "SDModel",
    "UNetAdapter",
    "UnsupportedModelError",
    "DtypePlan",
    "clear_cache",
    "dtype_plan",
    "load_sd",
    "resolve_device_dtype",
]

SDXL_SIZE_KEYS = ("height", "width", "crop_h", "crop_w", "target_height", "target_width")
REFINER_SIZE_KEYS = ("height", "width", "crop_h", "crop_w", "aesthetic_score")
# ComfyUI's SDXL refiner: aesthetic score 6 for positive prompts, 2.5 for negative ones unless a node set it
REFINER_ASCORE = {"positive": 6.0, "negative": 2.5}
# ComfyUI holds text-encoder weights in float16 on every device (computing in float32) unless --fp32-text-enc
TEXT_ENCODER_STORAGE = torch.float16
LATENT_PIXELS = 8  # ComfyUI 0.30 sizes an unset SDXL width/height as the latent's times 8 (the sampler's default)


def _require_sd_extra():
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError("the Stable Diffusion backend needs diffusers and transformers: "
                          "pip install 'twosamplers[sd]'") from e


class UNetAdapter(torch.nn.Module):
    """Calls a diffusers UNet2DConditionModel as ComfyUI calls its UNet: network(x_in, t, context, **extras).

    SDXL extras: `pooled_output` (B, 1280) and the size conditioning `height`, `width`, `crop_h`, `crop_w`,
    `target_height`, `target_width` (numbers or (B,) tensors; ComfyUI's defaults: the latent's size x 8, 0, 0,
    width, height), or a ready `add_time_ids` (B, 6); the refiner's `aesthetic_score` instead of the targets.
    Other extras are ignored for SD1.x/2.x, as ComfyUI does.
    """

    supports_control = True

    def __init__(self, unet, sdxl: bool, downscale: int = 8, refiner: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.sdxl = sdxl or refiner
        self.refiner = refiner
        self.downscale = downscale

    @staticmethod
    def _column(value, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
        if t.numel() == 1:
            return t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"size conditioning has {t.numel()} values for a batch of {batch}")
        return t

    def time_ids(self, batch: int, device, extras: dict, latent_hw: tuple[int, int] = (96, 96)) -> torch.Tensor:
        width = extras.get("width", latent_hw[1] * LATENT_PIXELS)
        height = extras.get("height", latent_hw[0] * LATENT_PIXELS)
        if self.refiner:
            vals = {"height": height, "width": width, "crop_h": extras.get("crop_h", 0),
                    "crop_w": extras.get("crop_w", 0),
                    "aesthetic_score": extras.get("aesthetic_score", REFINER_ASCORE["positive"])}
            return torch.stack([self._column(vals[k], batch, device) for k in REFINER_SIZE_KEYS], dim=1)
        vals = {
            "height": height, "width": width, "crop_h": extras.get("crop_h", 0), "crop_w": extras.get("crop_w", 0),
            "target_height": extras.get("target_height", height), "target_width": extras.get("target_width", width),
        }
        return torch.stack([self._column(vals[k], batch, device) for k in SDXL_SIZE_KEYS], dim=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None, **extras):
        if context is None:
            raise ValueError("Stable Diffusion needs text conditioning (context); got None")
        control = extras.pop("control", None)
        concat = extras.get("c_concat")
        added = None
        if self.sdxl:
            pooled = extras.get("pooled_output")
            if pooled is None:
                raise ValueError("SDXL needs 'pooled_output' in the conditioning (encode the prompt with "
                                 "model.encode_prompt, or add {'pooled_output': tensor(1, 1280)})")
            b = x.shape[0]
            ids = extras.get("add_time_ids")
            ids = ids.float().to(x.device) if ids is not None else self.time_ids(b, x.device, extras,
                                                                                 tuple(x.shape[-2:]))
            added = {"text_embeds": pooled.to(device=x.device, dtype=x.dtype), "time_ids": ids}
        residuals = {}
        if control is not None:
            residuals = self.control_residuals(x, timesteps, context, added, *control)
        if concat is not None:  # inpainting / edit UNets: noisy latent, then mask and masked-image / image latent
            x = torch.cat([x, concat.to(x)], dim=1)
        if "y" in extras:  # a class-embedding UNet (SD2.1 unCLIP: the image prompt's ADM vector)
            residuals["class_labels"] = extras["y"].to(device=x.device, dtype=x.dtype)
        if extras.get("gligen") is not None:  # GLIGEN text boxes (models/gligen.py)
            from .gligen import call_unet

            return call_unet(self.unet, extras["gligen"], x, {"timestep": timesteps, "encoder_hidden_states": context,
                                                              "added_cond_kwargs": added, "return_dict": False,
                                                              **residuals})[0]
        return self.unet(x, timesteps, encoder_hidden_states=context, added_cond_kwargs=added, return_dict=False,
                         **residuals)[0]

    def control_residuals(self, x, timesteps, context, added, active, batched_number: int) -> dict:
        """The UNet's extra inputs for the active ControlNets and T2I-Adapters (models/control.py), in application
        order, each scaled by its strength in its own dtype and cast to the UNet's: ControlNets' residuals summed
        onto the skip connections and the middle block; adapters' features summed per encoder block
        (`down_intrablock_additional_residuals`) and, for SDXL adapters, onto the middle block."""
        h, w = x.shape[-2] * self.downscale, x.shape[-1] * self.downscale
        down = mid = None
        intra: list | None = None
        for c in active:
            net = c.control_net
            if getattr(net, "family", None) in ("flux", "sd3"):
                raise TypeError(f"a {net.title} cannot guide a Stable Diffusion model")
            if getattr(net, "is_t2i_adapter", False):
                n, to_mid = net.placements(self.unet)
                # run in float32, the sampled latent's dtype in which ComfyUI runs it, whatever the UNet's
                feats = c.adapter_features(x.shape[0], h, w, batched_number, x.device, torch.float32)
                feats = [(f * c.strength).to(x.dtype) for f in feats]
                intra = feats[:n] if intra is None else [p + f for p, f in zip(intra, feats[:n], strict=True)]
                if to_mid:  # SDXL adapters: the last level goes to the middle block
                    mid = feats[3] if mid is None else mid + feats[3]
                continue
            hint = c.hint_for(x.shape[0], h, w, batched_number, x.device, net.dtype)
            d, m = net.residuals(x, timesteps, context, hint, added)
            d = [(r * c.strength).to(x.dtype) for r in d]
            m = (m * c.strength).to(x.dtype)
            down = d if down is None else [p + r for p, r in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        out = {}
        if intra is not None:  # the UNet pops these as it goes: a fresh list each call
            out["down_intrablock_additional_residuals"] = list(intra)
        if down is not None:
            out["down_block_additional_residuals"] = tuple(down)
            out["mid_block_additional_residual"] = mid
        elif mid is not None:  # SDXL adapters only: diffusers adds the last intrablock entry after the middle block
            out["down_intrablock_additional_residuals"].append(mid)
        return out


class SDModel(AutoencoderCoder, NetworkModel):
    """A Stable Diffusion checkpoint as a twosamplers model: NetworkModel around `UNetAdapter`, plus text
    encoders and a VAE for `encode_prompt`, `encode_image` and `decode_latent`."""

    def __init__(self, unet, vae, text_encoders: list[ClipTextEncoder], family: str, *, prediction: str = "eps",
                 linear_start: float = 0.00085, linear_end: float = 0.012, clip_skip: int | None = None,
                 vae_dtype: torch.dtype | None = None, source: str = "",
                 edm_vpred: tuple[float, float] | None = None) -> None:
        if family not in FAMILY_NAMES:
            raise UnsupportedModelError(f"unknown family {family!r}; supported: {SUPPORTED}")
        if edm_vpred is not None:  # (sigma_min, sigma_max): ComfyUI's V_PREDICTION_EDM model type (CosXL)
            from .model_sampling import ContinuousEDMSampling

            sampling = ContinuousEDMSampling("v", *edm_vpred)
        else:
            sampling = ModelSamplingDiscrete(prediction, linear_start, linear_end)
        super().__init__(UNetAdapter(unet, family == "sdxl", 2 ** (len(vae.config.block_out_channels) - 1),
                                     refiner=family == "sdxl_refiner"),
                         sampling,
                         latent_scale=LATENT_SCALE[family],
                         latent_channels=int(vae.config.latent_channels),
                         downscale=2 ** (len(vae.config.block_out_channels) - 1))
        self.unet = unet
        self.vae = vae
        extra = int(unet.config.in_channels) - int(vae.config.latent_channels)
        if extra not in (0, EXTRA_CHANNELS, IP2P_CHANNELS):
            raise UnsupportedModelError(f"a UNet with {unet.config.in_channels} input channels is not supported "
                                        f"(4 latent channels, or 4 + {EXTRA_CHANNELS} for inpainting models, "
                                        f"4 + {IP2P_CHANNELS} for InstructPix2Pix edit models)")
        if extra == IP2P_CHANNELS and family not in ("sd1", "sdxl"):
            raise UnsupportedModelError(f"a {FAMILY_NAMES[family]} UNet with {unet.config.in_channels} input "
                                        "channels is not supported (InstructPix2Pix edit models: SD1.x and SDXL)")
        self.inpainting = extra == EXTRA_CHANNELS
        self.ip2p = extra == IP2P_CHANNELS
        # ComfyUI scales the edit image's latent for EDM v-prediction SDXL edit models (CosXL edit) only
        self.ip2p_scaled = self.ip2p and edm_vpred is not None and family == "sdxl"
        self._blank: torch.Tensor | None = None
        self.text_encoders = text_encoders
        self.family = family
        self.clip_skip = normalize_clip_skip(clip_skip)
        self.vae_dtype = vae_dtype or next(vae.parameters()).dtype
        self.source = source

    @contextlib.contextmanager
    def sampling_session(self):
        """Around a sampling pass: the UNet's convolution weights in oneDNN's layout on a CPU, from this pass on
        until something needs the ordinary weights (packed_conv)."""
        pack_convolutions(self.unet)
        yield

    def __repr__(self) -> str:
        return (f"SDModel({FAMILY_NAMES[self.family]}, prediction={self.model_sampling.prediction!r}, "
                f"device={self.device}, dtype={self.dtype}, source={self.source!r})")

    def load_controlnet(self, path, *, allow_pickle: bool = False):
        """A ControlNet file or folder loaded for this model (same device and dtype; refused when it was made
        for another family). Cached per file."""
        from .controlnet import load_controlnet

        return load_controlnet(path, unet=self.unet, allow_pickle=allow_pickle)

    # ------------------------------------------------------------------------------------ inpainting
    def extra_conds(self, extras: dict, *, latent_image: torch.Tensor, denoise_mask: torch.Tensor | None,
                    prompt_type: str = "", seed: int | None = None) -> dict:
        """An entry's network extras for one sampling run: inpainting models get their 5 extra input channels
        (models/inpaint.py); the inpainting keys are dropped for the others, as ComfyUI ignores them. The SDXL
        refiner's aesthetic score defaults by `prompt_type` ("positive" 6, "negative" 2.5), as in ComfyUI. Image
        prompts (unCLIPConditioning) become SDXL's pooled output (models/unclip.py; `seed`: the run's)."""
        out = {k: v for k, v in extras.items() if k not in CONCAT_KEYS}
        if "unclip_conditioning" in out:
            from .unclip_adm import unclip_extras

            out = unclip_extras(self, out, seed)
        if self.family in ("sdxl", "sdxl_refiner") and latent_image is not None:
            # every size value made explicit, so that all entries batch into one network call: unset sizes are the
            # whole latent's x 8, as ComfyUI's sampler sets them; no crop; targets = sizes (without a latent, the
            # network's own defaults apply: UNetAdapter.time_ids)
            out.setdefault("width", torch.tensor([float(latent_image.shape[-1] * LATENT_PIXELS)]))
            out.setdefault("height", torch.tensor([float(latent_image.shape[-2] * LATENT_PIXELS)]))
            out.setdefault("crop_w", torch.tensor([0.0]))
            out.setdefault("crop_h", torch.tensor([0.0]))
            if self.family == "sdxl":
                out.setdefault("target_width", out["width"])
                out.setdefault("target_height", out["height"])
            else:
                out.setdefault("aesthetic_score",
                               torch.tensor([REFINER_ASCORE.get(prompt_type, REFINER_ASCORE["positive"])]))
        if self.inpainting:
            out["c_concat"] = concat_cond(extras, latent_image=latent_image, denoise_mask=denoise_mask,
                                          process_in=self.latent_format.process_in, blank=self.blank_latent())
        elif self.ip2p:
            out["c_concat"] = ip2p_concat(extras, latent_image=latent_image,
                                          process_in=self.latent_format.process_in if self.ip2p_scaled else None)
        return out

    def blank_latent(self) -> torch.Tensor:
        """The model-space latent of a blank (mid-grey) image, (1, C, 1, 1): ComfyUI's constants for SD1.x/2.x,
        this VAE's encoding of grey for SDXL."""
        if self._blank is None:
            if self.family in ("sd1", "sd2"):
                self._blank = torch.tensor(SD15_BLANK_LATENT).reshape(1, 4, 1, 1)
            else:
                grey = torch.full((1, 64, 64, 3), 0.5)
                z = self.latent_format.process_in(self.encode_image(grey))
                self._blank = z.mean(dim=(2, 3), keepdim=True)
        return self._blank

    # ---------------------------------------------------------------------------------------- text
    def encode_prompt(self, text: str, *, clip_skip: int | None = None, width: int | None = None,
                      height: int | None = None, crop_w: int = 0, crop_h: int = 0, target_width: int | None = None,
                      target_height: int | None = None, aesthetic_score: float | None = None,
                      text_l: str | None = None, embeddings=None) -> list:
        """Prompt -> CONDITIONING [[cond (1, 77*k, D), {"pooled_output": (1, P), ...}]] like ComfyUI's
        CLIPTextEncode (after CLIPSetLastLayer when `clip_skip` or the model's clip_skip is set).

        SDXL: the size arguments are ComfyUI's CLIPTextEncodeSDXL fields; unset ones take ComfyUI 0.30's
        sampling defaults (the latent's size x 8, no crop, target = size). They are stored as (1,) tensors so
        that positive and negative prompts with different sizes still batch into one network call. `text_l`
        gives CLIP-L its own prompt (CLIPTextEncodeSDXL's text_l; `text` is then text_g): the shorter of the two
        is padded with empty-prompt chunks to the other's length, as that node does.
        SDXL refiner: one text encoder (OpenCLIP bigG); `width`, `height`, `crop_w`, `crop_h` and
        `aesthetic_score` are CLIPTextEncodeSDXLRefiner's; unset, the latent's size x 8, no crop, and an
        aesthetic score of 6 for a positive and 2.5 for a negative prompt (ComfyUI's defaults).
        embeddings: an `EmbeddingLibrary` (or a directory) for `embedding:name` words.
        """
        if embeddings is not None and not isinstance(embeddings, EmbeddingLibrary):
            embeddings = EmbeddingLibrary(embeddings)
        skip = normalize_clip_skip(clip_skip) if clip_skip is not None else self.clip_skip
        if self.family == "sdxl":
            (l_enc, g_enc) = self.text_encoders
            tg = g_enc.tokens(text, embeddings)
            tl = l_enc.tokens(text if text_l is None else text_l, embeddings)
            if text_l is not None:  # CLIPTextEncodeSDXL: equal chunk counts, padded with empty prompts
                while len(tl) < len(tg):
                    tl += l_enc.tokens("", None)
                while len(tg) < len(tl):
                    tg += g_enc.tokens("", None)
            cl, _ = l_enc.encode_tokens(tl, skip)
            cg, pooled = g_enc.encode_tokens(tg, skip)
            n = min(cl.shape[1], cg.shape[1])
            cond = torch.cat([cl[:, :n], cg[:, :n]], dim=-1)
            extras: dict = {"pooled_output": pooled}
            sizes = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                     "target_width": target_width, "target_height": target_height}
            if any(v for k, v in sizes.items() if k.startswith("crop")) or \
                    any(v is not None for k, v in sizes.items() if not k.startswith("crop")):
                for k, v in sizes.items():
                    if v is not None:  # unset ones: the sampler's defaults (latent size x 8, target = size)
                        extras[k] = torch.tensor([float(v)])
                for side in ("width", "height"):
                    if side in extras:
                        extras.setdefault("target_" + side, extras[side])
            return [[cond, extras]]
        enc = self.text_encoders[0]
        chunks = enc.tokens(text, embeddings)
        if text_l is not None and self.family == "sdxl_refiner":
            # CLIPTextEncodeSDXL on a refiner: its CLIP-G prompt is padded to text_l's chunk count, unused after
            while len(chunks) < len(enc.tokens(text_l, embeddings)):
                chunks += enc.tokens("", None)
        cond, pooled = enc.encode_tokens(chunks, skip)
        extras = {"pooled_output": pooled}
        if self.family == "sdxl_refiner":
            given = {"width": width, "height": height, "crop_w": crop_w or None, "crop_h": crop_h or None,
                     "aesthetic_score": aesthetic_score}
            for k, v in given.items():
                if v is not None:  # unset: the latent's size x 8, no crop, 6 / 2.5 by prompt type (ComfyUI)
                    extras[k] = torch.tensor([float(v)])
        return [[cond, extras]]

    def with_loras(self, loras, *, allow_pickle: bool = False):
        """This model with LoRAs ([Lora(path, strength_model, strength_clip), ...], applied in order): a
        `LoraModel` over the same weights, patched only while it samples or encodes a prompt. Files are checked
        (shapes, values, keys) now."""
        from .lora import with_loras

        return with_loras(self, loras, allow_pickle=allow_pickle)


@dataclass(frozen=True)
class DtypePlan:
    """Where each part of a checkpoint is held and computed: ComfyUI 0.30's choices for a device.

    UNet: float32 on a CPU, float16 on CUDA (SD1.x/2.x/SDXL list float16 first; `dtype` overrides). Text
    encoders: held in float16 and computed in float32 on every device (`fp32_text_enc` holds them in float32).
    VAE: float32 on a CPU; on CUDA bfloat16 where the GPU has it, else float32 (and float32 with a float32 UNet).
    """

    unet: torch.dtype
    text_storage: torch.dtype
    text_compute: torch.dtype
    vae: torch.dtype


def dtype_plan(device=None, dtype=None, *, fp32_text_enc: bool = False) -> DtypePlan:
    dev, dt = resolve_device_dtype(device, dtype)
    return DtypePlan(dt, torch.float32 if fp32_text_enc else TEXT_ENCODER_STORAGE, torch.float32,
                     _vae_dtype(dev, dt))


# ---------------------------------------------------------------------------------------- loading
_CACHE: dict[tuple, SDModel] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget the models load_sd shares between callers."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _prediction_arg(prediction: str | None) -> str | None:
    if prediction is None:
        return None
    names = {"eps": "eps", "epsilon": "eps", "v": "v", "v_prediction": "v", "v-prediction": "v"}
    p = names.get(str(prediction).lower())
    if p is None:
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
    return p


def load_sd(path_or_repo: str | os.PathLike, *, device=None, dtype=None, allow_pickle: bool = False,
            prediction: str | None = None, clip_skip: int | None = None, fp32_text_enc: bool = False,
            cache: bool = True) -> SDModel:
    """Load a Stable Diffusion model (SD1.x, SD2.x eps/v, SDXL base) as an `SDModel`.

    path_or_repo: a diffusers folder (with model_index.json), a single-file `.safetensors` checkpoint, a pickle
    checkpoint (`.ckpt`/`.pt`/...; only with allow_pickle=True, then read with torch.load(weights_only=True)),
    or a Hugging Face repo id ("owner/name", needs the hub or its local cache).
    prediction: "eps" or "v". Diffusers folders take it from scheduler_config.json. Single files mostly cannot
    say: a "v_pred" marker key means v; SD2.x uses ComfyUI's heuristic (a late norm bias's spread) with a
    warning; everything else is eps. Pass it to override.
    clip_skip: ComfyUI's CLIPSetLastLayer value (-2 = penultimate layer); None keeps the family default.
    dtype is the UNet's; the text encoders follow ComfyUI on every device: weights held in float16, computed in
    float32 (so LoRA-merged text-encoder weights are rounded to float16 as ComfyUI rounds them);
    fp32_text_enc=True holds them in float32 (ComfyUI's --fp32-text-enc).
    Models are cached per (file, device, dtype, options) so that two samplers share one copy.
    """
    _require_sd_extra()
    dev, dt = resolve_device_dtype(device, dtype)
    pred = _prediction_arg(prediction)
    skip = normalize_clip_skip(clip_skip)
    src = os.fspath(path_or_repo)
    path = Path(src).expanduser()
    if path.exists():
        path = path.resolve()
        stamp = path.stat().st_mtime_ns if path.is_file() else (path / "model_index.json").stat().st_mtime_ns \
            if (path / "model_index.json").exists() else 0
        key = (str(path), stamp, str(dev), str(dt), pred, skip, allow_pickle, bool(fp32_text_enc))
    elif _looks_like_repo_id(src):
        key = ("hf", src, str(dev), str(dt), pred, skip, bool(fp32_text_enc))
    else:
        raise FileNotFoundError(f"model not found: {src!r} is neither a file, a folder nor a Hugging Face repo id "
                                "('owner/name')")
    if cache:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
    te_dt = dtype_plan(dev, dt, fp32_text_enc=fp32_text_enc).text_storage
    if path.exists() and path.is_dir():
        model = _load_folder(path, dev, dt, pred, skip, te_dt, allow_pickle=allow_pickle)
    elif path.exists():
        model = _load_single_file(path, dev, dt, pred, skip, allow_pickle, te_dt)
    else:
        model = _load_folder(_download_repo(src), dev, dt, pred, skip, te_dt, source=src)
    if cache:
        with _CACHE_LOCK:
            model = _CACHE.setdefault(key, model)
    return model


def _looks_like_repo_id(s: str) -> bool:
    parts = s.split("/")
    return (len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))
            and not s.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")))


def _download_repo(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "*/config.json", "scheduler/*", "tokenizer*/*",
                "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder*/model.safetensors"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated repo, ...
        raise FileNotFoundError(f"could not fetch Hugging Face repo {repo_id!r} ({type(e).__name__}: {e}). "
                                "Without network access pass a local diffusers folder or a .safetensors file."
                                ) from None


def _text_encoder(module, te_dt: torch.dtype, dev):
    """A text encoder held in `te_dt` and computing in float32 (ComfyUI's text encoders on every device)."""
    return store_as(module, te_dt, torch.float32).to(dev)


def _load_single_file(path: Path, dev, dt, pred, skip, allow_pickle, te_dt=torch.float32) -> SDModel:
    if path.suffix.lower() == ".safetensors":
        sd, mapped = read_state_dict_mapped(path)  # views of the file, released as they are copied
    else:
        sd, mapped = read_state_dict(path, allow_pickle=allow_pickle), None
    with releasing(mapped):
        return _build_single_file(sd, path, dev, dt, pred, skip, te_dt)


def _build_single_file(sd: dict, path: Path, dev, dt, pred, skip, te_dt) -> SDModel:
    fam = detect_family(sd, str(path))
    edm = None
    if fam.name == "sdxl":
        check_sdxl_markers(sd, str(path))
        edm = edm_vpred_range(sd) if pred is None else None
    if pred is None:
        pred, how = guess_prediction(sd, fam.name)
        if fam.name == "sd2":
            warnings.warn(f"{path.name}: SD2.x checkpoints do not record eps or v prediction; using {pred!r} by "
                          f"{how}. Pass prediction='eps' or 'v' (--prediction) to override.", stacklevel=3)
    tok = clip_tokenizer()
    if fam.name == "sd1":
        encoders = [ClipTextEncoder(_text_encoder(build_clip_l(sd, fam.clip_l_prefix, te_dt), te_dt, dev),
                                    TokenizerSpec(tok, END_TOKEN), embedding_key="clip_l")]
    elif fam.name == "sd2":
        te = _text_encoder(build_open_clip(sd, fam.clip_g_prefix, te_dt, with_projection=False), te_dt, dev)
        encoders = [ClipTextEncoder(te, TokenizerSpec(tok, 0), layer_idx=-2, layer_norm_hidden_state=True,
                                    embedding_key="clip_h")]
    elif fam.name == "sdxl_refiner":
        te_g = _text_encoder(build_open_clip(sd, fam.clip_g_prefix, te_dt, with_projection=True), te_dt, dev)
        encoders = [ClipTextEncoder(te_g, TokenizerSpec(tok, 0), layer_idx=-2, layer_norm_hidden_state=False,
                                    projected_pooled=True, embedding_key="clip_g")]
    else:
        te_l = _text_encoder(build_clip_l(sd, fam.clip_l_prefix, te_dt), te_dt, dev)
        te_g = _text_encoder(build_open_clip(sd, fam.clip_g_prefix, te_dt, with_projection=True), te_dt, dev)
        encoders = [ClipTextEncoder(te_l, TokenizerSpec(tok, END_TOKEN), layer_idx=-2, layer_norm_hidden_state=False,
                                    embedding_key="clip_l"),
                    ClipTextEncoder(te_g, TokenizerSpec(tok, 0), layer_idx=-2, layer_norm_hidden_state=False,
                                    projected_pooled=True, embedding_key="clip_g")]
    unet = build_unet(sd, fam.name, dt).to(dev)
    vae_dt = _vae_dtype(dev, dt)
    vae = build_vae(sd, fam.name, vae_dt).to(dev)
    del sd
    return SDModel(unet, vae, encoders, fam.name, prediction=pred, clip_skip=skip, vae_dtype=vae_dt,
                   source=str(path), edm_vpred=edm)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(read_regular(path, "config file", 64 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def _check_folder(path: Path) -> tuple[bool, dict]:
    """A diffusers folder we can load: -> (is SDXL, scheduler config); a clear error otherwise."""
    index_file = path / "model_index.json"
    if not index_file.exists():
        raise CheckpointError(f"{path} is a folder without model_index.json: not a diffusers model folder. "
                              "Pass a diffusers folder or a .safetensors checkpoint file.")
    index = _read_json(index_file)
    cls = str(index.get("_class_name", ""))
    if "unet" not in index or "vae" not in index:
        raise UnsupportedModelError(f"{path}: pipeline {cls or '?'} has no UNet/VAE. Supported: {SUPPORTED}.")
    sdxl = "text_encoder_2" in index and index.get("text_encoder_2") not in (None, [None, None])
    has_te1 = index.get("text_encoder") not in (None, [None, None])
    if sdxl and not has_te1:
        raise UnsupportedModelError(f"{path}: the SDXL refiner is not supported. Supported: {SUPPORTED}.")
    if not has_te1:
        raise UnsupportedModelError(f"{path}: pipeline {cls or '?'} has no text encoder. Supported: {SUPPORTED}.")
    unet_cfg = _read_json(path / "unet" / "config.json")
    if int(unet_cfg.get("in_channels", 4)) not in (4, 4 + EXTRA_CHANNELS, 4 + IP2P_CHANNELS):
        raise UnsupportedModelError(f"{path}: a UNet with {unet_cfg.get('in_channels')} input channels is not "
                                    f"supported. Supported: {SUPPORTED} with 4 latent channels (9 for inpainting, "
                                    "8 for InstructPix2Pix edit models).")
    sched_file = path / "scheduler" / "scheduler_config.json"
    sched = _read_json(sched_file) if sched_file.exists() else {}
    if sched.get("beta_schedule", "scaled_linear") != "scaled_linear":
        raise UnsupportedModelError(f"{path}: beta_schedule {sched.get('beta_schedule')!r} is not supported "
                                    "(only scaled_linear, the SD1/SD2/SDXL schedule)")
    return sdxl, sched


def _folder_tokenizer(path: Path, sub: str, encoder) -> TokenizerSpec:
    """The folder's own tokenizer (its vocabulary and special tokens); the shipped CLIP one only when the
    folder has none and the text encoder has CLIP's vocabulary size."""
    from transformers import CLIPTokenizer

    folder = path / sub
    vocab_size = int(encoder.config.vocab_size)
    if any((folder / f).exists() for f in ("vocab.json", "tokenizer.json", "tokenizer_config.json")):
        try:
            tok = CLIPTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder}: cannot load the tokenizer ({type(e).__name__}: {e})") from None
    elif vocab_size == len(clip_tokenizer()):
        tok = clip_tokenizer()
    else:
        raise CheckpointError(f"{path}: no {sub}/ folder with a tokenizer, and the text encoder's vocabulary "
                              f"({vocab_size} tokens) is not CLIP's ({len(clip_tokenizer())})")
    if len(tok) > vocab_size:
        raise CheckpointError(f"{folder}: the tokenizer has {len(tok)} tokens but the text encoder only "
                              f"{vocab_size}; they do not belong together")
    ids = {k: getattr(tok, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    if ids["bos"] is None or ids["eos"] is None:
        raise CheckpointError(f"{folder}: the tokenizer has no start/end token (bos/eos)")
    pad = ids["eos"] if ids["pad"] is None else ids["pad"]
    return TokenizerSpec(tok, pad_token=int(pad), start_token=int(ids["bos"]), end_token=int(ids["eos"]))


def _load_folder(path: Path, dev, dt, pred, skip, te_dt=torch.float32, source: str | None = None,
                 allow_pickle: bool = False) -> SDModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    sdxl, sched = _check_folder(path)
    pickles = pickle_only_folder(path)
    if pickles and not allow_pickle:
        raise PickleNotAllowedError(
            f"{path}: the diffusers folder's weights are pickle files ({', '.join(pickles[:3])}), which can run code "
            "when loaded; refused. Convert them to .safetensors, or pass --allow-pickle (allow_pickle=True) if you "
            "trust the folder (they are then read weights-only).")
    folder_pred = _prediction_arg(sched.get("prediction_type", "epsilon"))
    load = {"torch_dtype": dt, "use_safetensors": not allow_pickle}
    from diffusers.utils import is_accelerate_available

    fast = {"low_cpu_mem_usage": is_accelerate_available()}  # without accelerate, say so instead of warning
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **load, **fast).to(dev)
        vae_dt = _vae_dtype(dev, dt)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=vae_dt, **fast,
                                            use_safetensors=not allow_pickle).to(dev)
        te_load = {"torch_dtype": te_dt, "use_safetensors": not allow_pickle}
        if sdxl:
            te_l = _text_encoder(CLIPTextModel.from_pretrained(path / "text_encoder", **te_load), te_dt, dev)
            te_g = _text_encoder(CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2", **te_load),
                                 te_dt, dev)
        else:
            te = _text_encoder(CLIPTextModel.from_pretrained(path / "text_encoder", **te_load), te_dt, dev)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot load the diffusers folder ({type(e).__name__}: {e})") from None
    for m in [unet, vae] + ([te_l, te_g] if sdxl else [te]):
        m.eval().requires_grad_(False)

    if sdxl:
        family = "sdxl"
        tl, tg = _folder_tokenizer(path, "tokenizer", te_l), _folder_tokenizer(path, "tokenizer_2", te_g)
        encoders = [ClipTextEncoder(te_l, tl, layer_idx=-2, layer_norm_hidden_state=False, embedding_key="clip_l"),
                    ClipTextEncoder(te_g, tg, layer_idx=-2, layer_norm_hidden_state=False, projected_pooled=True,
                                    embedding_key="clip_g")]
    else:
        t1 = _folder_tokenizer(path, "tokenizer", te)
        openclip = te.config.hidden_act == "gelu"
        if openclip:
            # diffusers' SD2 folders drop OpenCLIP's last layer and use the (now last) penultimate one, which
            # is ComfyUI's default too
            family = "sd2"
            encoders = [ClipTextEncoder(te, t1, layer_idx=None, dropped_layers=1, embedding_key="clip_h")]
        else:
            family = "sd1"
            encoders = [ClipTextEncoder(te, t1, embedding_key="clip_l")]
    return SDModel(unet, vae, encoders, family, prediction=pred or folder_pred,
                   linear_start=float(sched.get("beta_start", 0.00085)), linear_end=float(sched.get("beta_end", 0.012)),
                   clip_skip=skip, vae_dtype=vae_dt, source=source or str(path))
