"""Seeded noise: the initial latent noise and the two noise sources samplers draw from.

- `prepare_noise`: ComfyUI's initial noise (global-CPU-generator stream, one sample per batch index).
- `default_noise_sampler`: a private generator per sampler call, seeded with `seed + 1` on the CPU
  (ComfyUI 0.30.x) and `seed` on other devices; we wrap `seed + 1` modulo 2**64 where upstream crashes.
  ComfyUI before 0.30 (e.g. 0.3.64) seeded it with `seed` everywhere: `comfyui_version` selects that.
- `BrownianTreeNoiseSampler`: torchsde's Brownian tree, for the SDE samplers.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence

import torch
import torchsde

from .._checks import SEED_MAX, check_int, check_seed, check_tensor

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_COMFYUI_VERSION = "0.30"
_SEED_PLUS_ONE_SINCE = (0, 30)  # the first ComfyUI version that seeds the CPU sampler generator with seed + 1
_VERSION = re.compile(r"v?(\d+(?:\.\d+){0,3})")


def parse_comfyui_version(version: object, name: str = "comfyui_version") -> tuple[int, ...]:
    """A ComfyUI version string ("0.3.64", "0.30", "v0.30.1") -> a tuple of ints; anything else is an error."""
    m = _VERSION.fullmatch(version.strip()) if isinstance(version, str) else None
    if m is None:
        raise ValueError(f"{name}={version!r} is not a ComfyUI version such as '0.3.64' or '0.30' "
                         f"(default {DEFAULT_COMFYUI_VERSION!r})")
    return tuple(int(p) for p in m.group(1).split("."))


def seeds_plus_one(comfyui_version: str | None) -> bool:
    """Whether that ComfyUI version seeds the default noise sampler's CPU generator with seed + 1 (>= 0.30)."""
    if comfyui_version is None:
        return True
    return parse_comfyui_version(comfyui_version) >= _SEED_PLUS_ONE_SINCE


def prepare_noise(samples: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Unit Gaussian noise shaped like `samples`, drawn on the CPU in float32 from `seed`.

    With `batch_index`, row k is draw number batch_index[k] of one [1, C, H, W] stream, so a latent taken
    out of a batch gets the same noise it had inside the batch.
    """
    check_tensor("samples", samples)
    seed = check_seed("seed", seed)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    if batch_index is None:
        noise = torch.randn(samples.size(), dtype=torch.float32, layout=samples.layout, generator=generator)
        return noise.to(samples.dtype)
    batch_index = [check_int(f"batch_index[{i}]", int(b), 0) for i, b in enumerate(batch_index)]
    if len(batch_index) != samples.shape[0]:
        raise ValueError(
            f"batch_index has {len(batch_index)} entries but the latent batch has {samples.shape[0]} images"
        )
    draws = []
    for _ in range(max(batch_index) + 1):
        draws.append(torch.randn([1] + list(samples.shape[1:]), dtype=torch.float32, generator=generator))
    return torch.cat([draws[i] for i in batch_index], dim=0).to(samples.dtype)


def sampler_seed(seed: int, device: torch.device, comfyui_version: str | None = None) -> int:
    """The seed of a sampler's private generator: seed + 1 on the CPU (mod 2**64), seed elsewhere; with a
    comfyui_version below 0.30, seed everywhere."""
    if torch.device(device).type == "cpu" and seeds_plus_one(comfyui_version):
        return (seed + 1) & SEED_MAX
    return seed


def default_noise_sampler(x: torch.Tensor, seed: int | None = None,
                          comfyui_version: str | None = None) -> NoiseSampler:
    """n(sigma, sigma_next) -> a fresh standard-normal tensor like x from the sampler's own generator
    (seeded as `sampler_seed` says for that ComfyUI version; default: 0.30's seeding)."""
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(sampler_seed(seed, x.device, comfyui_version))
    else:
        generator = None

    def draw(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return draw


class BrownianTreeNoiseSampler:
    """n(a, b) = (W(b) - W(a)) / sqrt(|b - a|) from one torchsde.BrownianTree over [t0, t1].

    `cpu=True` (the plain SDE samplers) builds and queries the tree on the CPU; `cpu=False` (the `_gpu`
    variants) keeps it on x's device.
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: torch.Tensor,
        sigma_max: torch.Tensor,
        seed: int | None = None,
        cpu: bool = True,
    ) -> None:
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.cpu = cpu
        t0, t1, self.sign = _sort(t0, t1)
        w0 = torch.zeros_like(x)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, ()).item())
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        t0, t1, sign = _sort(a, b)
        device, dtype = t0.device, t0.dtype
        if self.cpu:
            t0, t1 = t0.detach().cpu().float(), t1.detach().cpu().float()
        with warnings.catch_warnings():
            # torchsde rounds the interval ends to 6 decimals, so a query at sigma_max lies "outside" the tree
            # and is clamped with a warning; ComfyUI makes the same query, so the numbers match. Keep it quiet.
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            w = self.tree(t0, t1)
        w = w.to(device=device, dtype=dtype) * (self.sign * sign)
        return w / (b - a).abs().sqrt()


def _sort(a: torch.Tensor, b: torch.Tensor):
    return (a, b, 1) if a < b else (b, a, -1)
