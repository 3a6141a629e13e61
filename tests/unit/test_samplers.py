"""Samplers on an analytic denoiser (Gaussian data, exact posterior mean), plus their defining steps."""

import math

import pytest
import torch

from retouch.models.ldm_config import linear_alphas_cumprod
from retouch.sampling import dpm_solver, samplers, timesteps, unipc
from retouch.sampling.noise import BrownianNoiseSampler
from retouch.sampling.rng import ImageRNG
from retouch.sampling.schedules import karras

MU, S = 0.5, 0.7
SIGMAS = karras(30, 0.0292, 14.6146)


def gaussian_denoiser(x, sigma, **_):
    s2, sig2 = S**2, sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
    return (s2 * x + sig2 * MU) / (s2 + sig2)


def exact_endpoint(x_t, sigma_max, sigma_min=0.0292):
    """Where a deterministic sampler must land: the probability-flow ODE from x_T down to σ_min, then
    the final step (σ_min → 0), which is one denoiser evaluation."""
    x_min = MU + (x_t - MU) * math.sqrt(S**2 + sigma_min**2) / math.sqrt(S**2 + sigma_max**2)
    return gaussian_denoiser(x_min, torch.tensor([sigma_min]))


def start(n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(1, n, generator=g) * math.sqrt(S**2 + SIGMAS[0].item() ** 2)


def noise_sampler(x, seed=1):
    g = torch.Generator().manual_seed(seed)
    return lambda *_: torch.randn(x.shape, generator=g)


# (sampler, kwargs, order of accuracy, mean |error| bound at 30 Karras steps)
ODE = [
    (samplers.sample_euler, {}, 1, 0.04),
    (samplers.sample_heun, {}, 2, 4e-3),
    (samplers.sample_dpm_2, {}, 2, 2e-3),
    (samplers.sample_lms, {}, 0, 2e-3),  # 0: at the floor set by its quadrature tolerance already
    (samplers.sample_dpmpp_2m, {}, 2, 4e-3),
    (samplers.sample_euler_ancestral, {"eta": 0.0}, 1, 0.04),
    (samplers.sample_dpm_2_ancestral, {"eta": 0.0}, 2, 2e-3),
    (samplers.sample_dpmpp_2s_ancestral, {"eta": 0.0}, 2, 4e-3),
    (samplers.sample_dpmpp_sde, {"eta": 0.0}, 2, 4e-3),
    (samplers.sample_dpmpp_2m_sde, {"eta": 0.0}, 2, 4e-3),
    (samplers.sample_dpmpp_3m_sde, {"eta": 0.0}, 0, 1e-3),
]


def ode_error(sampler, kwargs, steps):
    sigmas = karras(steps, 0.0292, 14.6146)
    x = start()
    out = sampler(gaussian_denoiser, x.clone(), sigmas, noise_sampler=noise_sampler(x), **kwargs)
    return (out - exact_endpoint(x, sigmas[0].item())).abs().mean().item()


@pytest.mark.parametrize(("sampler", "kwargs", "order", "bound"), ODE, ids=[s[0].__name__ + str(s[1]) for s in ODE])
def test_deterministic_samplers_converge_to_the_ode_solution(sampler, kwargs, order, bound):
    coarse, fine = ode_error(sampler, kwargs, 30), ode_error(sampler, kwargs, 60)
    assert coarse < bound
    if order:
        assert fine < coarse / (1.6 if order == 1 else 2.2)  # doubling the steps shrinks the error


def test_dpm_fast_and_adaptive_follow_the_ode():
    x = start()
    target = exact_endpoint(x, SIGMAS[0].item())
    fast = dpm_solver.sample_dpm_fast(gaussian_denoiser, x.clone(), SIGMAS[-2].item(), SIGMAS[0].item(), 30)
    adaptive = dpm_solver.sample_dpm_adaptive(gaussian_denoiser, x.clone(), SIGMAS[-2].item(), SIGMAS[0].item())
    # they stop at σ_min, where the exact solution is still a little noisy
    at_min = MU + (x - MU) * math.sqrt(S**2 + SIGMAS[-2].item() ** 2) / math.sqrt(S**2 + SIGMAS[0].item() ** 2)
    assert (fast - at_min).abs().mean() < 1e-3
    assert (adaptive - at_min).abs().mean() < 0.03  # rtol 0.05 by default: a loose but bounded error
    assert (fast - target).abs().mean() < 0.01


STOCHASTIC = [
    (samplers.sample_euler_ancestral, {}, False), (samplers.sample_dpm_2_ancestral, {}, False),
    (samplers.sample_dpmpp_2s_ancestral, {}, False), (samplers.sample_dpmpp_sde, {}, True),
    (samplers.sample_dpmpp_2m_sde, {}, True), (samplers.sample_dpmpp_3m_sde, {}, True),
    (samplers.sample_restart, {}, False), (samplers.sample_euler, {"s_churn": 1.0}, False),
]


@pytest.mark.parametrize(("sampler", "kwargs", "brownian"), STOCHASTIC, ids=[s[0].__name__ for s in STOCHASTIC])
def test_stochastic_samplers_reach_the_data_distribution(sampler, kwargs, brownian):
    sigmas = karras(100, 0.0292, 14.6146)
    x = start()
    noise = BrownianNoiseSampler(x, sigmas, [7], "CPU") if brownian else noise_sampler(x)
    out = sampler(gaussian_denoiser, x.clone(), sigmas, noise_sampler=noise, **kwargs)
    assert abs(out.mean().item() - MU) < 0.03
    assert abs(out.std().item() - S) < 0.03


def test_lcm_step_is_denoise_then_renoise():
    x = torch.randn(1, 4, 2, 2)
    sigmas = torch.tensor([3.0, 1.5])
    fresh = torch.randn(1, 4, 2, 2)
    out = samplers.sample_lcm(gaussian_denoiser, x.clone(), sigmas, noise_sampler=lambda *_: fresh)
    assert torch.allclose(out, gaussian_denoiser(x, sigmas[:1]) + 1.5 * fresh)


def test_euler_step_is_the_karras_ode_step():
    x = torch.randn(1, 4, 2, 2)
    sigmas = torch.tensor([3.0, 1.5, 0.0])
    one = samplers.sample_euler(gaussian_denoiser, x.clone(), sigmas[:2], noise_sampler=noise_sampler(x))
    d = (x - gaussian_denoiser(x, sigmas[:1])) / 3.0
    assert torch.allclose(one, x + d * (1.5 - 3.0))


def test_euler_ancestral_step_splits_sigma_into_down_and_up():
    x = torch.randn(1, 4, 2, 2)
    sigmas = torch.tensor([3.0, 1.5])
    fresh = torch.randn(1, 4, 2, 2)
    out = samplers.sample_euler_ancestral(gaussian_denoiser, x.clone(), sigmas, noise_sampler=lambda *_: fresh)
    up = min(1.5, (1.5**2 * (3.0**2 - 1.5**2) / 3.0**2) ** 0.5)
    down = (1.5**2 - up**2) ** 0.5
    d = (x - gaussian_denoiser(x, sigmas[:1])) / 3.0
    assert torch.allclose(out, x + d * (down - 3.0) + fresh * up, atol=1e-6)


def test_dpmpp_2m_first_step_is_the_exponential_integrator():
    x = torch.randn(1, 4, 2, 2)
    sigmas = torch.tensor([3.0, 1.5])
    out = samplers.sample_dpmpp_2m(gaussian_denoiser, x.clone(), sigmas)
    h = math.log(3.0) - math.log(1.5)
    assert torch.allclose(out, (1.5 / 3.0) * x - math.expm1(-h) * gaussian_denoiser(x, sigmas[:1]), atol=1e-6)


AC = linear_alphas_cumprod(0.00085, 0.012, 1000)


class GaussianEps:
    """The exact ε-prediction for the Gaussian data in the DDPM parameterisation."""

    cond_scale_multiplier = 1.0
    need_last_noise_uncond = False
    last_noise_uncond = None

    def __call__(self, x, t, **_):
        # ᾱ at fractional t: log √ᾱ linear between timesteps, as UniPC's noise schedule assumes
        t = t.float().clamp(0, 999)
        lo, hi = t.floor().long(), t.ceil().long()
        log_a = torch.lerp(AC[lo].log(), AC[hi].log(), t - lo)
        a = log_a.exp().reshape(-1, 1, 1)
        sigma = ((1 - a) / a) ** 0.5
        scaled = x / a.sqrt()
        eps = (scaled - gaussian_denoiser(scaled, sigma.reshape(-1))) / sigma
        self.last_noise_uncond = eps
        return eps


@pytest.mark.parametrize("name", ["ddim", "plms", "unipc"])
def test_timestep_samplers_follow_the_ode(name):
    steps = ddim = timesteps.ddim_timesteps(25)
    a_top = AC[ddim[-1]]
    g = torch.Generator().manual_seed(0)
    x0 = MU + S * torch.randn(1, 4000, 1, generator=g)
    eps = torch.randn(1, 4000, 1, generator=g)
    x = a_top.sqrt() * x0 + (1 - a_top).sqrt() * eps
    sigma_top = ((1 - a_top) / a_top).sqrt().item()
    if name == "ddim":
        out = timesteps.sample_ddim(GaussianEps(), x.clone(), steps, alphas_cumprod=AC, noise_sampler=lambda *_: 0 * x)
    elif name == "plms":
        out = timesteps.sample_plms(GaussianEps(), x.clone(), steps, alphas_cumprod=AC)
    else:
        out = unipc.sample_unipc(GaussianEps(), x.clone()[..., None], steps, alphas_cumprod=AC)[..., 0]
    # DDIM/PLMS stop at ᾱ[T[0]] = ᾱ[1], UniPC at ᾱ[0]: compare with the ODE solution there, in σ space
    a_end = AC[0] if name == "unipc" else AC[1]
    sigma_end = ((1 - a_end) / a_end).sqrt().item()
    expected = MU + (x / a_top.sqrt() - MU) * math.sqrt(S**2 + sigma_end**2) / math.sqrt(S**2 + sigma_top**2)
    # UniPC's schedule interpolates log ᾱ piecewise-linearly between the 1000 timesteps; its kinks
    # keep the observed convergence near first order here.
    bound = {"ddim": 0.05, "plms": 6e-3, "unipc": 0.02}[name]
    assert (out / a_end.sqrt() - expected).abs().mean() < bound


def test_batch_equals_single_for_ancestral_noise():
    x = torch.randn(2, 4, 4, 4)
    rng = ImageRNG((4, 4, 4), [10, 11], source="CPU")
    rng.next()
    batch = samplers.sample_euler_ancestral(gaussian_denoiser, x.clone(), SIGMAS[:8], noise_sampler=lambda *_: rng.next())
    for i, seed in enumerate([10, 11]):
        single_rng = ImageRNG((4, 4, 4), [seed], source="CPU")
        single_rng.next()
        single = samplers.sample_euler_ancestral(gaussian_denoiser, x[i:i + 1].clone(), SIGMAS[:8],
                                                 noise_sampler=lambda *_, r=single_rng: r.next())
        assert torch.equal(batch[i], single[0])


def test_batch_equals_single_for_brownian_sde_noise():
    x = torch.randn(2, 4, 4, 4)
    batch = samplers.sample_dpmpp_2m_sde(gaussian_denoiser, x.clone(), SIGMAS[:8],
                                         noise_sampler=BrownianNoiseSampler(x, SIGMAS, [5, 6], "CPU"))
    for i, seed in enumerate([5, 6]):
        single = samplers.sample_dpmpp_2m_sde(gaussian_denoiser, x[i:i + 1].clone(), SIGMAS[:8],
                                              noise_sampler=BrownianNoiseSampler(x[i:i + 1], SIGMAS, [seed], "CPU"))
        assert torch.allclose(batch[i], single[0], atol=1e-6)
