"""Model denoisers: the UNet's prediction → what a sampler family integrates (the innermost layer of
the stack model denoiser → :mod:`~retouch.sampling.guidance` → :mod:`~retouch.sampling.inpaint`).

* :class:`EpsDenoiser` / :class:`VDenoiser` / :class:`LCMDenoiser` — k-diffusion's CompVis wrappers,
  ``D(x, σ, cond, concat) -> denoised``.
* :class:`TimestepEpsModel` — the UNet as ε(x, t) for DDIM/PLMS/UniPC.

Each also says how its output becomes a prediction of x₀ (:meth:`predict_x0`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from retouch.conditioning import Conditioning
from retouch.sampling.schedules import DiscreteSchedule, append_zero

# apply_model(x, t, cond, concat) -> UNet output (ε, or v for v-prediction models)
ApplyModel = Callable[[torch.Tensor, torch.Tensor, Conditioning, torch.Tensor | None], torch.Tensor]


def _dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v[(...,) + (None,) * (ndim - v.ndim)]


class EpsDenoiser:
    """ε-prediction: ``D(x, σ) = x − σ·ε(x/√(σ²+1), t(σ))`` (k-diffusion ``CompVisDenoiser``)."""

    def __init__(self, apply_model: ApplyModel, schedule: DiscreteSchedule):
        self.apply_model = apply_model
        self.schedule = schedule

    def __call__(self, x, sigma, cond: Conditioning, concat=None):
        c_in = _dims(1 / (sigma**2 + 1) ** 0.5, x.ndim)
        eps = self.apply_model(x * c_in, self.schedule.sigma_to_t(sigma), cond, concat)
        return x + eps * _dims(-sigma, x.ndim)

    def predict_x0(self, x: torch.Tensor, out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The output already is the denoised latent."""
        return out


class VDenoiser(EpsDenoiser):
    """v-prediction (SD2 768-v): k-diffusion ``CompVisVDenoiser`` scalings."""

    def __call__(self, x, sigma, cond: Conditioning, concat=None):
        c_skip = _dims(1 / (sigma**2 + 1), x.ndim)
        c_out = _dims(-sigma / (sigma**2 + 1) ** 0.5, x.ndim)
        c_in = _dims(1 / (sigma**2 + 1) ** 0.5, x.ndim)
        return self.apply_model(x * c_in, self.schedule.sigma_to_t(sigma), cond, concat) * c_out + x * c_skip


class LCMSchedule(DiscreteSchedule):
    """The 50 timesteps an LCM was distilled on (every 20th of 1000), as A1111's LCM sampler."""

    ORIGINAL_STEPS = 50

    def __init__(self, alphas_cumprod: torch.Tensor):
        total = alphas_cumprod.shape[0]
        self.skip_steps = total // self.ORIGINAL_STEPS
        valid = torch.zeros(self.ORIGINAL_STEPS, dtype=torch.float32)
        for x in range(self.ORIGINAL_STEPS):
            valid[self.ORIGINAL_STEPS - 1 - x] = alphas_cumprod[total - 1 - x * self.skip_steps]
        super().__init__(((1 - valid) / valid) ** 0.5)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start, end = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return append_zero(self.t_to_sigma(torch.linspace(start, end, n)))

    def sigma_to_t(self, sigma, quantize=None):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t):
        t = torch.clamp(((t - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(t)


class LCMDenoiser(EpsDenoiser):
    """A1111's LCM denoiser: consistency-model boundary scalings on top of the ε prediction."""

    def __call__(self, x, sigma, cond: Conditioning, concat=None):
        c_in = _dims(1 / (sigma**2 + 1) ** 0.5, x.ndim)
        t = self.schedule.sigma_to_t(sigma)
        eps = self.apply_model(x * c_in, t, cond, concat)
        output = x + eps * _dims(-sigma, x.ndim)
        scaled_t = _dims(t, x.ndim) * 10.0
        c_skip = 0.25 / (scaled_t**2 + 0.25)
        c_out = scaled_t / (scaled_t**2 + 0.25) ** 0.5
        return c_out * output + c_skip * x


class TimestepEpsModel:
    """The UNet as ε(x, t) at integer timesteps (v-prediction converted to ε)."""

    def __init__(self, apply_model: ApplyModel, alphas_cumprod: torch.Tensor, v_prediction: bool):
        self.apply_model = apply_model
        self.v_prediction = v_prediction
        self.alphas_cumprod = alphas_cumprod
        ac = alphas_cumprod.double()
        self.sqrt_ac, self.sqrt_one_minus_ac = ac.sqrt().float(), (1 - ac).sqrt().float()

    def __call__(self, x, t, cond: Conditioning, concat=None):
        out = self.apply_model(x, t, cond, concat)
        if not self.v_prediction:
            return out
        idx = t.to(torch.int)
        return _dims(self.sqrt_ac[idx], x.ndim) * out + _dims(self.sqrt_one_minus_ac[idx], x.ndim) * x

    def predict_x0(self, x: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x₀ from ε: ``(x − √(1−ᾱ_t)·ε) / √ᾱ_t``."""
        a_t = self.alphas_cumprod[t.long()][:, None, None, None]
        return (x - (1 - a_t).sqrt() * out) / a_t.sqrt()
