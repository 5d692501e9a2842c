"""ControlNet guidance as ComfyUI's ControlNetApplyAdvanced attaches it to CONDITIONING.

`apply_controlnet(positive, negative, control_net, image, strength, start_percent, end_percent)` returns new
CONDITIONING lists whose entries carry `"control": ControlApply(...)`; the inputs are not modified. What a
ControlApply means at sampling time:

- The hint image (B, H, W, C) in [0, 1] is resized to the latent's pixel size (latent size x the model's
  downscale), aspect-preserving centre crop, nearest-exact, as ComfyUI's common_upscale does; a hint batch of
  1 serves every image, otherwise it is cycled to the latent batch.
- The ControlNet runs on the UNet's own input (x scaled by c_in, the quantized timestep, the entry's prompt
  context and SDXL's pooled/size conditioning); its residuals are multiplied by `strength` in the ControlNet's
  dtype, cast to the UNet's dtype, and added to the UNet's skip connections and middle block.
- Only at steps whose sigma lies inside [sigma(start_percent), sigma(end_percent)] (ComfyUI's percent-to-sigma,
  bounds included); outside, the entry behaves as if this ControlNet were absent.
- Chaining: applying a second ControlNet to conditioning that already has one keeps the first as `previous`;
  the residuals add up in application order (first + second + ...), each with its own strength and window.
- strength 0 leaves the conditioning untouched (bit-identical results, as ComfyUI returns it unchanged).
- Positive and negative entries that had the same previous control share one ControlApply, so cond and uncond
  still run through the UNet (and the ControlNet) in one batch.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .._checks import check_float


class ControlApply:
    """One ControlNet application (network, hint, strength, step window) and the one before it, if any."""

    def __init__(self, control_net, image: torch.Tensor, strength: float, start_percent: float = 0.0,
                 end_percent: float = 1.0, previous: ControlApply | None = None, vae=None,
                 extra_concat: torch.Tensor | None = None) -> None:
        if not is_control_network(control_net):
            raise TypeError(f"control_net must be a loaded ControlNet (twosamplers.models.controlnet."
                            f"load_controlnet), got {type(control_net).__name__}")
        self.control_net = control_net
        self.image = check_hint(image, "image")
        self.strength = check_float("strength", strength, 0.0, 10.0)
        self.start_percent = check_float("start_percent", start_percent, 0.0, 1.0)
        self.end_percent = check_float("end_percent", end_percent, 0.0, 1.0)
        if self.start_percent > self.end_percent:
            raise ValueError(f"start_percent ({start_percent}) must not be after end_percent ({end_percent})")
        self.previous = previous
        # the VAE that encodes the hint for ControlNets that take a latent (Flux InstantX / Union, SD3): the one given
        # to ControlNetApplyAdvanced; None: the sampled model's own (models/flow_control.py)
        self.vae = vae
        # inpainting ControlNets' mask channel (B, 1, H, W), from ControlNetInpaintingAliMamaApply; None: ones
        self.extra_concat = extra_concat
        # set by the older ControlNetApply node: at sampling, negative entries without a ControlNet get this one
        # (ComfyUI's control_apply_to_uncond; conditioning.share_with_uncond)
        self.apply_to_uncond = False
        self._hint_cache: tuple[tuple, torch.Tensor] | None = None
        self._feature_cache: tuple[tuple, list[torch.Tensor]] | None = None

    def __repr__(self) -> str:
        return (f"ControlApply({self.control_net!r}, strength={self.strength}, "
                f"percent=({self.start_percent}, {self.end_percent}), previous={self.previous!r})")

    def chain(self) -> list[ControlApply]:
        """Every application from the first to this one."""
        out: list[ControlApply] = []
        c: ControlApply | None = self
        while c is not None:
            out.append(c)
            c = c.previous
        return out[::-1]

    def is_active(self, sigma: float, model_sampling) -> bool:
        hi = model_sampling.percent_to_sigma(self.start_percent)
        lo = model_sampling.percent_to_sigma(self.end_percent)
        return not (sigma > hi or sigma < lo)

    def hint_for(self, batch: int, height: int, width: int, batched_number: int, device, dtype) -> torch.Tensor:
        """The hint at (height, width) pixels for a network batch of `batch` rows made of `batched_number`
        conditioning entries (ComfyUI's broadcast rule), as (batch, C, height, width)."""
        key = (batch, height, width, batched_number, str(device), dtype)
        if self._hint_cache is None or self._hint_cache[0] != key:
            hint = center_upscale(self.image.movedim(-1, 1).float(), height, width)
            hint = broadcast_batch(hint, batch, batched_number).to(device=device, dtype=dtype)
            self._hint_cache = (key, hint)
        return self._hint_cache[1]


    def adapter_features(self, batch: int, height: int, width: int, batched_number: int, device,
                         dtype) -> list[torch.Tensor]:
        """A T2I-Adapter's features for a network batch of `batch` rows at a latent of (height, width) pixels,
        each (batch, C, h, w). As ComfyUI: the hint is resized (centre crop, nearest-exact) to the pixel size
        rounded up to the adapter's unshuffle block, made grey for 1-channel adapters, broadcast to the batch
        only when it holds more than one image (as `broadcast_batch`), and the adapter runs once per hint (cached
        here)."""
        net = self.control_net
        key = (batch, height, width, batched_number, str(device), dtype)
        if self._feature_cache is None or self._feature_cache[0] != key:
            h, w = net.hint_size(height, width)
            hint = net.prepare_hint(center_upscale(self.image.movedim(-1, 1).float(), h, w))
            if hint.shape[0] != 1:  # one image serves every row as it is; several: the ControlNets' rule
                hint = broadcast_batch(hint, batch, batched_number)
            feats = net.features(hint.to(device), dtype)
            self._feature_cache = (key, [f.expand(batch, *f.shape[1:]) for f in feats])
        return self._feature_cache[1]


def is_control_network(net) -> bool:
    """A loaded ControlNet (SD, Flux, SD3: it has `residuals`) or T2I-Adapter (`features`)."""
    return hasattr(net, "residuals") or getattr(net, "is_t2i_adapter", False)


def check_hint(image, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an IMAGE tensor (B, H, W, 3) in [0, 1], got {got}")
    if not image.is_floating_point() or not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} must hold finite float values in [0, 1]")
    image = image[..., :3] if image.shape[-1] == 4 else image
    return image.expand(*image.shape[:-1], 3) if image.shape[-1] == 1 else image


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) cut to the aspect ratio of height x width around its centre (ComfyUI's crop="center")."""
    h, w = x.shape[-2:]
    old, new = w / h, width / height
    top = left = 0
    if old > new:
        left = round((w - w * (new / old)) / 2)
    elif old < new:
        top = round((h - h * (old / new)) / 2)
    return x.narrow(-2, top, h - 2 * top).narrow(-1, left, w - 2 * left)


def center_upscale(x: torch.Tensor, height: int, width: int, mode: str = "nearest-exact") -> torch.Tensor:
    """(B, C, h, w) -> (B, C, height, width): crop the centre to the target aspect ratio, then resize."""
    return F.interpolate(center_crop(x, height, width), size=(height, width), mode=mode)


def broadcast_batch(x: torch.Tensor, batch: int, batched_number: int) -> torch.Tensor:
    """A hint batch for `batch` network rows made of `batched_number` entries: one image serves all; otherwise
    one entry's share of rows takes the first images (cycled when there are fewer), repeated per entry."""
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    per = batch // max(1, batched_number)
    block = x[:per]
    if block.shape[0] < per:
        block = torch.cat([block] * math.ceil(per / block.shape[0]))[:per]
    return block if block.shape[0] == batch else torch.cat([block] * batched_number)


def apply_controlnet(positive, negative, control_net, image: torch.Tensor, strength: float,
                     start_percent: float = 0.0, end_percent: float = 1.0, vae=None,
                     extra_concat: torch.Tensor | None = None) -> tuple[list, list]:
    """ControlNetApplyAdvanced: (positive, negative) with the ControlNet attached to every entry (`vae`: what
    encodes the hint of a ControlNet that takes a latent)."""
    strength = check_float("strength", strength, 0.0, 10.0)
    if strength == 0.0:
        return positive, negative
    image = check_hint(image, "image")
    shared: dict[int, ControlApply] = {}
    out = []
    for name, cond in (("positive", positive), ("negative", negative)):
        if not isinstance(cond, (list, tuple)):
            raise TypeError(f"{name} must be a CONDITIONING list [[tensor, {{...}}], ...]")
        entries = []
        for item in cond:
            tensor, options = item
            prev = options.get("control")
            key = id(prev)
            if key not in shared:
                shared[key] = ControlApply(control_net, image, strength, start_percent, end_percent, prev, vae,
                                           extra_concat)
            entries.append([tensor, {**options, "control": shared[key]}])
        out.append(entries)
    return out[0], out[1]


def active_controls(control: ControlApply | None, sigma: float, model_sampling) -> list[ControlApply]:
    """The applications of a chain whose step window contains `sigma`, first to last."""
    if control is None:
        return []
    return [c for c in control.chain() if c.strength != 0.0 and c.is_active(sigma, model_sampling)]


# ------------------------------------------------------------------------------------------- per pass
class ControlNet:
    """A ControlNet for one pass (`Pass(controlnets=[...])`, `SamplerSettings(controlnets=[...])`): a file (or a
    loaded handle), the hint IMAGE (B, H, W, 3) in [0, 1], strength and the step window in percent.

    A path is loaded for the pass's model when the pass is made (`model.load_controlnet`), so a missing file or a
    ControlNet of another family is an error before any sampling.
    """

    def __init__(self, source, image: torch.Tensor, strength: float = 1.0, start_percent: float = 0.0,
                 end_percent: float = 1.0) -> None:
        self.source = source
        self.image = check_hint(image, "ControlNet image")
        self.strength = check_float("ControlNet strength", strength, 0.0, 10.0)
        self.start_percent = check_float("ControlNet start_percent", start_percent, 0.0, 1.0)
        self.end_percent = check_float("ControlNet end_percent", end_percent, 0.0, 1.0)
        if self.start_percent > self.end_percent:
            raise ValueError(f"ControlNet start_percent ({start_percent}) must not be after end_percent "
                             f"({end_percent})")

    def __repr__(self) -> str:
        return (f"ControlNet({self.source!r}, image={tuple(self.image.shape)}, strength={self.strength}, "
                f"percent=({self.start_percent}, {self.end_percent}))")

    def loaded(self, model) -> ControlNet:
        """This ControlNet with its network loaded for `model` (which must be able to take residuals)."""
        if is_control_network(self.source):
            return self
        load = getattr(model, "load_controlnet", None)
        if load is None:
            raise TypeError(f"{type(model).__name__} cannot use ControlNets; they need a Stable Diffusion model")
        return ControlNet(load(self.source), self.image, self.strength, self.start_percent, self.end_percent)

    def cropped(self, box: tuple[int, int, int, int], latent_hw: tuple[int, int], downscale: int) -> ControlNet:
        """The hint as the crop of a latent box sees it: resized to the whole latent's pixel size first (what
        the full-size pass uses), then cut to the box x downscale, so crop and full runs see the same pixels."""
        top, left, bottom, right = box
        h, w = latent_hw
        full = center_upscale(self.image.movedim(-1, 1).float(), h * downscale, w * downscale)
        part = full[..., top * downscale:bottom * downscale, left * downscale:right * downscale]
        return ControlNet(self.source, part.movedim(1, -1).contiguous(), self.strength, self.start_percent,
                          self.end_percent)


def attach_controlnets(positive: list, negative: list, controlnets) -> tuple[list, list]:
    """CondEntry lists with `controlnets` (loaded, in order) chained onto every entry, as repeated
    ControlNetApplyAdvanced nodes would attach them. Inputs are not modified."""
    for cn in controlnets:
        if cn.strength == 0.0:
            continue
        shared: dict[int, ControlApply] = {}

        def attach(entries, cn=cn, shared=shared):
            out = []
            for e in entries:
                prev = e.extras.get("control")
                if id(prev) not in shared:
                    shared[id(prev)] = ControlApply(cn.source, cn.image, cn.strength, cn.start_percent,
                                                    cn.end_percent, prev)
                out.append(dataclasses.replace(e, extras={**e.extras, "control": shared[id(prev)]}))
            return out
        positive, negative = attach(positive), attach(negative)
    return positive, negative
