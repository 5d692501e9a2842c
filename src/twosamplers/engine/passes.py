"""One sampling pass as a value (`Pass`) and the one function that runs it on a latent (`run_pass`).

Everything that samples goes through here: `common_ksampler` (ComfyUI's KSampler / KSamplerAdvanced), Impact's
separated sample (`regional.AdvancedSampler`), the front door's two passes and every region's per-step call.
So the pass set-up (sigma computation and slicing, the model check, validation, noise) lives once.

A `Pass` is validated once, when it is made; `run_pass` trusts it. Later per-pass inputs (weight patches such as
LoRAs, ControlNets) become fields of `Pass`, so every front end gets them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .._checks import (
    MAX_CFG,
    MAX_SIGMA_FACTOR,
    MAX_STEPS,
    check_choice,
    check_float,
    check_int,
    check_mask,
    check_mask_batch,
    check_model,
    check_seed,
)
from ..models.control import ControlNet, attach_controlnets
from ..samplers import SAMPLER_NAMES
from .conditioning import CondEntry, check_batch, normalize_conditioning
from .ksampler import DualCFG, StepCallback, compute_sigmas, sample_with_sigmas, slice_sigmas
from .latent import check_latent, fit_latent_channels
from .noise import DEFAULT_COMFYUI_VERSION, parse_comfyui_version, prepare_noise
from .schedules import SCHEDULER_NAMES


def as_entries(cond: object, name: str) -> list[CondEntry]:
    """CONDITIONING (or a tensor, or already normalized entries) -> validated CondEntry list."""
    if isinstance(cond, list) and cond and all(isinstance(e, CondEntry) for e in cond):
        return cond  # already normalized (e.g. by a node that made many passes from one conditioning)
    return normalize_conditioning(cond, name)


@dataclass(frozen=True, eq=False)
class Pass:
    """One sampling pass: the model and its conditioning, and every KSampler/KSamplerAdvanced setting.

    - `sigmas`: an explicit full schedule; otherwise it is computed from steps, scheduler, sampler and denoise
      as ComfyUI's KSampler does.
    - `start_step` / `last_step` / `force_full_denoise`: KSamplerAdvanced's slicing of that schedule.
    - `sigma_factor`: multiplies the sliced sigmas (Impact's KSamplerAdvancedProvider).
    - `disable_noise`: start from zero noise (KSamplerAdvanced add_noise off).
    - `model_options` / `sampler_options`: ComfyUI's model_options (post-CFG and denoise-mask functions) and
      extra keyword arguments of the sampler function (e.g. a noise_sampler).
    - `comfyui_version`: the ComfyUI whose seeding to reproduce; below "0.30" (e.g. "0.3.64") the samplers that
      draw from the default noise sampler (euler_ancestral, dpm_2_ancestral, dpmpp_2s_ancestral, lcm, ddpm,
      res_multistep_ancestral, er_sde, seeds_2/3, sa_solver and their variants) seed it with `seed`, not
      `seed + 1` on the CPU.
    - `loras`: [Lora(path, strength_model, strength_clip), ...] patched into the network for this pass only
      (`net` is the model carrying them; ComfyUI's LoraLoader chain order). The conditioning is given already
      encoded: for the text-encoder half (strength_clip), encode the prompts with `pass.net.encode_prompt` or
      `model.with_loras(...)`.
    - `dual`: DualCFGGuider's second prompt and scale (`ksampler.DualCFG`); `positive` is then cond1 and `cfg`
      cfg_conds.
    `name` prefixes error messages ("base.steps=0 is out of range"). Validated on construction.
    """

    model: object
    positive: object
    negative: object
    seed: int = 0
    steps: int = 20
    cfg: float = 8.0
    sampler_name: str = "euler"
    scheduler: str = "normal"
    denoise: float = 1.0
    start_step: int | None = None
    last_step: int | None = None
    force_full_denoise: bool = False
    disable_noise: bool = False
    sigmas: torch.Tensor | None = None
    sigma_factor: float = 1.0
    model_options: dict | None = None
    sampler_options: dict | None = None
    comfyui_version: str = DEFAULT_COMFYUI_VERSION
    controlnets: tuple = ()
    loras: tuple = ()
    dual: DualCFG | None = None
    name: str = field(default="", repr=False)
    net: object = field(init=False, repr=False)
    cond_pos: list = field(init=False, repr=False)
    cond_neg: list = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = f"{self.name}." if self.name else ""
        check_model(f"{n}model", self.model)
        fix = {
            "cond_pos": as_entries(self.positive, f"{n}positive"),
            "cond_neg": as_entries(self.negative, f"{n}negative"),
            "seed": check_seed(f"{n}seed", self.seed),
            "steps": check_int(f"{n}steps", self.steps, 1, MAX_STEPS),
            "cfg": check_float(f"{n}cfg", self.cfg, 0.0, MAX_CFG),
            "sampler_name": check_choice(f"{n}sampler_name", self.sampler_name, SAMPLER_NAMES),
            "scheduler": check_choice(f"{n}scheduler", self.scheduler, SCHEDULER_NAMES),
            "denoise": check_float(f"{n}denoise", self.denoise, 0.0, 1.0),
            "sigma_factor": check_float(f"{n}sigma_factor", self.sigma_factor, 0.0, MAX_SIGMA_FACTOR),
        }
        parse_comfyui_version(self.comfyui_version, f"{n}comfyui_version")
        for key in ("start_step", "last_step"):
            if getattr(self, key) is not None:
                fix[key] = check_int(f"{n}{key}", getattr(self, key), 0)
        if self.sigmas is not None:
            fix["sigmas"] = torch.as_tensor(self.sigmas, dtype=torch.float32).reshape(-1).clone()
        if self.dual is not None:
            if not isinstance(self.dual, DualCFG):
                raise TypeError(f"{n}dual must be a twosamplers DualCFG, got {type(self.dual).__name__}")
            if not isinstance(self.dual.nested, bool):
                raise TypeError(f"{n}dual.nested must be a bool, got {self.dual.nested!r}")
            fix["dual"] = DualCFG(as_entries(self.dual.middle, f"{n}cond2"),
                                  check_float(f"{n}cfg_cond2_negative", self.dual.cfg2, 0.0, MAX_CFG), self.dual.nested)
        if self.controlnets:
            fix["controlnets"] = tuple(_check_controlnet(f"{n}controlnets[{i}]", c).loaded(self.model)
                                       for i, c in enumerate(self.controlnets))
        fix.update(_with_loras(self.model, self.loras, f"{n}loras"))
        for key, value in fix.items():
            object.__setattr__(self, key, value)

    def full_sigmas(self) -> torch.Tensor:
        """The whole schedule before KSamplerAdvanced's slicing."""
        if self.sigmas is not None:
            return self.sigmas
        return compute_sigmas(self.model.model_sampling, self.sampler_name, self.scheduler, self.steps, self.denoise)

    def run_sigmas(self) -> torch.Tensor | None:
        """The sigmas this pass samples (sliced, times sigma_factor); None when it leaves the latent as it is."""
        sigmas = slice_sigmas(self.full_sigmas(), self.start_step, self.last_step, self.force_full_denoise)
        if sigmas is not None and self.sigma_factor != 1.0:
            sigmas = sigmas * self.sigma_factor
        if sigmas is None or sigmas.numel() == 0 or float(sigmas[0]) <= 0.0:
            return None  # nothing to denoise (denoise 0, a start past the end, sigma_factor 0)
        return sigmas

    def n_steps(self) -> int:
        """How many sampler steps (callback calls) this pass makes."""
        sigmas = self.run_sigmas()
        return 0 if sigmas is None else len(sigmas) - 1


def _check_controlnet(name: str, c) -> ControlNet:
    if not isinstance(c, ControlNet):
        raise TypeError(f"{name} must be a twosamplers ControlNet(path, image, strength, start_percent, "
                        f"end_percent), got {type(c).__name__}")
    return c


def crop_pass(p: Pass, box: tuple[int, int, int, int], latent_hw: tuple[int, int]) -> Pass:
    """`p` for a crop of the latent: ControlNet hints cut to the same box (in pixels)."""
    if not p.controlnets:
        return p
    factor = int(p.model.latent_format.downscale)
    return replace(p, controlnets=tuple(c.cropped(box, latent_hw, factor) for c in p.controlnets))


def _with_loras(model, loras, name: str) -> dict:
    """The `loras` and `net` fields: the LoRA files are read and checked here, once (errors name the field)."""
    from ..models.lora import Lora, with_loras

    if isinstance(loras, Lora):
        loras = (loras,)
    if not isinstance(loras, (list, tuple)) or not all(isinstance(x, Lora) for x in loras):
        raise TypeError(f"{name} must be a list of twosamplers.Lora, got {loras!r}")
    try:
        return {"loras": tuple(loras), "net": with_loras(model, list(loras)) if loras else model}
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def run_pass(p: Pass, samples: torch.Tensor, *, noise_mask: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, batch_index=None, callback: StepCallback | None = None,
             disable_pbar: bool | None = None) -> torch.Tensor:
    """Sample `samples` with pass `p`; returns a new samples tensor (the input is never modified).

    noise_mask: a validated MASK (batch 1 or the latent's) restricting the pass; noise: the initial noise
    (default: seeded from p.seed and batch_index, or zeros with p.disable_noise); callback(step, x0, x, total).
    An empty empty-latent of another channel count is remade with the model's channels (ComfyUI's rule).
    """
    samples = fit_latent_channels(samples, p.model.latent_format.channels)
    sigmas = p.run_sigmas()
    if sigmas is None:
        return samples.clone()
    if noise is None:
        if p.disable_noise:
            noise = torch.zeros(samples.size(), dtype=samples.dtype, layout=samples.layout)
        else:
            noise = prepare_noise(samples, p.seed, batch_index)
    check_batch(p.cond_pos, samples.shape[0], f"{p.name}.positive" if p.name else "positive")
    check_batch(p.cond_neg, samples.shape[0], f"{p.name}.negative" if p.name else "negative")
    pos, neg = attach_controlnets(p.cond_pos, p.cond_neg, p.controlnets)
    dual = p.dual
    if dual is not None:
        check_batch(dual.middle, samples.shape[0], f"{p.name}.cond2" if p.name else "cond2")
        dual = replace(dual, middle=attach_controlnets(dual.middle, [], p.controlnets)[0])
    return sample_with_sigmas(p.net, noise, sigmas, samples, pos, neg, p.cfg, p.sampler_name, p.seed,
                              noise_mask, callback=callback, disable_pbar=disable_pbar,
                              model_options=p.model_options, sampler_options=p.sampler_options,
                              comfyui_version=p.comfyui_version, dual=dual)


def check_noise_mask(latent: dict, name: str = "latent") -> torch.Tensor | None:
    """The LATENT's noise_mask, validated (values, and a batch that broadcasts to the latent's), or None."""
    noise_mask = latent.get("noise_mask")
    if noise_mask is not None:
        noise_mask = check_mask(noise_mask, f"{name}['noise_mask']")
        check_mask_batch(noise_mask, latent["samples"].shape[0], f"{name}['noise_mask']")
    return noise_mask


def common_ksampler(
    model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive,
    negative,
    latent: dict,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    *,
    callback: StepCallback | None = None,
    disable_pbar: bool | None = None,
    model_options: dict | None = None,
    sampler_options: dict | None = None,
    sigmas: torch.Tensor | None = None,
    comfyui_version: str = DEFAULT_COMFYUI_VERSION,
    dual: DualCFG | None = None,
) -> dict:
    """ComfyUI's KSampler / KSamplerAdvanced: sample `latent` and return a new LATENT dict.

    `comfyui_version` reproduces images made with an older ComfyUI (see `Pass`): "0.3.64" seeds the ancestral
    and other default-noise samplers' generator with `seed` instead of 0.30's `seed + 1` on the CPU.
    `callback(step, x0, x, total_steps)` runs after every step; `disable_pbar` None shows a progress bar only
    on a terminal. `sigmas` overrides the computed schedule (then steps/scheduler/denoise are not used for it).
    `dual`: DualCFGGuider's guidance (positive = cond1, cfg = cfg_conds; see `ksampler.DualCFG`).
    The input latent dict, its tensors and the conditioning are never modified.
    """
    p = Pass(model, positive, negative, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
             scheduler=scheduler, denoise=denoise, start_step=start_step, last_step=last_step,
             force_full_denoise=force_full_denoise, disable_noise=disable_noise, sigmas=sigmas,
             model_options=model_options, sampler_options=sampler_options, comfyui_version=comfyui_version,
             dual=dual)
    check_latent(latent)
    noise_mask = check_noise_mask(latent)
    out = dict(latent)
    out["samples"] = run_pass(p, latent["samples"], noise_mask=noise_mask, batch_index=latent.get("batch_index"),
                              callback=callback, disable_pbar=disable_pbar)
    return out


__all__ = ["Pass", "as_entries", "check_noise_mask", "common_ksampler", "crop_pass", "run_pass"]
