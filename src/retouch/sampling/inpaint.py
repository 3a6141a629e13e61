"""The inpaint blend: the one place where sampled latents and the original are mixed (spec §3.9).

:class:`InpaintBlend` holds the original latents and the repaint mask; :class:`Masked` wraps a
denoiser so that every call blends — the denoised output for σ samplers, the input for timestep
samplers (A1111's ``mask_before_denoising``). The pipeline calls :meth:`InpaintBlend.apply` once
more on the final latents. Samplers never see a mask.
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


class Masked:
    """A denoiser whose input (``before=True``) or output is blended with the original latents."""

    def __init__(self, inner: Denoiser, blend: InpaintBlend, *, before: bool):
        self.inner = inner
        self.blend = blend
        self.before = before

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.before:
            return self.inner(self.blend.apply(x), sigma)
        return self.blend.apply(self.inner(x, sigma))

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.before:
            return self.inner.with_uncond(self.blend.apply(x), sigma)
        denoised, uncond = self.inner.with_uncond(x, sigma)
        return self.blend.apply(denoised), uncond


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
