"""The regional engine: Impact Pack's KSAMPLER_ADVANCED ("separated sample", with its recovery pass) and the
per-step interleaving of a base sampler with any number of (mask, sampler) regions that RegionalSampler and
TwoAdvancedSamplersForMask run (`shared/spec/two-samplers.md`).

The node classes (`nodes/`) adapt ComfyUI's inputs and upstream's quirk flags to these functions; the front
door (`front.regional_sample`) calls them with every fix switched on. Every call samples through
`passes.run_pass`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from .._checks import (
    MAX_CFG,
    MAX_SIGMA_FACTOR,
    MAX_STEPS,
    SEED_MAX,
    check_choice,
    check_float,
    check_int,
    check_model,
    check_seed,
)
from ..samplers import SAMPLER_NAMES
from .conditioning import without_negative_placeholder
from .ksampler import compute_sigmas
from .latent import check_latent, fit_latent_channels
from .mask_ops import composite
from .noise import DEFAULT_COMFYUI_VERSION, BrownianTreeNoiseSampler, parse_comfyui_version, prepare_noise
from .passes import Pass, as_entries, check_noise_mask, run_pass
from .schedules import SCHEDULER_NAMES, calculate_sigmas

# Samplers for which Impact runs a recovery pass in per-step use ("additional_mode").
RECOVERY_SAMPLERS = ("uni_pc", "uni_pc_bh2", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
                     "dpmpp_3m_sde", "dpmpp_3m_sde_gpu")
# ... of which these recover with dpm_fast (AUTO); the 2m/3m SDE ones with dpmpp_2m. Every recovery call covers
# exactly the steps of the main call: upstream's "2 steps back" compensation can never be reached (it is 0).
_RECOVER_WITH_DPM_FAST = ("uni_pc", "uni_pc_bh2", "dpmpp_sde", "dpmpp_sde_gpu")
RECOVERY_MODES = ("DISABLE", "ratio additional", "ratio between")
ADDITIONAL_SAMPLERS = ("AUTO", "euler", "heun", "heunpp2", "dpm_2", "dpm_fast", "dpmpp_2m", "ddpm")
# Impact wraps these SDE samplers so that their Brownian tree spans the FULL schedule (value: tree on the CPU).
_IMPACT_BROWNIAN = {"dpmpp_sde": True, "dpmpp_sde_gpu": False, "dpmpp_2m_sde": True, "dpmpp_2m_sde_gpu": False,
                    "dpmpp_3m_sde": True, "dpmpp_3m_sde_gpu": False}
BROWNIAN_TREE_MODES = ("schedule", "call")
SEED_2ND_MODES = ("ignore", "fixed", "seed+seed_2nd", "seed-seed_2nd", "increment", "decrement", "randomize")
# Impact Pack wraps seed+seed_2nd / seed-seed_2nd into [0, 2**50] (ComfyUI's "randomize" range).
SEED_WRAP = 2**50


# sampler object kinds: (method, provider node, call shown in errors)
_SAMPLER_KINDS = {"KSAMPLER": ("sample", "KSamplerProvider", ".sample(latent)"),
                  "KSAMPLER_ADVANCED": ("sample_advanced", "KSamplerAdvancedProvider", ".sample_advanced(...)")}


def check_sampler_object(obj, name: str, kind: str):
    """A KSAMPLER (an object with .sample(latent)) or KSAMPLER_ADVANCED (.sample_advanced(...)); the error
    says when the other kind was given."""
    method, provider, call = _SAMPLER_KINDS[kind]
    if not callable(getattr(obj, method, None)):
        other = next(k for k in _SAMPLER_KINDS if k != kind)
        hint = f" (that is a {other}; this input takes a {kind} from {provider})" \
            if callable(getattr(obj, _SAMPLER_KINDS[other][0], None)) else ""
        raise TypeError(f"{name} must be a {kind} (an object with {call}, e.g. from {provider}); "
                        f"got {type(obj).__name__}{hint}")
    return obj


def check_advanced_sampler(obj, name: str):
    """A KSAMPLER_ADVANCED: an object with .sample_advanced(...) (KSamplerAdvancedWrapper)."""
    return check_sampler_object(obj, name, "KSAMPLER_ADVANCED")


class KSamplerAdvancedWrapper:
    """A KSAMPLER_ADVANCED: cfg, sampler, scheduler, conditioning and sigma_factor; seed and steps come with
    each `.sample_advanced(...)` call.

    `sampler_opt` (optional) is a sampler name that replaces `sampler_name` for sampling; the schedule is then
    computed without the dpm_2/uni_pc penultimate-sigma rule (as upstream does for a custom SAMPLER).
    `brownian_tree`: "schedule" (Impact's wrapper, default) or "call" (see `_call`, Impact's "separated sample").
    `comfyui_version` (default "0.30"): "0.3.64" reproduces the older ComfyUI's default-noise-sampler seeding.
    """

    def __init__(self, model, cfg, sampler_name, scheduler, positive, negative, sampler_opt=None, sigma_factor=1.0,
                 *, brownian_tree: str = "schedule", comfyui_version: str = DEFAULT_COMFYUI_VERSION):
        self.model = check_model("model", model)
        cfg = check_float("cfg", cfg, 0.0, MAX_CFG)
        positive, negative, cfg = without_negative_placeholder(positive, negative, cfg)
        self.cfg = cfg
        self.sampler_name = check_choice("sampler_name", sampler_name, SAMPLER_NAMES)
        self.scheduler = check_choice("scheduler", scheduler, SCHEDULER_NAMES)
        self._pos = as_entries(positive, "positive")
        self._neg = as_entries(negative, "negative")
        self.positive, self.negative = positive, negative
        if sampler_opt is not None:
            sampler_opt = check_choice("sampler_opt", sampler_opt, SAMPLER_NAMES)
        self.sampler_opt = sampler_opt
        self.sigma_factor = check_float("sigma_factor", sigma_factor, 0.0, MAX_SIGMA_FACTOR)
        self.brownian_tree = check_choice("brownian_tree", brownian_tree, BROWNIAN_TREE_MODES)
        parse_comfyui_version(comfyui_version)
        self.comfyui_version = comfyui_version
        self._sigma_cache: dict[tuple, torch.Tensor] = {}

    @property
    def params(self) -> tuple:
        return (self.model, self.cfg, self.sampler_name, self.scheduler, self.positive, self.negative,
                self.sigma_factor)

    def __repr__(self) -> str:
        return (f"KSamplerAdvancedWrapper(cfg={self.cfg}, sampler_name={self.sampler_name!r}, scheduler="
                f"{self.scheduler!r}, sigma_factor={self.sigma_factor}, sampler_opt={self.sampler_opt!r})")

    def total_sigmas(self, sampler_name: str, steps: int) -> torch.Tensor:
        """The full schedule for `steps` at denoise 1 (cached; callers must not modify it)."""
        key = (sampler_name, self.sampler_opt is None, steps)
        if key not in self._sigma_cache:
            ms = self.model.model_sampling
            if self.sampler_opt is None:
                self._sigma_cache[key] = compute_sigmas(ms, sampler_name, self.scheduler, steps, 1.0)
            else:
                self._sigma_cache[key] = calculate_sigmas(ms, self.scheduler, steps)
        return self._sigma_cache[key]

    def _call(self, sampler_name, add_noise, seed, steps, latent, start, end, leftover, ratio, noise, callback,
              disable_pbar, model_options):
        """One KSamplerAdvanced-style call the way Impact makes it ("separated sample"):

        - the schedule is `steps` long at denoise 1 (steps + 1 with the penultimate dropped for dpm_2/uni_pc);
        - end slicing: sigmas[:end + 1] and, unless `leftover`, the last sigma set to 0;
        - start slicing: sigmas[start:] * ratio (a negative start counts from the end, as Python slicing); a
          start at or past the end returns the latent untouched;
        - `noise` (a tensor) is used as given; otherwise seeded noise if add_noise, else zeros;
        - without `leftover` the result is the LAST STEP'S x0 prediction (Impact returns the preview callback's
          x0), which equals the sampler output for samplers whose last step returns it;
        - brownian_tree "schedule": dpmpp_(2m_|3m_)sde(_gpu) draw from a Brownian tree over the FULL unscaled
          schedule (Impact's wrapper); "call": over the sigmas of this call (ComfyUI's own samplers).
        """
        total = self.total_sigmas(sampler_name, steps)
        if start is not None and start < 0:
            kept = end + 1 if end is not None and end < len(total) - 1 else len(total)
            start = max(0, kept + start)
        p = Pass(self.model, self._pos, self._neg, seed=seed, steps=steps, cfg=self.cfg,
                 sampler_name=sampler_name if self.sampler_opt is None else self.sampler_opt,
                 scheduler=self.scheduler, start_step=start, last_step=end, force_full_denoise=not leftover,
                 disable_noise=not add_noise, sigmas=total, sigma_factor=ratio if start is not None else 1.0,
                 model_options=model_options, comfyui_version=self.comfyui_version)
        samples = latent["samples"]
        out = dict(latent)
        if p.run_sigmas() is None:
            out["samples"] = fit_latent_channels(samples, self.model.latent_format.channels).clone()
            return out
        if self.brownian_tree == "schedule" and self.sampler_opt is None and sampler_name in _IMPACT_BROWNIAN:
            positive = total[total > 0]
            like = torch.zeros((samples.shape[0], self.model.latent_format.channels, *samples.shape[2:]),
                               dtype=torch.float32, device=self.model.device)
            tree = BrownianTreeNoiseSampler(like, positive.min(), total.max(), seed=seed,
                                            cpu=_IMPACT_BROWNIAN[sampler_name])
            p = replace(p, sampler_options={"noise_sampler": tree})
        last_x0 = []

        def cb(step, x0, x, n):
            last_x0[:] = [x0]
            if callback is not None:
                callback(step, x0, x, n)

        result = run_pass(p, samples, noise_mask=latent.get("noise_mask"), noise=noise,
                          batch_index=latent.get("batch_index"), callback=cb, disable_pbar=disable_pbar)
        if not leftover and last_x0:
            result = self.model.latent_format.process_out(last_x0[0].to(torch.float32).cpu())
        out["samples"] = result
        return out

    def sample_advanced(self, add_noise, seed, steps, latent_image, start_at_step, end_at_step,
                        return_with_leftover_noise, *, recovery_mode="DISABLE", recovery_sampler="AUTO",
                        recovery_sigma_ratio=0.3, noise=None, callback=None, disable_pbar=None, model_options=None):
        """KSamplerAdvanced (add_noise, seed, steps, start/end step, leftover noise) with sigmas * sigma_factor.

        recovery_mode "ratio between" / "ratio additional" (used by RegionalSampler; off by default here):
        for uni_pc(_bh2) and the dpmpp SDE samplers the step runs at sigmas * (1 - r) ("between") or * 1
        ("additional"), the result is composited into the input through the noise mask, and a recovery sampler
        (AUTO: dpm_fast for uni_pc/dpmpp_sde, dpmpp_2m for the 2m/3m SDE ones) runs the same steps at
        sigmas * r, with no noise tensor: fresh seeded noise when add_noise is true, zeros when it is false.
        `noise` overrides the main call's initial noise tensor (then add_noise is not consulted for it).
        """
        seed = check_seed("seed", seed)
        steps = check_int("steps", steps, 1, MAX_STEPS)
        check_latent(latent_image, "latent_image")
        check_noise_mask(latent_image, "latent_image")
        if start_at_step is not None:
            start_at_step = check_int("start_at_step", start_at_step, 0)
        if end_at_step is not None:
            end_at_step = check_int("end_at_step", end_at_step, 0)
        check_choice("recovery_mode", recovery_mode, RECOVERY_MODES)
        check_choice("recovery_sampler", recovery_sampler, ADDITIONAL_SAMPLERS)
        r = check_float("recovery_sigma_ratio", recovery_sigma_ratio, 0.0, 1.0)
        if noise is not None and (not isinstance(noise, torch.Tensor)
                                  or tuple(noise.shape) != tuple(latent_image["samples"].shape)):
            raise ValueError(f"noise must be a tensor shaped like latent_image['samples'] "
                             f"{tuple(latent_image['samples'].shape)}")
        return self.sample_trusted(add_noise, seed, steps, latent_image, start_at_step, end_at_step,
                                   return_with_leftover_noise, recovery_mode=recovery_mode,
                                   recovery_sampler=recovery_sampler, recovery_sigma_ratio=r, noise=noise,
                                   callback=callback, disable_pbar=disable_pbar, model_options=model_options)

    def sample_trusted(self, add_noise, seed, steps, latent_image, start_at_step, end_at_step,
                       return_with_leftover_noise, *, recovery_mode="DISABLE", recovery_sampler="AUTO",
                       recovery_sigma_ratio=0.3, noise=None, callback=None, disable_pbar=None, model_options=None):
        """`sample_advanced` without its checks, for the per-step loop whose entrance validated everything."""
        r = recovery_sigma_ratio
        leftover = bool(return_with_leftover_noise)
        recover = recovery_mode != "DISABLE" and self.sampler_name in RECOVERY_SAMPLERS
        ratio = (1.0 - r if recovery_mode == "ratio between" else 1.0) if recover else 1.0
        base_image = latent_image
        latent = latent_image
        if ratio > 0:
            latent = self._call(self.sampler_name, add_noise, seed, steps, latent, start_at_step, end_at_step,
                                leftover, ratio * self.sigma_factor, noise, callback, disable_pbar, model_options)
        if recover and r > 0:
            name = recovery_sampler
            if name == "AUTO":
                name = "dpm_fast" if self.sampler_name in _RECOVER_WITH_DPM_FAST else "dpmpp_2m"
            latent = dict(latent)
            latent["samples"] = composite(base_image["samples"], latent["samples"], latent.get("noise_mask"))
            latent = self._call(name, add_noise, seed, steps, latent, start_at_step, end_at_step, leftover,
                                r * self.sigma_factor, None, callback, disable_pbar, model_options)
        if latent is latent_image:
            latent = dict(latent_image)
            latent["samples"] = latent_image["samples"].clone()
        return latent


def _step_call(sampler):
    """Our own KSAMPLER_ADVANCED's unchecked call (the loop's entrance validated everything); any other
    object's public `sample_advanced`."""
    return sampler.sample_trusted if isinstance(sampler, KSamplerAdvancedWrapper) else sampler.sample_advanced


def second_seed(seed: int, seed_2nd: int, mode: str) -> int:
    """The seed of the per-step phase: seed ("ignore"), seed +/- seed_2nd (wrapped into [0, 2**50] like
    Impact, then modulo 2**64), or seed_2nd ("fixed", and "increment"/"decrement"/"randomize", which only tell
    a UI how to change seed_2nd between runs)."""
    if mode == "ignore":
        return seed
    if mode == "seed+seed_2nd":
        s = seed + seed_2nd
        if s > SEED_WRAP:
            s -= SEED_WRAP
    elif mode == "seed-seed_2nd":
        s = seed - seed_2nd
        if s < 0:
            s += SEED_WRAP
    else:
        s = seed_2nd
    return s % (SEED_MAX + 1)


def interleaved_sample(latent: dict, base_sampler, regions: list[tuple[torch.Tensor, object, int | None]],
                       inv_mask: torch.Tensor, *, seed: int, seed_2nd: int = 0, seed_2nd_mode: str = "ignore",
                       steps: int, base_only_steps: int, denoise: float, restore_latent: bool = True,
                       additional_mode: str = "ratio between", additional_sampler: str = "AUTO",
                       additional_sigma_ratio: float = 0.3, noise_once: bool = False, step_seeds: bool = False,
                       callback=None, disable_pbar=None) -> dict:
    """The RegionalSampler algorithm on prepared masks; returns a new LATENT dict without noise_mask.

    regions: (region mask [B|1, 1, H, W] used as noise mask and composite mask, KSAMPLER_ADVANCED, seed or None =
    the shared seed). inv_mask: the base sampler's noise mask during the interleaved phase.
    noise_once: add the initial noise once (upstream re-adds the same noise tensor at every per-step base call
    when base_only_steps is 0 or seed_2nd_mode is not "ignore"). step_seeds: the stochastic samplers' seed at
    step i is seed + i (upstream re-seeds every one-step call identically, so ancestral noise repeats).
    callback(step, x0, x, total) is called once per shared step with the latent after it (x0 = x).
    """
    if denoise <= 0.0:
        return _without_noise_mask(latent, latent["samples"].clone())
    adv_steps = int(steps / denoise)
    start = adv_steps - steps
    batch_index = latent.get("batch_index")
    loop = _Interleave(_step_call(base_sampler), [(m, _step_call(s), rs) for m, s, rs in regions], inv_mask,
                       adv_steps, restore_latent, step_seeds,
                       {"recovery_mode": additional_mode, "recovery_sampler": additional_sampler,
                        "recovery_sigma_ratio": additional_sigma_ratio})
    cur, leftover = latent, False
    if base_only_steps > 0:
        leftover = seed_2nd_mode == "ignore"
        noise = prepare_noise(latent["samples"], seed, batch_index)
        cur = loop.base_call(True, seed, adv_steps, latent, start, start + base_only_steps, leftover,
                             recovery_mode="DISABLE", noise=noise, disable_pbar=True)
    seed = second_seed(seed, seed_2nd, seed_2nd_mode)
    noise = None if leftover else prepare_noise(cur["samples"], seed, batch_index)
    cur = loop.run(cur, seed, start + base_only_steps, noise, noise_once, callback, disable_pbar)
    # upstream ends with a base call from step adv_steps when restore_latent is off: a pure no-op (quirk 14)
    samples = cur["samples"]
    return _without_noise_mask(cur, latent["samples"].clone() if samples is latent["samples"] else samples)


def interleaved_sample_advanced(latent: dict, base_sampler, regions: list[tuple[torch.Tensor, object]],
                                inv_mask: torch.Tensor, *, add_noise: bool, seed: int, steps: int, start_at_step: int,
                                end_at_step: int, restore_latent: bool = True, leftover: bool = False,
                                additional_mode: str = "ratio between", additional_sampler: str = "AUTO",
                                additional_sigma_ratio: float = 0.3, callback=None, disable_pbar=None) -> dict:
    """Impact's RegionalSamplerAdvanced on prepared masks (KSamplerAdvanced-style steps of one schedule).

    Steps start_at_step .. min(steps, end_at_step) - 2 run interleaved (a base step on `inv_mask`, then each
    region on its mask), the initial noise added once, at the first base step, when add_noise; then a closing
    base step end - 1 -> end with return_with_leftover_noise = `leftover`. Upstream quirk kept: with
    restore_latent that closing step's result is discarded (the latent after the interleaved steps comes back).
    """
    end = min(steps, end_at_step)
    recovery = {"recovery_mode": additional_mode, "recovery_sampler": additional_sampler,
                "recovery_sigma_ratio": additional_sigma_ratio}
    loop = _Interleave(_step_call(base_sampler), [(m, _step_call(s), None) for m, s in regions], inv_mask, steps,
                       restore_latent, False, recovery)
    noise = prepare_noise(latent["samples"], seed, latent.get("batch_index")) if add_noise else None
    cur = latent
    span = range(start_at_step, end - 1)
    for n, i in enumerate(span):
        first = i == start_at_step
        cur = loop.step(cur, seed, i, add_noise and first, noise if first else None)
        if callback is not None:
            callback(n, cur["samples"], cur["samples"], len(span))
    final = loop.base_call(False, seed, steps, {**cur, "noise_mask": inv_mask}, end - 1, end, leftover,
                           disable_pbar=True, **recovery)
    out = cur if restore_latent else final
    samples = out["samples"]
    return _without_noise_mask(out, latent["samples"].clone() if samples is latent["samples"] else samples)


def _without_noise_mask(latent: dict, samples: torch.Tensor) -> dict:
    out = dict(latent)
    out.pop("noise_mask", None)
    out["samples"] = samples
    return out


@dataclass
class _Interleave:
    """The per-step phase of `interleaved_sample`: at every shared step, one base call on `inv_mask`, then one
    call per region on its mask (each composited over the base result when restore_latent is on)."""

    base_call: Callable
    regions: list  # (region mask, call, seed or None)
    inv_mask: torch.Tensor
    adv_steps: int
    restore_latent: bool
    step_seeds: bool
    recovery: dict

    def seed_at(self, s: int, i: int) -> int:
        return (s + i) % (SEED_MAX + 1) if self.step_seeds else s

    def run(self, cur: dict, seed: int, first: int, noise, noise_once: bool, callback, disable_pbar) -> dict:
        add_noise = noise is not None
        total = max(0, self.adv_steps - first)
        bar = tqdm(total=total, disable=True if disable_pbar is None and total == 0 else disable_pbar, leave=False)
        try:
            for i in range(first, self.adv_steps):
                cur = self.step(cur, seed, i, add_noise, noise)
                # upstream: add_noise is true only for the first per-step base call. The noise tensor is still
                # passed to every later one (quirk 6), but the recovery call, which gets no tensor, adds no noise.
                add_noise = False
                if noise_once:
                    noise = None
                bar.update(1)
                if callback is not None:
                    callback(i - first, cur["samples"], cur["samples"], total)
        finally:
            bar.close()
        return cur

    def step(self, cur: dict, seed: int, i: int, add_noise: bool, noise) -> dict:
        cur = self.base_call(add_noise, self.seed_at(seed, i), self.adv_steps, {**cur, "noise_mask": self.inv_mask},
                             i, i + 1, True, noise=noise, disable_pbar=True, **self.recovery)
        base_latent = None
        if self.restore_latent:
            cur = dict(cur)
            cur.pop("noise_mask", None)
            base_latent = cur
        for region_mask, call, region_seed in self.regions:
            step_in = {**(base_latent if self.restore_latent else cur), "noise_mask": region_mask}
            rs = seed if region_seed is None else region_seed
            cur = call(False, self.seed_at(rs, i), self.adv_steps, step_in, i, i + 1, True, disable_pbar=True,
                       **self.recovery)
            if self.restore_latent:
                base_latent = {**base_latent, "samples": composite(base_latent["samples"], cur["samples"],
                                                                   region_mask)}
                cur = base_latent
        return cur


__all__ = [
    "ADDITIONAL_SAMPLERS",
    "BROWNIAN_TREE_MODES",
    "KSamplerAdvancedWrapper",
    "RECOVERY_MODES",
    "RECOVERY_SAMPLERS",
    "SEED_2ND_MODES",
    "check_advanced_sampler",
    "check_sampler_object",
    "interleaved_sample",
    "interleaved_sample_advanced",
    "second_seed",
]
