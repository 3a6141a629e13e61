"""Step counts, σ schedules and sampler/schedule names (spec §4.1–§4.2, §8 items 42–47)."""

import math

import pytest
import torch

from retouch import Options
from retouch.models.ldm_config import linear_alphas_cumprod
from retouch.sampling import registry
from retouch.sampling.plan import get_sigmas, img2img_steps
from retouch.sampling.schedules import SCHEDULERS, DiscreteSchedule, compute_sigmas, exponential, karras
from retouch.sampling.timesteps import ddim_timesteps

SD1 = DiscreteSchedule.from_alphas_cumprod(linear_alphas_cumprod(0.00085, 0.012, 1000))


@pytest.mark.parametrize(("steps", "ds", "fix", "S", "t_enc", "start_auto", "start_karras"), [
    (20, 0.75, False, 20, 15, 4.856, 5.789),
    (20, 0.5, False, 20, 10, 1.765, 1.483),
    (20, 1.0, False, 20, 19, 14.615, 14.615),
    (20, 0.0, False, 20, 0, 0.0292, 0.0292),
    (20, 0.75, True, 26, 19, 4.265, 5.033),
    (20, 0.3, True, 66, 19, 0.810, 0.337),
    (100, 0.29, False, 100, 28, 0.783, 0.315),
    (30, 0.29, False, 30, 8, 0.764, 0.299),
])
def test_img2img_step_table(steps, ds, fix, S, t_enc, start_auto, start_karras):
    assert img2img_steps(steps, ds, fix) == (S, t_enc)
    for sampler, expected in (("Euler", start_auto), ("DPM++ 2M", start_karras)):
        info, scheduler = registry.resolve_sampler_and_scheduler(sampler, "Automatic")
        sigmas = get_sigmas(info, scheduler, S, SD1, Options(), {})
        tail = sigmas[S - t_enc - 1:]
        assert len(tail) == t_enc + 2
        assert math.isclose(tail[0].item(), expected, abs_tol=1.5e-3)


def test_strength_above_one_is_0999():
    assert img2img_steps(20, 1.7, False) == img2img_steps(20, 0.999, False)
    assert img2img_steps(20, 0.0, True) == (0, 19)


def test_sd1_sigma_range():
    assert math.isclose(SD1.sigma_min.item(), 0.02917, abs_tol=1e-4)
    assert math.isclose(SD1.sigma_max.item(), 14.6146, abs_tol=1e-3)
    t = torch.tensor([0.0, 10.5, 999.0])
    assert torch.allclose(SD1.sigma_to_t(SD1.t_to_sigma(t)), t, atol=1e-3)


def test_karras_and_exponential_formulas():
    s = karras(5, 0.1, 10.0, 7.0)
    ramp = torch.linspace(0, 1, 5)
    expected = (10.0 ** (1 / 7) + ramp * (0.1 ** (1 / 7) - 10.0 ** (1 / 7))) ** 7
    assert torch.allclose(s[:-1], expected) and s[-1] == 0
    e = exponential(4, 0.1, 10.0)
    assert torch.allclose(e[:-1].log(), torch.linspace(math.log(10.0), math.log(0.1), 4))


@pytest.mark.parametrize("scheduler", [s.name for s in SCHEDULERS])
def test_every_schedule_decreases(scheduler):
    sigmas = compute_sigmas(scheduler, 12, SD1, sigma_min=SD1.sigma_min.item(), sigma_max=SD1.sigma_max.item())
    if scheduler == "kl_optimal":  # A1111's KL Optimal ends at σ_min, without a final 0
        assert len(sigmas) == 13 and math.isclose(sigmas[-1].item(), SD1.sigma_min.item(), rel_tol=1e-5)
    elif scheduler == "ddim":  # every (1000 // n)-th σ from t=1: 13 of them for n = 12, plus 0
        assert len(sigmas) == 14 and sigmas[-1] == 0
    else:
        assert len(sigmas) == 13 and sigmas[-1] == 0
    assert torch.all(sigmas[:-1] > 0) and torch.all(sigmas[:-1] >= sigmas[1:])


def test_discard_penultimate_sigma_keeps_length():
    info, scheduler = registry.resolve_sampler_and_scheduler("DPM2", None)
    sigmas = get_sigmas(info, scheduler, 10, SD1, Options(), {})
    assert len(sigmas) == 11
    full = compute_sigmas("karras", 11, SD1, sigma_min=SD1.sigma_min.item(), sigma_max=SD1.sigma_max.item())
    assert torch.equal(sigmas, torch.cat([full[:-2], full[-1:]]))


def test_ddim_timesteps():  # spec §4.2, item 47
    t = ddim_timesteps(20)
    assert t.tolist() == list(range(1, 1000, 50))
    assert t[15].item() == 751 and t[:15][-1].item() == 701
    assert len(ddim_timesteps(30)) == 31  # 1000 // 30 = 33 → more timesteps than steps


@pytest.mark.parametrize(("name", "scheduler", "expected"), [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
    ("DPM++ 2M SDE Exponential", "Automatic", ("DPM++ 2M SDE", "Exponential")),
    ("Euler a", None, ("Euler a", "Automatic")),
    (None, None, ("DPM++ 2M", "Automatic")),
    ("k_euler_a", "karras", ("Euler a", "Karras")),
    ("DDIM", "sgm_uniform", ("DDIM", "SGM Uniform")),
])
def test_name_resolution(name, scheduler, expected):
    info, sched = registry.resolve_sampler_and_scheduler(name, scheduler)
    assert (info.name, sched.label) == expected


def test_unknown_names_are_errors_listing_valid_ones():
    with pytest.raises(ValueError, match=r"sampler_name: unknown sampler 'Eulr'.*Euler a, Euler, LMS"):
        registry.resolve_sampler_and_scheduler("Eulr", None)
    with pytest.raises(ValueError, match=r"scheduler: unknown schedule type 'Karas'.*Karras"):
        registry.resolve_sampler_and_scheduler("Euler", "Karas")


@pytest.mark.parametrize(("name", "expected"), [
    ("DPM++ 2M", "Karras"), ("DPM++ SDE", "Karras"), ("DPM++ 2S a", "Karras"), ("DPM2", "Karras"),
    ("DPM2 a", "Karras"), ("Restart", "Karras"), ("DPM++ 2M SDE", "Exponential"),
    ("DPM++ 2M SDE Heun", "Exponential"), ("DPM++ 3M SDE", "Exponential"),
])
def test_automatic_resolves_like_a1111(name, expected):
    extra = {}
    info, scheduler = registry.resolve_sampler_and_scheduler(name, "Automatic")
    get_sigmas(info, scheduler, 10, SD1, Options(), extra)
    assert extra["Schedule type"] == expected


@pytest.mark.parametrize("name", ["Euler", "Euler a", "LMS", "Heun", "DPM fast", "DPM adaptive"])
def test_automatic_is_the_model_schedule_for_these(name):
    extra = {}
    info, scheduler = registry.resolve_sampler_and_scheduler(name, "Automatic")
    sigmas = get_sigmas(info, scheduler, 10, SD1, Options(), extra)
    assert "Schedule type" not in extra and torch.equal(sigmas, SD1.get_sigmas(10))


def test_all_a1111_samplers_and_schedules_exist():
    assert registry.sampler_names() == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
        "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++",
        "PLMS", "UniPC", "LCM"]
    assert registry.scheduler_labels() == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
