"""Model sampling tables (SD-style discrete schedules, and the flow-matching ones of SD3 and Flux) and ComfyUI's
nine schedulers.

Every formula follows `comfyui-sampling.md` s.1-2, including the float32/float64 split, so that the
sigma tables equal ComfyUI's bit for bit. The flow samplings (`ModelSamplingFlow`, `ModelSamplingFlux`) are
ComfyUI's CONST model type: x_t = (1 - sigma) * x0 + sigma * noise, the network predicts the velocity.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_choice, check_float, check_int

SCHEDULER_NAMES: tuple[str, ...] = (
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
)

PREDICTIONS = ("eps", "v")


class ModelSamplingDiscrete:
    """The discrete 1000-step schedule of SD1.x/2.x/SDXL, with ComfyUI's quantized timesteps.

    `prediction` is "eps" (SD1.x, SDXL, SD2 base) or "v" (SD2 768-v).
    """

    sigma_data = 1.0

    def __init__(
        self,
        prediction: str = "eps",
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        timesteps: int = 1000,
    ) -> None:
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        linear_start = check_float("linear_start", linear_start, 0.0, 1.0)
        linear_end = check_float("linear_end", linear_end, 0.0, 1.0)
        if not linear_start < linear_end:
            raise ValueError(f"linear_start ({linear_start}) must be smaller than linear_end ({linear_end})")
        self.num_timesteps = check_int("timesteps", timesteps, 2)
        self.linear_start, self.linear_end = linear_start, linear_end
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self._timestep_memo: dict[float, float] = {}
        self._input_scale_memo: dict[float, float] = {}
        self._scalar_memo: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"ModelSamplingDiscrete(prediction={self.prediction!r}, linear_start={self.linear_start}, "
            f"linear_end={self.linear_end}, timesteps={self.num_timesteps})"
        )

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the nearest log-sigma (quantized, not interpolated), as a float tensor."""
        sigma = torch.as_tensor(sigma)
        log_sigma = sigma.log()
        dists = log_sigma.to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device).float()

    def input_scale_of(self, sigma: float) -> float:
        """sqrt(sigma^2 + sigma_data^2) of one float32 sigma, computed in float32 exactly as calculate_input does
        and memoised; dividing by this float gives the same bits as dividing by the tensor."""
        c = self._input_scale_memo.get(sigma)
        if c is None:
            c = float((torch.tensor(sigma, dtype=torch.float32) ** 2 + self.sigma_data**2) ** 0.5)
            self._input_scale_memo[sigma] = c
        return c

    def timestep_of(self, sigma: float) -> float:
        """timestep() of one float32 sigma value, memoised (samplers ask for the same few values again and again)."""
        t = self._timestep_memo.get(sigma)
        if t is None:
            t = float(self.timestep(torch.tensor([sigma], dtype=torch.float32))[0])
            self._timestep_memo[sigma] = t
        return t

    def memoise(self, sigmas: torch.Tensor) -> None:
        """Fill the timestep, input-scale and scalar memos for every value of `sigmas` with one batched computation
        per run instead of a dozen 0-dim ops per step. Same bits as the one-value path: these elementwise ops (log,
        pow, sub, abs, argmin per column) give each element the value they give it alone."""
        sig = sigmas.detach().reshape(-1).to(device=self.log_sigmas.device, dtype=torch.float32)
        memos = self._timestep_memo, self._input_scale_memo, self._scalar_memo
        new = [v for v in dict.fromkeys(sig.tolist()) if any(v not in m for m in memos)]
        if not new:
            return
        t = torch.tensor(new, dtype=torch.float32)
        scales = (t**2 + self.sigma_data**2) ** 0.5
        for v, ts, c, c_t, v_t in zip(new, self.timestep(t).tolist(), scales.tolist(), scales.unbind(0), t.unbind(0),
                                      strict=True):
            self._timestep_memo.setdefault(v, ts)
            self._input_scale_memo.setdefault(v, c)
            self._scalar_memo.setdefault(v, (c_t, v_t))

    def scalars_of(self, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(input scale, sigma) of one float32 sigma value as 0-dim float32 CPU tensors, memoised. As operands they
        give the bits the Python floats give, without the float64 -> float32 copy torch makes for a float per op."""
        pair = self._scalar_memo.get(sigma)
        if pair is None:
            pair = (torch.tensor(self.input_scale_of(sigma), dtype=torch.float32),
                    torch.tensor(sigma, dtype=torch.float32))
            self._scalar_memo[sigma] = pair
        return pair

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (possibly fractional) timestep: linear interpolation of log-sigma."""
        timestep = torch.as_tensor(timestep)
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low_idx = t.floor().long()
        high_idx = t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at `percent` of the way through sampling (0 = start, 1 = end).

        As in ComfyUI, percent <= 0 gives a huge sigma (999999999.9, "before everything") and
        percent >= 1 gives 0.
        """
        percent = check_float("percent", percent)
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    # -- prediction <-> denoised (ComfyUI's calculate_input / calculate_denoised / noise_scaling)
    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = _reshape_sigma(sigma, x.ndim)
        return x / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor):
        sigma = _reshape_sigma(sigma, model_output.ndim)
        if self.prediction == "v":
            sd2 = self.sigma_data**2
            return model_input * sd2 / (sigma**2 + sd2) - model_output * sigma * self.sigma_data / (
                sigma**2 + sd2
            ) ** 0.5
        scaled = model_output * sigma
        return torch.sub(model_input, scaled, out=scaled)  # model_input - model_output * sigma, one allocation

    def noise_scaling(
        self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor, max_denoise: bool = False
    ) -> torch.Tensor:
        if max_denoise:
            noise = noise * torch.sqrt(1.0 + sigma**2.0)
        else:
            noise = noise * sigma
        return noise + latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent


class _FlowSampling:
    """The CONST (rectified-flow) model type shared by SD3 and Flux: sigma in (0, 1], the model input is x
    itself, denoised = x - v * sigma, noise_scaling = sigma * (noise_scale * noise) + (1 - sigma) * latent and
    the sampler's result is divided by (1 - sigma_last). Subclasses give the sigma table and timestep()."""

    prediction = "const"
    sigma_data = 1.0
    noise_scale = 1.0
    sigmas: torch.Tensor

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor):
        sigma = _flow_sigma(sigma, model_output.ndim)
        return model_input - model_output * sigma

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        sigma = _flow_sigma(sigma, noise.ndim)
        return sigma * (self.noise_scale * noise) + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        sigma = _flow_sigma(sigma, latent.ndim)
        return latent / (1.0 - sigma)


def _flow_sigma(sigma, ndim: int) -> torch.Tensor:
    """ComfyUI's reshape for the flow formulas: one sigma becomes a 0-dim tensor, a batch (B, 1, 1, ...)."""
    sigma = torch.as_tensor(sigma)
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))


def time_snr_shift(shift: float, t):
    """The SD3 timestep shift: shift * t / (1 + (shift - 1) * t) (t itself when shift is 1)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu: float, t):
    """Flux's shift of a timestep t in (0, 1]: e^mu / (e^mu + (1/t - 1))."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)


class ModelSamplingFlow(_FlowSampling):
    """ComfyUI's ModelSamplingDiscreteFlow (CONST): SD3/SD3.5 (shift 3, multiplier 1000; the ModelSamplingSD3
    node sets the shift) and Flux schnell (shift 1, multiplier 1). 1000 sigmas time_snr_shift(shift, k/1000);
    timestep(sigma) = sigma * multiplier."""

    def __init__(self, shift: float = 1.0, multiplier: float = 1000.0, timesteps: int = 1000) -> None:
        self.shift = check_float("shift", shift, 0.0)
        self.multiplier = check_float("multiplier", multiplier, 1e-12)
        self.num_timesteps = check_int("timesteps", timesteps, 2)
        self.sigmas = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * self.multiplier)

    def __repr__(self) -> str:
        return f"ModelSamplingFlow(shift={self.shift}, multiplier={self.multiplier})"

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma) * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return time_snr_shift(self.shift, torch.as_tensor(timestep) / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        percent = check_float("percent", percent)
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return time_snr_shift(self.shift, 1.0 - percent)


class ModelSamplingFlux(_FlowSampling):
    """ComfyUI's ModelSamplingFlux (CONST): Flux dev's 10000 sigmas flux_time_shift(shift, k/10000);
    timestep(sigma) = sigma. The ModelSamplingFlux node sets the shift from the image size (`flux_shift`)."""

    def __init__(self, shift: float = 1.15, timesteps: int = 10000) -> None:
        self.shift = check_float("shift", shift)
        self.num_timesteps = check_int("timesteps", timesteps, 2)
        self.sigmas = self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps)

    def __repr__(self) -> str:
        return f"ModelSamplingFlux(shift={self.shift})"

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return flux_time_shift(self.shift, torch.as_tensor(timestep))

    def percent_to_sigma(self, percent: float) -> float:
        percent = check_float("percent", percent)
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return flux_time_shift(self.shift, 1.0 - percent)


def flux_shift(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """The ModelSamplingFlux node's shift for an image of width x height pixels: linear in the number of
    2x2 patches of the 1/8 latent, base_shift at 256 patches, max_shift at 4096 (1024 x 1024)."""
    x1, x2 = 256, 4096
    mm = (max_shift - base_shift) / (x2 - x1)
    b = base_shift - mm * x1
    return (width * height / (8 * 8 * 2 * 2)) * mm + b


def is_flow(model_sampling) -> bool:
    """Whether a model sampling is ComfyUI's CONST type (SD3, Flux)."""
    return getattr(model_sampling, "prediction", None) == "const"


def _reshape_sigma(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    sigma = torch.as_tensor(sigma)
    if sigma.numel() == 1:
        return sigma.reshape([1] * ndim)
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))


# ----------------------------------------------------------------------------------------------
# schedulers
# ----------------------------------------------------------------------------------------------
def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def simple_scheduler(ms: ModelSamplingDiscrete, steps: int) -> torch.Tensor:
    sigs = []
    ss = len(ms.sigmas) / steps
    for x in range(steps):
        sigs.append(float(ms.sigmas[-(1 + int(x * ss))]))
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def ddim_uniform_scheduler(ms: ModelSamplingDiscrete, steps: int) -> torch.Tensor:
    x = 1
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(ms.sigmas) // steps, 1)
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        x += ss
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def normal_scheduler(ms: ModelSamplingDiscrete, steps: int, sgm: bool = False) -> torch.Tensor:
    start = ms.timestep(ms.sigma_max)
    end = ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def beta_scheduler(ms: ModelSamplingDiscrete, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    total_timesteps = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    from scipy.stats import beta as beta_dist  # imported here: scipy.stats costs ~0.4 s at start-up

    ts = np.rint(beta_dist.ppf(ts, alpha, beta) * total_timesteps)
    sigs = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs.append(float(ms.sigmas[int(t)]))
        last_t = t
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def karras_scheduler(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_scheduler(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def linear_quadratic_scheduler(
    ms: ModelSamplingDiscrete, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """The Mochi schedule: linear to `threshold_noise`, then quadratic, flipped and scaled by sigma_max."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.tensor(schedule, dtype=torch.float32) * ms.sigma_max.cpu()


def kl_optimal_scheduler(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sabour et al. 2024 ("Align Your Steps"), the KL-optimal schedule."""
    adj = torch.arange(n, dtype=torch.float32).div_(n - 1)
    sigmas = adj.new_zeros(n + 1)
    sigmas[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan_()
    return sigmas


def calculate_sigmas(model_sampling: ModelSamplingDiscrete, scheduler_name: str, steps: int) -> torch.Tensor:
    """The float32 sigma schedule of `scheduler_name` for `steps` steps (ends in 0)."""
    check_choice("scheduler", scheduler_name, SCHEDULER_NAMES)
    steps = check_int("steps", steps, 1)
    smin, smax = float(model_sampling.sigma_min), float(model_sampling.sigma_max)
    if scheduler_name == "karras":
        return karras_scheduler(steps, smin, smax)
    if scheduler_name == "exponential":
        return exponential_scheduler(steps, smin, smax)
    if scheduler_name == "normal":
        return normal_scheduler(model_sampling, steps)
    if scheduler_name == "simple":
        return simple_scheduler(model_sampling, steps)
    if scheduler_name == "ddim_uniform":
        return ddim_uniform_scheduler(model_sampling, steps)
    if scheduler_name == "sgm_uniform":
        return normal_scheduler(model_sampling, steps, sgm=True)
    if scheduler_name == "beta":
        return beta_scheduler(model_sampling, steps)
    if scheduler_name == "linear_quadratic":
        return linear_quadratic_scheduler(model_sampling, steps)
    return kl_optimal_scheduler(steps, smin, smax)
