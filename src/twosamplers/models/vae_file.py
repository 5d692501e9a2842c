"""VAEs: the pixel <-> latent half of a model, and VAE files loaded on their own (ComfyUI's VAELoader).

`AutoencoderCoder` is the encode/decode behaviour shared by a whole checkpoint (`SDModel`) and a lone VAE
(`VaeModel`): pixels are cropped to a multiple of the downscale factor (centred) and mapped to [-1, 1], the
encoder's distribution mean is the latent (unscaled, as ComfyUI's VAEEncode returns it), decoded pixels are
mapped back to [0, 1]. `encode_tiled` / `decode_tiled` are ComfyUI's VAEEncodeTiled / VAEDecodeTiled: three
tilings (tile, tile/2 x 2*tile and 2*tile x tile/2) blended by `tiling.tiled_scale` and averaged.

`load_vae_file(path)` reads a VAE file of the kinds people keep in ComfyUI's models/vae/ and refuses anything
else with a message that says what the file looks like. Layouts: the original (LDM) keys of the SD1.x / SD2.x /
SDXL 4-channel KL autoencoder (`encoder.down.0.block.0...`, also under `first_stage_model.` or `vae.`, as in a
whole checkpoint) and diffusers' AutoencoderKL keys (`encoder.down_blocks.0.resnets.0...`). The latent format
(channels, downscale) is read from the weights; a new family (e.g. a 16-channel VAE) adds a branch to
`detect_vae_layout` and, if it needs one, its own decoder class.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine.tiling import tiled_scale
from .base import LatentFormat

SUPPORTED_VAES = ("the 4-channel KL autoencoder of SD1.x, SD2.x and SDXL (kl-f8) and the 16-channel one of Flux.1 "
                  "and SD3.x (ae.safetensors), in the original (LDM) key layout or diffusers' AutoencoderKL layout")


class VaeFileError(ValueError):
    """A file that cannot be loaded as a supported VAE."""


class AutoencoderCoder:
    """Encode/decode through `self.vae` (a diffusers AutoencoderKL) in `self.vae_dtype` on `self.vae_device`;
    needs `self.latent_format` (its downscale)."""

    @property
    def vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _check_latent(self, samples) -> None:
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
            raise ValueError("samples must be a latent tensor (B, C, H, W)")
        channels = int(self.vae.config.latent_channels)
        if samples.shape[1] != channels:
            raise ValueError(f"the latent has {samples.shape[1]} channels but this VAE decodes {channels}-channel "
                             "latents (a VAE of another model family?)")

    def _vae_in(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
            raise ValueError(f"pixels must be a (B, H, W, 3) tensor in [0, 1], got "
                             f"{tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__}")
        pixels = pixels[..., :3]
        f = self.latent_format.downscale
        h, w = pixels.shape[1] // f * f, pixels.shape[2] // f * f
        if h == 0 or w == 0:
            raise ValueError(f"image {pixels.shape[2]}x{pixels.shape[1]} is smaller than {f} pixels")
        if (h, w) != tuple(pixels.shape[1:3]):  # ComfyUI crops to a multiple of 8, centred
            y0, x0 = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
            pixels = pixels[:, y0:y0 + h, x0:x0 + w]
        return pixels.movedim(-1, 1).to(device=self.vae_device, dtype=self.vae_dtype) * 2.0 - 1.0

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, H, W, 3) in [0, 1] -> unscaled latent (the distribution's mean), like VAEEncode."""
        x = self._vae_in(pixels.float())
        return self.vae.encode(x).latent_dist.mode().float().cpu()

    @torch.no_grad()
    def decode_latent(self, samples: torch.Tensor, *, tiled: bool | None = None, tile_size: int = 64,
                      overlap: int = 16) -> torch.Tensor:
        """Latent -> pixels (B, H, W, 3) in [0, 1] on CPU. tiled None: whole image, falling back to tiles of
        `tile_size` latent pixels when the device runs out of memory; True: always tiled."""
        self._check_latent(samples)
        z = samples.to(device=self.vae_device, dtype=self.vae_dtype)
        if not tiled:
            try:
                return self._pixels_out(self.vae.decode(z).sample)
            except torch.OutOfMemoryError:
                if tiled is False:
                    raise
                if z.is_cuda:
                    torch.cuda.empty_cache()
                warnings.warn("VAE decode ran out of memory; decoding in tiles", stacklevel=2)
        return self._pixels_out(self._decode_tiled(z, tile_size, overlap))

    def _decode_tiled(self, z: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        if tile < 8 or not 0 <= overlap < tile:
            raise ValueError(f"tile_size must be >= 8 and 0 <= overlap < tile_size (got {tile}, {overlap})")
        f = self.latent_format.downscale
        b, _, h, w = z.shape
        out = None
        weight = None
        stride = tile - overlap

        def starts(n: int) -> list[int]:
            if n <= tile:
                return [0]
            s = list(range(0, n - tile, stride)) + [n - tile]
            return sorted(set(s))

        for y in starts(h):
            for x in starts(w):
                th, tw = min(tile, h - y), min(tile, w - x)
                dec = self.vae.decode(z[:, :, y:y + th, x:x + tw]).sample.float()
                if out is None:
                    out = torch.zeros(b, dec.shape[1], h * f, w * f, device=dec.device)
                    weight = torch.zeros(1, 1, h * f, w * f, device=dec.device)
                ramp_y = _feather(th * f, overlap * f if y > 0 else 0, overlap * f if y + th < h else 0, dec.device)
                ramp_x = _feather(tw * f, overlap * f if x > 0 else 0, overlap * f if x + tw < w else 0, dec.device)
                m = ramp_y[:, None] * ramp_x[None, :]
                out[:, :, y * f:(y + th) * f, x * f:(x + tw) * f] += dec * m
                weight[:, :, y * f:(y + th) * f, x * f:(x + tw) * f] += m
        return out / weight

    @staticmethod
    def _pixels_out(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()

    # ------------------------------------------------------------------ ComfyUI's tiled nodes
    @torch.no_grad()
    def decode_tiled(self, samples: torch.Tensor, tile: int = 64, overlap: int = 8) -> torch.Tensor:
        """VAEDecodeTiled: `tile` and `overlap` in latent pixels (ComfyUI passes tile_size // 8)."""
        self._check_latent(samples)
        f = int(self.latent_format.downscale)

        def fn(z):
            return self.vae.decode(z.to(self.vae_device, self.vae_dtype)).sample.float()

        out = tiled_scale(samples, fn, tile // 2, tile * 2, overlap, f)
        out = out + tiled_scale(samples, fn, tile * 2, tile // 2, overlap, f)
        out = out + tiled_scale(samples, fn, tile, tile, overlap, f)
        return self._pixels_out(out / 3.0)

    @torch.no_grad()
    def encode_tiled(self, pixels: torch.Tensor, tile: int = 512, overlap: int = 64) -> torch.Tensor:
        """VAEEncodeTiled: `tile` and `overlap` in image pixels."""
        x = self._vae_in(pixels.float()).float().cpu()
        f = int(self.latent_format.downscale)
        channels = int(self.latent_format.channels)

        def fn(a):
            return self.vae.encode(a.to(self.vae_device, self.vae_dtype)).latent_dist.mode().float()

        out = tiled_scale(x, fn, tile, tile, overlap, 1 / f, channels)
        out += tiled_scale(x, fn, tile * 2, tile // 2, overlap, 1 / f, channels)
        out += tiled_scale(x, fn, tile // 2, tile * 2, overlap, 1 / f, channels)
        return out / 3.0


def _feather(n: int, lead: int, tail: int, device) -> torch.Tensor:
    """Blend weights along one tile axis: linear ramps over the overlapping borders, 1 elsewhere."""
    w = torch.ones(n, device=device)
    if lead:
        w[:lead] = torch.linspace(1.0 / (lead + 1), 1.0, lead, device=device)
    if tail:
        w[n - tail:] = torch.linspace(1.0, 1.0 / (tail + 1), tail, device=device)
    return w




# ------------------------------------------------------------------------------------------ VAE files
@dataclass(frozen=True)
class VaeLayout:
    kind: str                 # "ldm" | "diffusers"
    latent_channels: int
    prefix: str = ""          # stripped before conversion ("first_stage_model." in a whole checkpoint)


_LDM_PREFIXES = ("", "first_stage_model.", "vae.")


def detect_vae_layout(sd: dict[str, torch.Tensor], source: str = "VAE file") -> VaeLayout:
    """Which supported VAE layout `sd` holds; a clear VaeFileError naming what it looks like otherwise."""
    for p in _LDM_PREFIXES:
        if p + "encoder.conv_in.weight" in sd and p + "decoder.conv_in.weight" in sd:
            if p + "encoder.down.0.block.0.conv1.weight" in sd:
                kind = "ldm"
            elif p + "encoder.down_blocks.0.resnets.0.conv1.weight" in sd:
                kind = "diffusers"
            else:
                break
            conv = sd[p + "decoder.conv_in.weight"]
            channels = int(conv.shape[1]) if conv.ndim == 4 else -1
            if channels != 4:
                raise VaeFileError(f"{source}: a VAE with {channels} latent channels is not supported. "
                                   f"Supported: {SUPPORTED_VAES}.")
            if conv.ndim != 4 or any(k.startswith(p + "decoder.up.0.time") or ".temporal" in k for k in sd):
                raise VaeFileError(f"{source}: a video VAE is not supported. Supported: {SUPPORTED_VAES}.")
            return VaeLayout(kind, channels, p)
    keys = list(sd)[:4000]
    if any(k.startswith(("taesd_", "decoder.layers.", "encoder.layers.")) for k in keys):
        what = "a TAESD approximate VAE"
    elif any(k.startswith("model.diffusion_model.") for k in keys):
        what = "a model checkpoint without VAE weights"
    elif any(k.startswith(("lora_", "lora_unet")) or ".lora_" in k for k in keys):
        what = "a LoRA"
    elif any(k.startswith("decoder.") for k in keys) and not any(k.startswith("encoder.") for k in keys):
        what = "a decoder without its encoder"
    else:
        what = f"an unknown layout (first keys: {', '.join(keys[:3]) or 'none'})"
    raise VaeFileError(f"{source}: not a supported VAE file: it looks like {what}. Supported: {SUPPORTED_VAES}.")


def _diffusers_vae_config(sd: dict[str, torch.Tensor]) -> dict:
    pat = re.compile(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.conv2\.weight")
    levels: dict[int, tuple[int, int]] = {}
    for k, v in sd.items():
        m = pat.fullmatch(k)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            if j >= levels.get(i, (-1, 0))[0]:
                levels[i] = (j, int(v.shape[0]))
    n = len(levels)
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [levels[i][1] for i in range(n)],
        "layers_per_block": levels[0][0] + 1,
        "latent_channels": int(sd["decoder.conv_in.weight"].shape[1]),
        "norm_num_groups": 32,
    }


def build_vae_module(sd: dict[str, torch.Tensor], layout: VaeLayout, dtype: torch.dtype, source: str):
    """A diffusers AutoencoderKL holding the file's weights (architecture inferred from their shapes)."""
    from diffusers import AutoencoderKL

    from .sd_loading import CheckpointError, _materialize, build_vae

    sub = {k[len(layout.prefix):]: v for k, v in sd.items() if k.startswith(layout.prefix)}
    try:
        if layout.kind == "ldm":
            ldm = {"first_stage_model." + k: v for k, v in sub.items()
                   if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
            return build_vae(ldm, "sd1", dtype)
        state = {k: v for k, v in sub.items()
                 if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
        return _materialize(AutoencoderKL, {"_class_name": "AutoencoderKL", **_diffusers_vae_config(state)}, state,
                            "VAE", dtype)
    except (CheckpointError, KeyError, IndexError, RuntimeError) as e:
        raise VaeFileError(f"{source}: the VAE weights do not form a KL autoencoder ({e})") from None


class VaeModel(AutoencoderCoder):
    """A VAE on its own (ComfyUI's VAE type from VAELoader): encode_image / decode_latent and the tiled
    variants, and the latent format its weights imply."""

    def __init__(self, vae, vae_dtype: torch.dtype, source: str = "") -> None:
        self.vae = vae
        self.vae_dtype = vae_dtype
        self.source = source
        blocks = len(vae.config.block_out_channels)
        self.latent_format = LatentFormat(channels=int(vae.config.latent_channels), downscale=2 ** (blocks - 1))

    def __repr__(self) -> str:
        return f"VaeModel({self.latent_format.channels} channels, /{self.latent_format.downscale}, {self.source!r})"

    @property
    def device(self) -> torch.device:
        return self.vae_device


_CACHE: dict[tuple, object] = {}  # VaeModel, or a FlowVAE for 16-channel files
_LOCK = threading.Lock()


def load_vae_file(path: str | Path, *, device=None, dtype=None, allow_pickle: bool = False) -> VaeModel:
    """A VAE file (models/vae/*.safetensors; a pickle file only with allow_pickle) -> VaeModel on `device`.
    float32 on the CPU; on a GPU bfloat16 where it has it (fp16 VAEs overflow), as the checkpoint loader does.
    Cached per (file, modification time, device, dtype)."""
    from .devices import _vae_dtype, resolve_device_dtype
    from .flow_vae import is_flow_vae, load_flow_vae
    from .sd_loading import read_state_dict

    path = Path(path).expanduser()
    dev, dt = resolve_device_dtype(device, dtype)
    vae_dt = _vae_dtype(dev, dt)
    if not path.is_file():
        raise FileNotFoundError(f"VAE file not found: {path}")
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(dev), str(vae_dt))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    sd = read_state_dict(path, allow_pickle=allow_pickle)
    if is_flow_vae(sd):  # Flux / SD3: 16 latent channels, ComfyUI's VAE dtype for the device
        model = load_flow_vae(sd, device=dev)
        model.source = str(path)
        with _LOCK:
            return _CACHE.setdefault(key, model)
    layout = detect_vae_layout(sd, path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = build_vae_module(sd, layout, vae_dt, path.name).to(dev)
    model = VaeModel(module, vae_dt, str(path))
    with _LOCK:
        return _CACHE.setdefault(key, model)


__all__ = ["AutoencoderCoder", "SUPPORTED_VAES", "VaeFileError", "VaeLayout", "VaeModel", "detect_vae_layout",
           "load_vae_file"]
