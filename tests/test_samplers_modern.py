"""The modern samplers (issue 3): CFG++, multistep, exponential SDE and SA-Solver families.

ComfyUI parity on the closed-form denoiser, every name through common_ksampler (mask / denoise / seeds), the
CFG++ uncond mechanism, model-call and noise-draw counts, option validation.
"""

import pytest
import torch
from conftest import closed_form_denoiser, parity_keys, run_kd_case

from twosamplers.engine.ksampler import common_ksampler
from twosamplers.engine.noise import prepare_noise
from twosamplers.engine.schedules import ModelSamplingDiscrete, calculate_sigmas
from twosamplers.models import NetworkModel
from twosamplers.samplers import COMFYUI_SAMPLER_NAMES, SAMPLER_NAMES, get_sampler
from twosamplers.samplers.exponential import sample_seeds_2
from twosamplers.samplers.multistep import DEIS_BETA_0, DEIS_BETA_1, deis_coefficients, deis_time
from twosamplers.samplers.sa_solver import _model_sampling_of, stochastic_adams_coefficients, tau_interval

MODERN = [
    "euler_cfg_pp", "euler_ancestral_cfg_pp", "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_2m_cfg_pp", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece",
]  # fmt: skip
CFG_PP = [n for n in SAMPLER_NAMES if "cfg_pp" in n]
# Samplers whose result depends on their own noise source (default generator or Brownian tree).
STOCHASTIC = {
    "euler_ancestral", "euler_ancestral_cfg_pp", "exp_heun_2_x0_sde", "dpm_2_ancestral", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece",
}  # fmt: skip
KD_MODERN = [k for k in parity_keys("kd/") if k.split("/")[1] in MODERN]


def test_all_comfyui_samplers_are_registered_in_order():
    assert SAMPLER_NAMES == COMFYUI_SAMPLER_NAMES
    assert len(SAMPLER_NAMES) == 44
    assert all(n in SAMPLER_NAMES for n in MODERN)


def test_parity_cases_cover_the_modern_samplers_in_the_reference(parity):
    assert {k.split("/")[1] for k in KD_MODERN} >= {"deis", "ipndm", "ipndm_v", "gradient_estimation"}


@pytest.mark.parametrize("key", KD_MODERN)
def test_sampler_matches_comfyui_on_closed_form_denoiser(parity, key):
    run_kd_case(parity, key)


# ------------------------------------------------------------------------------------------------ KSampler path


class TinyNet(torch.nn.Module):
    """A small deterministic EPS "UNet": one 3x3 conv, a timestep gain and a context shift (so cond and uncond
    predictions differ), called as network(x_in, timesteps, context) like ComfyUI's UNet."""

    def __init__(self) -> None:
        super().__init__()
        idx = torch.arange(4 * 4 * 3 * 3, dtype=torch.float64).reshape(4, 4, 3, 3)
        self.weight = torch.nn.Parameter((0.08 * torch.cos(0.7 + 1.3 * idx)).float(), requires_grad=False)
        self.bias = torch.nn.Parameter(torch.tensor([0.02, -0.01, 0.0, 0.03]), requires_grad=False)

    def forward(self, x, timesteps, context, **kwargs):
        h = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)
        gain = (0.6 + timesteps.float() / 2000.0).view(-1, 1, 1, 1)
        shift = context.float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return torch.tanh(h) * gain + 0.2 * shift + 0.1 * x


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """8x8 latents gain nothing from intra-op threads, and on a busy 2-core machine OpenMP barriers make each
    tiny conv cost milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return NetworkModel(TinyNet())


@pytest.fixture(scope="module")
def cond_pair():
    g = torch.Generator().manual_seed(7)
    return [[torch.randn(1, 3, 8, generator=g), {}]], [[torch.randn(1, 3, 8, generator=g), {}]]


def _latent(mask: bool) -> dict:
    g = torch.Generator().manual_seed(3)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 2.0}
    if mask:
        m = torch.zeros(1, 1, 8, 8)
        m[..., 2:6, 1:5] = 1.0
        latent["noise_mask"] = m
    return latent


def _sample(model, conds, name, seed=5, cfg=3.0, denoise=1.0, mask=False, steps=5, **kw):
    pos, neg = conds
    latent = _latent(mask)
    before = latent["samples"].clone()
    out = common_ksampler(
        model, seed, steps, cfg, name, "karras", pos, neg, latent, denoise=denoise, disable_pbar=True, **kw
    )["samples"]
    assert torch.equal(latent["samples"], before), "input latent modified"
    return out


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_runs_through_ksampler(model, cond_pair, name):
    for mask in (False, True):
        for denoise in (1.0, 0.6):
            out = _sample(model, cond_pair, name, denoise=denoise, mask=mask)
            assert out.shape == (1, 4, 8, 8)
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all(), f"{name} mask={mask} denoise={denoise}"
            again = _sample(model, cond_pair, name, denoise=denoise, mask=mask)
            assert torch.equal(out, again), f"{name} not reproducible (mask={mask}, denoise={denoise})"
            # outside the mask the input latent comes back (dpm_fast/adaptive stop at sigma_min with noise left,
            # uni_pc ends at its 0.001 stand-in level without a last model call)
            if mask and name not in ("dpm_fast", "dpm_adaptive", "uni_pc", "uni_pc_bh2"):
                keep = _latent(True)["samples"][..., 0, :]
                assert torch.allclose(out[..., 0, :], keep, atol=1e-5)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_sampler_noise_follows_the_seed(model, cond_pair, name):
    # disable_noise: the start is the latent itself, so only the sampler's own noise can depend on the seed
    a = _sample(model, cond_pair, name, seed=11, disable_noise=True)
    b = _sample(model, cond_pair, name, seed=12, disable_noise=True)
    if name in STOCHASTIC:
        assert not torch.equal(a, b), f"{name} ignores the seed"
    else:
        assert torch.equal(a, b), f"{name} should be deterministic"


@pytest.mark.parametrize("name", CFG_PP)
def test_cfg_pp_samplers_use_the_uncond_even_at_cfg_1(model, cond_pair, name):
    pos, neg = cond_pair
    other_neg = [[neg[0][0] * -2.0 + 1.0, {}]]
    a = _sample(model, (pos, neg), name, cfg=1.0)
    b = _sample(model, (pos, other_neg), name, cfg=1.0)
    assert not torch.equal(a, b), f"{name} at cfg 1 must depend on the negative conditioning"
    assert (a - b).abs().max() > 1e-3
    plain = name.replace("_cfg_pp", "")
    if plain in SAMPLER_NAMES:  # the non-CFG++ twin skips the uncond at cfg 1
        assert torch.equal(_sample(model, (pos, neg), plain, cfg=1.0), _sample(model, (pos, other_neg), plain, cfg=1.0))


def test_euler_cfg_pp_single_step_by_hand(model, cond_pair):
    pos, neg = cond_pair
    cfg, s0, s1, seed = 4.0, 3.0, 1.5, 21
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = common_ksampler(
        model,
        seed,
        1,
        cfg,
        "euler_cfg_pp",
        "karras",
        pos,
        neg,
        latent,
        disable_pbar=True,
        sigmas=torch.tensor([s0, s1]),
    )["samples"]
    x = prepare_noise(latent["samples"], seed) * s0
    sig = torch.tensor([s0])
    cond = model.apply_model(x, sig, pos[0][0]).double()
    uncond = model.apply_model(x, sig, neg[0][0]).double()
    denoised = uncond + (cond - uncond) * cfg
    # CFG++ DDIM step: x1 = D + s1 * (x - U) / s0  (alpha = sigma*exp(-log sigma) = 1 up to rounding)
    expected = (denoised + s1 * (x.double() - uncond) / s0) / model.latent_format.scale_factor
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-5)
    plain_euler = (x.double() + (x.double() - denoised) / s0 * (s1 - s0)) / model.latent_format.scale_factor
    assert not torch.allclose(out.double(), plain_euler, atol=1e-3)  # the uncond really changed the step


# ------------------------------------------------------------------------------------------------ structure


class _Counting:
    def __init__(self):
        self.calls = 0
        self.inner = closed_form_denoiser()

    def __call__(self, x, sigma, **kw):
        self.calls += 1
        return self.inner(x, sigma, **kw)


def _counting_noise():
    draws = []

    def n(a, b):
        draws.append((float(a), float(b)))
        return torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(len(draws)))

    return n, draws


N_STEPS = 8
_SIG = calculate_sigmas(ModelSamplingDiscrete(), "karras", N_STEPS)
_TAU_STEPS = sum(1 for v in _SIG[1:-1].tolist() if 5.0924 >= v >= 0.5712)
# name -> (model calls, noise draws) for N steps ending at sigma = 0 (sampler-formulas.md s.0)
CALLS_AND_DRAWS = {
    "euler_cfg_pp": (N_STEPS, 0),
    "euler_ancestral_cfg_pp": (N_STEPS, N_STEPS - 1),
    "dpmpp_2s_ancestral_cfg_pp": (2 * N_STEPS - 1, N_STEPS - 1),
    "dpmpp_2m_cfg_pp": (N_STEPS, 0),
    "exp_heun_2_x0": (2 * N_STEPS - 1, 0),
    "exp_heun_2_x0_sde": (2 * N_STEPS - 1, 2 * (N_STEPS - 1)),
    "ipndm": (N_STEPS, 0),
    "ipndm_v": (N_STEPS, 0),
    "deis": (N_STEPS, 0),
    "res_multistep": (N_STEPS, N_STEPS - 1),  # zero-weight draws, as upstream
    "res_multistep_cfg_pp": (N_STEPS, N_STEPS - 1),
    "res_multistep_ancestral": (N_STEPS, N_STEPS - 1),
    "res_multistep_ancestral_cfg_pp": (N_STEPS, N_STEPS - 1),
    "gradient_estimation": (N_STEPS, 0),
    "gradient_estimation_cfg_pp": (N_STEPS, 0),
    "er_sde": (N_STEPS, N_STEPS - 1),
    "seeds_2": (2 * N_STEPS - 1, 2 * (N_STEPS - 1)),
    "seeds_3": (3 * N_STEPS - 2, 3 * (N_STEPS - 1)),
    "sa_solver": (N_STEPS, _TAU_STEPS),
    "sa_solver_pece": (2 * N_STEPS - 1, _TAU_STEPS),
}


@pytest.mark.parametrize("name", MODERN)
def test_model_calls_and_noise_draws_per_step(name):
    model = _Counting()
    noise, draws = _counting_noise()
    fn = get_sampler(name)
    opts = {} if CALLS_AND_DRAWS[name][1] == 0 else {"noise_sampler": noise}
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * _SIG[0]
    x_before, sig_before = x.clone(), _SIG.clone()
    seen = []
    out = fn(model, x, _SIG, extra_args={}, callback=lambda d: seen.append(d["i"]), disable=True, **opts)
    assert (model.calls, len(draws)) == CALLS_AND_DRAWS[name]
    assert seen == list(range(N_STEPS))
    assert torch.equal(x, x_before) and torch.equal(_SIG, sig_before), "sampler mutated its inputs"
    assert torch.isfinite(out).all()
    # the data is N(0.3, 0.25): the result must look like a sample of it
    assert abs(float(out.mean()) - 0.3) < 0.25 and 0.2 < float(out.std()) < 0.8


@pytest.mark.parametrize("name", MODERN)
def test_float64_in_float64_out(name):
    sig = _SIG.double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * sig[0]
    out = get_sampler(name)(closed_form_denoiser(), x, sig, extra_args={"seed": 3}, disable=True)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODERN)
def test_one_sigma_returns_the_input(name):
    x = torch.randn(1, 4, 4, 4)
    out = get_sampler(name)(closed_form_denoiser(), x, torch.tensor([2.0]), extra_args={}, disable=True)
    assert torch.equal(out, x)


def test_exp_heun_2_x0_is_seeds_2_with_r_1_phi_2_and_no_noise():
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2)) * _SIG[0]
    a = get_sampler("exp_heun_2_x0")(closed_form_denoiser(), x, _SIG, disable=True)
    b = sample_seeds_2(closed_form_denoiser(), x, _SIG, disable=True, eta=0.0, s_noise=0.0, r=1.0, solver_type="phi_2")
    assert torch.equal(a, b)


def test_euler_cfg_pp_is_euler_ancestral_cfg_pp_without_noise():
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4)) * _SIG[0]
    a = get_sampler("euler_cfg_pp")(closed_form_denoiser(), x, _SIG, extra_args={"seed": 1}, disable=True)
    b = get_sampler("euler_ancestral_cfg_pp")(
        closed_form_denoiser(), x, _SIG, extra_args={"seed": 1}, disable=True, eta=0.0
    )
    assert torch.equal(a, b)


def test_res_multistep_ancestral_with_eta_0_is_res_multistep():
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4)) * _SIG[0]
    a = get_sampler("res_multistep")(closed_form_denoiser(), x, _SIG, extra_args={"seed": 1}, disable=True)
    b = get_sampler("res_multistep_ancestral")(
        closed_form_denoiser(), x, _SIG, extra_args={"seed": 9}, disable=True, eta=0.0
    )
    assert torch.equal(a, b)


def test_sa_solver_noise_interval():
    ms = ModelSamplingDiscrete()
    start, end = ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8)
    assert start == pytest.approx(5.0924, abs=1e-4) and end == pytest.approx(0.5712, abs=1e-4)
    tau = tau_interval(start, end)
    assert tau(torch.tensor(5.0)) == 1.0 and tau(torch.tensor(6.0)) == 0.0 and tau(torch.tensor(0.5)) == 0.0
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(5)) * _SIG[0]
    fn = get_sampler("sa_solver")
    quiet = fn(closed_form_denoiser(), x, _SIG, extra_args={"seed": 1}, disable=True, eta=0.0)
    assert torch.equal(quiet, fn(closed_form_denoiser(), x, _SIG, extra_args={"seed": 2}, disable=True, eta=0.0))
    assert torch.equal(
        quiet, fn(closed_form_denoiser(), x, _SIG, extra_args={"seed": 1}, disable=True, tau_func=lambda s: 0.0)
    )
    noisy = fn(closed_form_denoiser(), x, _SIG, extra_args={"seed": 1}, disable=True)
    assert not torch.equal(quiet, noisy)


def test_deis_constants_and_coefficients():
    assert DEIS_BETA_0 == -0.004715818328307364 and DEIS_BETA_1 == 17.533134832612316
    assert float(deis_time(torch.tensor([0.0]))) == pytest.approx(
        2 * abs(DEIS_BETA_0) / (DEIS_BETA_1 - DEIS_BETA_0), rel=1e-3
    )
    sig = calculate_sigmas(ModelSamplingDiscrete(), "karras", 10)
    coeffs = deis_coefficients(sig)
    assert [len(c) for c in coeffs] == [0, 2] + [3] * 7 + [0]
    for i, row in enumerate(coeffs):
        if row:  # the Lagrange weights sum to the integral of d sigma over the step
            assert float(sum(row)) == pytest.approx(float(sig[i + 1] - sig[i]), rel=2e-3)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("euler_ancestral_cfg_pp", {"eta": -1.0}, "eta"),
        ("dpmpp_2s_ancestral_cfg_pp", {"s_noise": -0.5}, "s_noise"),
        ("res_multistep_ancestral", {"eta": float("nan")}, "eta"),
        ("seeds_2", {"r": 0.0}, "r=0.0"),
        ("seeds_2", {"solver_type": "phi_3"}, "solver_type"),
        ("seeds_3", {"r_1": 0.7, "r_2": 0.3}, "r_1"),
        ("exp_heun_2_x0_sde", {"eta": -0.1}, "eta"),
        ("ipndm", {"max_order": 5}, "max_order"),
        ("ipndm_v", {"max_order": 0}, "max_order"),
        ("deis", {"deis_mode": "rhoab"}, "deis_mode"),
        ("er_sde", {"max_stage": 4}, "max_stage"),
        ("er_sde", {"s_noise": -1.0}, "s_noise"),
        ("sa_solver", {"predictor_order": 0}, "predictor_order"),
        ("sa_solver_pece", {"corrector_order": 7}, "corrector_order"),
        ("sa_solver", {"end_percent": 1.5}, "end_percent"),
    ],
)
def test_bad_options_raise_naming_the_option(name, options, match):
    x = torch.randn(1, 4, 4, 4) * _SIG[0]
    with pytest.raises(ValueError, match=match):
        get_sampler(name)(closed_form_denoiser(), x, _SIG, extra_args={}, disable=True, **options)


def test_er_sde_custom_noise_scaler_must_be_callable():
    with pytest.raises(TypeError, match="noise_scaler"):
        get_sampler("er_sde")(closed_form_denoiser(), torch.randn(1, 4, 4, 4), _SIG, disable=True, noise_scaler=3)


def test_seeds_3_stage_levels_are_interior():
    levels = []

    def model(x, sigma, **kw):
        levels.append(float(sigma[0]))
        return closed_form_denoiser()(x, sigma)

    sig = torch.tensor([4.0, 1.0, 0.0])
    get_sampler("seeds_3")(model, torch.randn(1, 4, 4, 4) * 4.0, sig, extra_args={"seed": 0}, disable=True)
    # stages at lambda_s + h/3 and + 2h/3 in lambda = -log sigma: sigma = 4^(2/3), 4^(1/3)
    assert levels[:3] == pytest.approx([4.0, 4.0 ** (2 / 3), 4.0 ** (1 / 3)], rel=1e-5)
    assert levels[3:] == [1.0]


@pytest.mark.parametrize("tau", [0.0, 1.0, 0.5])
def test_sa_solver_coefficients_integrate_the_lagrange_basis(tau):
    # b_k = alpha_t * m * integral over [l_s, l_t] of exp(-m (l_t - l)) L_k(l) dl, m = 1 + tau^2
    lambdas = torch.tensor([-2.1, -1.7, -1.2, -0.8], dtype=torch.float64)
    l_s, l_t, sigma_next = lambdas[-1], torch.tensor(-0.3, dtype=torch.float64), torch.tensor(1.35, dtype=torch.float64)
    b = stochastic_adams_coefficients(sigma_next, lambdas, l_s, l_t, tau)
    m = 1 + tau**2
    grid = torch.linspace(float(l_s), float(l_t), 20001, dtype=torch.float64)
    for k in range(len(lambdas)):
        basis = torch.ones_like(grid)
        for j in range(len(lambdas)):
            if j != k:
                basis = basis * (grid - lambdas[j]) / (lambdas[k] - lambdas[j])
        integral = torch.trapezoid(m * torch.exp(-m * (l_t - grid)) * basis, grid)
        assert float(b[k]) == pytest.approx(float(sigma_next * l_t.exp() * integral), rel=1e-6, abs=1e-9)


def test_sa_solver_takes_the_noise_interval_from_the_ksampler_model():
    class Guided:  # what the KSampler passes: a denoiser with a public model_sampling
        model = NetworkModel(TinyNet(), model_sampling=ModelSamplingDiscrete(linear_start=0.0001, linear_end=0.02))
        model_sampling = model.model_sampling

    ms = _model_sampling_of(Guided())
    assert ms is Guided.model.model_sampling
    assert ms.percent_to_sigma(0.2) != pytest.approx(5.0924, abs=1e-3)
    assert _model_sampling_of(closed_form_denoiser()).percent_to_sigma(0.2) == pytest.approx(5.0924, abs=1e-4)
