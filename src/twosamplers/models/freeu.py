"""FreeU (Si et al. 2023, "FreeU: Free Lunch in Diffusion U-Net") as ComfyUI's FreeU and FreeU_V2 nodes apply it.

In every decoder (output) block of the UNet, before the block's input h and the skip connection s are joined:
when h has 4x the UNet's base width, h's first half of channels is scaled by b1 and s is Fourier-filtered with s1;
when h has 2x the base width, b2 and s2 (other widths are left alone). The filter multiplies the centred 2-D
spectrum of s (float32 FFT over the spatial axes) by `scale` on the 2x2 square around the centre (rows and columns
H//2 - 1 .. H//2, W//2 - 1 .. W//2) and by 1 elsewhere, and takes the real part of the inverse. FreeU_V2 scales
h's first half by (b - 1) * m + 1 instead, m being h's channel mean normalised to [0, 1] per image.

In diffusers' UNet the join is the concatenation [h, s] that each up-block resnet receives: the patch is a forward
pre-hook on those resnets, which splits the input at h's width (known from the UNet's config). The network is
shared: the hooks exist only while the FreeU model runs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

from .model_sampling import HookedModel, hoist, network_model


def fourier_filter(x: torch.Tensor, scale: float, threshold: int = 1) -> torch.Tensor:
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    b, c, h, w = freq.shape
    mask = torch.ones((b, c, h, w), device=x.device)
    ch, cw = h // 2, w // 2
    mask[..., ch - threshold:ch + threshold, cw - threshold:cw + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def freeu_join(h: torch.Tensor, s: torch.Tensor, b: float, scale: float, v2: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, s) of one decoder block with FreeU's backbone scaling and skip filtering (new tensors)."""
    h = h.clone()
    half = h.shape[1] // 2
    if v2:
        mean = h.mean(1).unsqueeze(1)
        n = mean.shape[0]
        hi = torch.max(mean.view(n, -1), dim=-1, keepdim=True)[0]
        lo = torch.min(mean.view(n, -1), dim=-1, keepdim=True)[0]
        mean = (mean - lo.unsqueeze(2).unsqueeze(3)) / (hi - lo).unsqueeze(2).unsqueeze(3)
        h[:, :half] = h[:, :half] * ((b - 1) * mean + 1)
    else:
        h[:, :half] = h[:, :half] * b
    return h, fourier_filter(s, scale)


def up_resnets(unet) -> list[tuple[torch.nn.Module, int]]:
    """(resnet, width of its h input) for every up-block resnet of a diffusers UNet2DConditionModel."""
    widths = list(reversed(unet.config.block_out_channels))
    out = []
    for i, block in enumerate(unet.up_blocks):
        for j, resnet in enumerate(block.resnets):
            if j == 0:
                out.append((resnet, widths[i - 1] if i > 0 else widths[0]))
            else:
                out.append((resnet, widths[i]))
    return out


_LOCKS: dict[int, threading.RLock] = {}


@contextmanager
def installed(unet, scales: dict[int, tuple[float, float]], v2: bool):
    lock = _LOCKS.setdefault(id(unet), threading.RLock())
    with lock:
        hooks = []
        try:
            for resnet, width in up_resnets(unet):
                if width not in scales:
                    continue
                b, s = scales[width]

                def hook(_module, args, width=width, b=b, s=s):
                    x = args[0]
                    h, skip = freeu_join(x[:, :width], x[:, width:], b, s, v2)
                    return (torch.cat([h, skip], dim=1), *args[1:])

                hooks.append(resnet.register_forward_pre_hook(hook))
            yield
        finally:
            for h in hooks:
                h.remove()


class FreeUModel(HookedModel):
    """`base` with FreeU in its UNet's decoder while it runs."""

    def __init__(self, base, b1: float, b2: float, s1: float, s2: float, v2: bool = False) -> None:
        net = network_model(base)
        if net is None or not hasattr(net, "unet"):
            raise TypeError(f"FreeU needs a Stable Diffusion model; got {type(base).__name__}")
        super().__init__(base)
        base_width = int(net.unet.config.block_out_channels[0])
        self.scales = {base_width * 4: (float(b1), float(s1)), base_width * 2: (float(b2), float(s2))}
        self.v2 = bool(v2)
        self._unet = net.unet

    def __repr__(self) -> str:
        return f"FreeUModel({self.base!r}, {self.scales}, v2={self.v2})"

    def installed(self):
        return installed(self._unet, self.scales, self.v2)


def with_freeu(model, b1: float, b2: float, s1: float, s2: float, v2: bool = False):
    return hoist(model, lambda m: FreeUModel(m, b1, b2, s1, s2, v2))


__all__ = ["FreeUModel", "fourier_filter", "freeu_join", "installed", "up_resnets", "with_freeu"]
