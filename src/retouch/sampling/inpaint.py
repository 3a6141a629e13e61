"""The inpaint blend: the one place where sampled latents and the original are mixed (spec §3.9).

:class:`InpaintBlend` holds the original latents and the repaint mask; :class:`Masked` wraps a
denoiser so that every call blends (:meth:`InpaintBlend.step`) — the denoised output for σ samplers,
the input for timestep samplers (A1111's ``mask_before_denoising``). The pipeline calls
:meth:`InpaintBlend.final` on the final latents. Samplers never see a mask. :class:`SoftBlend` is soft
inpainting's blend (A1111's extension hooks ``on_mask_blend``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from retouch.control import Interrupted


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class InpaintBlend:
    """``latents·repaint + original·(1 − repaint)``; ``repaint`` ``(C, h, w)``: 1 = repaint, 0 = keep.

    ``keep`` is stored as A1111 computes it (``1 − latmask``), so the blend is bit-identical to its own.
    """

    original: torch.Tensor  # (B, C, h, w) init latents
    repaint: torch.Tensor  # A1111's nmask
    keep: torch.Tensor  # A1111's mask

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.repaint + self.original * self.keep

    def step(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The blend inside the sampling loop (``sigma``: what the denoiser was called with)."""
        return self.apply(latents)

    def final(self, latents: torch.Tensor) -> torch.Tensor:
        """The blend of the sampler's result."""
        return self.apply(latents)


@dataclass(frozen=True)
class SoftBlend(InpaintBlend):
    """Soft inpainting: at each step the original is blended in by ``repaint^(σ^bias · strength)`` (so less as
    σ falls), interpolating the latent vectors' magnitudes separately (``contrast_boost`` biases them towards
    the larger); no blend at the end. ``sigma`` is the denoiser's argument: a timestep for timestep samplers,
    as in A1111."""

    schedule_bias: float = 1.0
    strength: float = 0.5
    contrast_boost: float = 4.0

    def step(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = torch.pow(self.repaint, (sigma[0] ** self.schedule_bias) * self.strength)
        return latent_blend(self.original, latents, t, self.contrast_boost)

    def final(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


def latent_blend(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, detail: float) -> torch.Tensor:
    """Interpolate latents ``a`` → ``b`` by ``t`` ``(C, h, w)``/``(B, C, h, w)``, with the per-pixel vector
    magnitudes interpolated separately as ``(|a|^d·(1−t) + |b|^d·t)^(1/d)`` (float64, as A1111)."""
    if t.ndim == 3:
        t2, t3 = t[None], t[0][None, None]
    else:
        t2, t3 = t, t[:, 0][:, None]
    interpolated = a * (1 - t2)
    interpolated.add_(b * t2)
    current = torch.norm(interpolated, p=2, dim=1, keepdim=True).to(torch.float64).add_(0.00001)
    a_magnitude = torch.norm(a, p=2, dim=1, keepdim=True).to(torch.float64).pow_(detail) * (1 - t3)
    b_magnitude = torch.norm(b, p=2, dim=1, keepdim=True).to(torch.float64).pow_(detail) * t3
    desired = a_magnitude.add_(b_magnitude).pow_(1 / detail)
    return interpolated.mul_(desired.div_(current).to(interpolated.dtype))


class Masked:
    """A denoiser whose input (``before=True``) or output is blended with the original latents."""

    def __init__(self, inner: Denoiser, blend: InpaintBlend, *, before: bool):
        self.inner = inner
        self.blend = blend
        self.before = before

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.before:
            return self.inner(self.blend.step(x, sigma), sigma)
        return self.blend.step(self.inner(x, sigma), sigma)

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.before:
            return self.inner.with_uncond(self.blend.step(x, sigma), sigma)
        denoised, uncond = self.inner.with_uncond(x, sigma)
        return self.blend.step(denoised, sigma), uncond


class Interruptible:
    """Checks ``should_stop()`` before every model call and raises :class:`Interrupted` when true."""

    def __init__(self, inner: Denoiser, should_stop: Any):
        self.inner = inner
        self.should_stop = should_stop

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._check()
        return self.inner(x, sigma)

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check()
        return self.inner.with_uncond(x, sigma)

    def _check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted
