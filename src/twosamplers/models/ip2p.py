"""InstructPix2Pix-style edit checkpoints (SD1.5 InstructPix2Pix, SDXL InstructPix2Pix, CosXL edit): UNets with
4 + 4 input channels, ComfyUI 0.30's rules.

The 4 extra channels are the latent of the image to edit, concatenated to the noisy latent ("c_concat"), per
conditioning entry: the entry's `concat_latent_image` (InstructPixToPixConditioning), else zeros; resized
bilinearly (centre crop) to the latent's size when its shape differs, brought to the latent's batch by nearest
index. Unlike inpainting models, no mask is read. The image latent is fed as the VAE gave it (unscaled) except
for EDM v-prediction SDXL checkpoints (CosXL edit: an `edm_vpred.sigma_max` key), which take it scaled into the
model's latent space, as ComfyUI decides from the checkpoint's own keys (a ModelSamplingContinuousEDM node later
on does not change it).
"""

from __future__ import annotations

import torch

from .control import center_upscale
from .inpaint import resize_to_batch

EXTRA_CHANNELS = 4  # the image latent


def ip2p_concat(extras: dict, *, latent_image: torch.Tensor, process_in=None) -> torch.Tensor:
    """The 4 extra input channels for one conditioning entry (see the module docstring).

    latent_image: the sampler's latent (B, 4, h, w), model space (only its shape and device are used);
    process_in: the model's latent scaling for CosXL-style checkpoints, None for the unscaled image latent."""
    image = extras.get("concat_latent_image")
    if image is None:
        image = torch.zeros_like(latent_image)
    else:
        image = image.to(latent_image.device, torch.float32)
    if image.shape[1:] != latent_image.shape[1:]:
        image = center_upscale(image, latent_image.shape[-2], latent_image.shape[-1], mode="bilinear")
    image = resize_to_batch(image, latent_image.shape[0])
    return process_in(image) if process_in is not None else image


__all__ = ["EXTRA_CHANNELS", "ip2p_concat"]
