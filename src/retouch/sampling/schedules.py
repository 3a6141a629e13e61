"""Noise schedules: the model's discrete σ table and A1111's twelve "Schedule type"s (spec §4.1, §4.5).

Pure functions of numbers (no model, no options): each returns σ values from high to low ending in 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


class DiscreteSchedule:
    """σ_t = sqrt((1−ᾱ_t)/ᾱ_t) for the model's 1000 training timesteps, with k-diffusion's
    log-linear interpolation between them (``sigma_to_t`` / ``t_to_sigma``)."""

    def __init__(self, sigmas: torch.Tensor, quantize: bool = False):
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()
        self.quantize = quantize

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor, quantize: bool = False) -> DiscreteSchedule:
        return cls(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, quantize)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int) -> torch.Tensor:
        """``n`` σ uniformly spaced in t from the last timestep to 0, plus a final 0."""
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        quantize = self.quantize if quantize is None else quantize
        log_sigma = sigma.log()
        dists = log_sigma.to(self.log_sigmas.device) - self.log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(t.device)


# ---------------------------------------------------------------------------------------------
# Schedule functions. Signature: (n, sigma_min, sigma_max, schedule, *, rho, beta_alpha, beta_beta)
def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, schedule: DiscreteSchedule) -> torch.Tensor:
    start = schedule.sigma_to_t(torch.tensor(sigma_max))
    end = schedule.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [schedule.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor(sigmas + [0.0])


# NVIDIA's Align Your Steps σ lists (11 levels), by model family (A1111 ``get_align_your_steps_sigmas``)
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


@dataclass(frozen=True)
class NoiseSchedule:
    """What samplers and schedules may know of a model's noise schedule (:attr:`retouch.models.Model.schedule`):
    discrete ᾱ of its training, what its UNet predicts, and its family's Align Your Steps levels. A
    flow-matching family would describe itself here, and no sampler would ask which family it runs."""

    alphas_cumprod: torch.Tensor  # (1000,) float32
    prediction: str = "eps"  # "eps" or "v"
    ays_sigmas: tuple[float, ...] = AYS_SD15

    @property
    def v_prediction(self) -> bool:
        return self.prediction == "v"


def align_your_steps(n: int, levels: tuple[float, ...] = AYS_SD15) -> torch.Tensor:
    """NVIDIA's Align Your Steps σ (``levels``: the model family's list), log-linearly resampled to ``n`` steps."""
    sigmas = list(levels)
    if n == len(sigmas):
        return torch.FloatTensor(sigmas + [0.0])
    xs = np.linspace(0, 1, len(sigmas))
    ys = np.log(sigmas[::-1])
    resampled = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
    return torch.FloatTensor(np.append(resampled, [0.0]))


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    steps = torch.arange(n + 1)
    return torch.tan(steps / n * alpha_min + (1.0 - steps / n) * alpha_max)


def simple(n: int, schedule: DiscreteSchedule) -> torch.Tensor:
    stride = len(schedule.sigmas) / n
    sigmas = [float(schedule.sigmas[-(1 + int(x * stride))]) for x in range(n)]
    return torch.FloatTensor(sigmas + [0.0])


def normal(n: int, sigma_min: float, sigma_max: float, schedule: DiscreteSchedule) -> torch.Tensor:
    start = schedule.sigma_to_t(torch.tensor(sigma_max))
    end = schedule.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [schedule.t_to_sigma(ts) for ts in torch.linspace(start, end, n)]
    return torch.FloatTensor(sigmas + [0.0])


def ddim_uniform(n: int, schedule: DiscreteSchedule) -> torch.Tensor:
    stride = max(len(schedule.sigmas) // n, 1)
    sigmas = [float(schedule.sigmas[x]) for x in range(1, len(schedule.sigmas), stride)]
    return torch.FloatTensor(sigmas[::-1] + [0.0])


def beta(n: int, sigma_min: float, sigma_max: float, alpha: float, beta_: float) -> torch.Tensor:
    timesteps = [stats.beta.ppf(x, alpha, beta_) for x in 1 - np.linspace(0, 1, n)]
    return torch.FloatTensor([sigma_min + x * (sigma_max - sigma_min) for x in timesteps] + [0.0])


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    default_rho: float = -1.0
    aliases: tuple[str, ...] = ()


SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic"),
    Scheduler("uniform", "Uniform"),
    Scheduler("karras", "Karras", default_rho=7.0),
    Scheduler("exponential", "Exponential"),
    Scheduler("polyexponential", "Polyexponential", default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal"),
    Scheduler("align_your_steps", "Align Your Steps"),
    Scheduler("simple", "Simple"),
    Scheduler("normal", "Normal"),
    Scheduler("ddim", "DDIM"),
    Scheduler("beta", "Beta"),
)


def compute_sigmas(
    scheduler: str,
    n: int,
    schedule: DiscreteSchedule,
    *,
    sigma_min: float,
    sigma_max: float,
    rho: float | None = None,
    beta_alpha: float = 0.6,
    beta_beta: float = 0.6,
    ays_sigmas: tuple[float, ...] = AYS_SD15,
) -> torch.Tensor:
    """σ for ``n`` steps of the named schedule (``scheduler`` is a name from :data:`SCHEDULERS`;
    ``automatic`` / ``uniform`` are the model's discrete schedule)."""
    if scheduler in ("automatic", "uniform"):
        return schedule.get_sigmas(n)
    if scheduler == "karras":
        return karras(n, sigma_min, sigma_max, rho if rho is not None else 7.0)
    if scheduler == "exponential":
        return exponential(n, sigma_min, sigma_max)
    if scheduler == "polyexponential":
        return polyexponential(n, sigma_min, sigma_max, rho if rho is not None else 1.0)
    if scheduler == "sgm_uniform":
        return sgm_uniform(n, sigma_min, sigma_max, schedule)
    if scheduler == "kl_optimal":
        return kl_optimal(n, sigma_min, sigma_max)
    if scheduler == "align_your_steps":
        return align_your_steps(n, ays_sigmas)
    if scheduler == "simple":
        return simple(n, schedule)
    if scheduler == "normal":
        return normal(n, sigma_min, sigma_max, schedule)
    if scheduler == "ddim":
        return ddim_uniform(n, schedule)
    if scheduler == "beta":
        return beta(n, sigma_min, sigma_max, beta_alpha, beta_beta)
    raise ValueError(f"scheduler must be one of {[s.label for s in SCHEDULERS]}, got {scheduler!r}")


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1111's "Zero Terminal SNR" noise schedule: √ᾱ shifted and scaled so that it ends at (almost) 0."""
    sqrt_ac = alphas_cumprod.sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    out = sqrt_ac**2
    out[-1] = 4.8973451890853435e-08
    return out
