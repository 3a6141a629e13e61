"""Seeded noise, exactly as A1111 v1.10.1 draws it (spec §5).

Every image has its own generator seeded with its seed, so an image's noise does not depend on
its position in the batch. ``randn_source`` selects the generator: ``"CPU"`` (torch CPU),
``"GPU"`` (torch on the model's device — on a CPU-only machine the same as CPU) or ``"NV"``
(:class:`PhiloxGenerator`, a numpy reproduction of CUDA's ``torch.randn`` on any hardware).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Philox-4x32-10 + Box–Muller, bit-compatible with CUDA's torch.randn (spec §5.7)
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_TWO_POW32_INV = np.array([2.3283064e-10], dtype=np.float32)
_TWO_POW32_INV_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def _split_uint64(x: np.ndarray) -> np.ndarray:
    """uint64 values → ``[low words, high words]`` as uint32."""
    return x.view(np.uint32).reshape(-1, 2).transpose(1, 0)


def _philox_round(counter: np.ndarray, key: np.ndarray) -> None:
    v1 = _split_uint64(counter[0].astype(np.uint64) * _PHILOX_M[0])
    v2 = _split_uint64(counter[2].astype(np.uint64) * _PHILOX_M[1])
    counter[0] = v2[1] ^ counter[1] ^ key[0]
    counter[1] = v2[0]
    counter[2] = v1[1] ^ counter[3] ^ key[1]
    counter[3] = v1[0]


def _philox4x32(counter: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    for _ in range(rounds - 1):
        _philox_round(counter, key)
        key[0] = key[0] + _PHILOX_W[0]
        key[1] = key[1] + _PHILOX_W[1]
    _philox_round(counter, key)
    return counter


class PhiloxGenerator:
    """A seeded generator whose ``randn`` equals CUDA ``torch.randn`` (A1111's "NV" source)."""

    def __init__(self, seed: int):
        self.seed = int(seed) % 2**64  # negatives wrap into uint64, as numpy 1.x did for A1111
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        n = int(np.prod(shape)) if len(shape) else 1
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset
        counter[2] = np.arange(n, dtype=np.uint32)
        self.offset += 1
        key = _split_uint64(np.array([self.seed] * n, dtype=np.uint64))
        out = _philox4x32(counter, key)
        # Box–Muller on outputs 0 and 1; numpy promotes to float64 before the final float32 cast.
        u = out[0] * _TWO_POW32_INV + _TWO_POW32_INV / 2
        v = out[1] * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
        return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------------
class Generator(Protocol):
    def randn(self, shape: Sequence[int]) -> torch.Tensor: ...


class _TorchGenerator:
    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.generator = torch.Generator(device).manual_seed(int(seed))

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device)


class _NVGenerator:
    def __init__(self, seed: int):
        self.philox = PhiloxGenerator(seed)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(self.philox.randn(shape))


def create_generator(seed: int, source: str, device: torch.device | str = "cpu") -> Generator:
    """A fresh generator for ``seed`` from the ``randn_source`` option ("GPU", "CPU" or "NV")."""
    if source == "NV":
        return _NVGenerator(seed)
    device = torch.device(device)
    if source == "CPU" or device.type in ("cpu", "mps"):
        return _TorchGenerator(seed, torch.device("cpu"))
    return _TorchGenerator(seed, device)


def randn_seeded(seed: int, shape: Sequence[int], source: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The first draw of a fresh generator seeded with ``seed`` (A1111 ``randn``/``randn_local``)."""
    return create_generator(seed, source, device).randn(shape)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of ``(C, H, W)`` noise, normalised along dim 1 (spec §5.6).

    ``t=0`` → ``low`` (main seed noise), ``t=1`` → ``high`` (variation noise). When the two are
    nearly parallel A1111 falls back to ``t·low + (1−t)·high`` (weights reversed, kept on purpose).
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * t + high * (1 - t)  # spec §9.20: reversed weights, as A1111
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """Per-image noise for one batch: :meth:`next` gives ``(B, C, H, W)``; the first call is special.

    Args:
        shape: ``(C, H, W)`` latent shape of one image.
        seeds / subseeds: one per image of the batch.
        subseed_strength: variation strength; 0 disables variation noise.
        seed_resize_from_h/w: both > 0 → the noise an image of that size would get, centred (§5.4).
        eta_noise_seed_delta: ENSD; after the first draw every generator is re-seeded ``seed + ENSD``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        source: str = "GPU",
        device: torch.device | str = "cpu",
        eta_noise_seed_delta: int = 0,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = list(subseeds) if subseeds is not None else None
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h = seed_resize_from_h
        self.seed_resize_from_w = seed_resize_from_w
        self.source = source
        self.device = torch.device(device)
        self.eta_noise_seed_delta = eta_noise_seed_delta
        self.generators = [create_generator(s, source, self.device) for s in self.seeds]
        self.is_first = True

    def _randn(self, seed: int, shape: Sequence[int]) -> torch.Tensor:
        return randn_seeded(seed, shape, self.source, self.device)

    def first(self) -> torch.Tensor:
        resize = self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0
        c, h, w = self.shape
        noise_shape = (c, int(self.seed_resize_from_h) // 8, int(self.seed_resize_from_w) // 8) if resize else self.shape
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators, strict=True)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else int(self.subseeds[i])
                subnoise = self._randn(subseed, noise_shape)
            noise = self._randn(seed, noise_shape) if noise_shape != self.shape else generator.randn(self.shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                noise = _paste_centred(noise, generator.randn(self.shape))
            xs.append(noise)
        if self.eta_noise_seed_delta:
            self.generators = [create_generator(s + self.eta_noise_seed_delta, self.source, self.device)
                               for s in self.seeds]
        return torch.stack(xs).to(self.device)

    def next(self) -> torch.Tensor:
        """The next ``(B, C, H, W)`` draw: first the initial noise, then one fresh draw per image."""
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([g.randn(self.shape) for g in self.generators]).to(self.device)


def _paste_centred(small: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """Copy the centred overlap of ``small`` (C, h0, w0) into ``canvas`` (C, h, w)."""
    _, h0, w0 = small.shape
    _, h, w = canvas.shape
    dx, dy = (w - w0) // 2, (h - h0) // 2
    width = w0 if dx >= 0 else w0 + 2 * dx
    height = h0 if dy >= 0 else h0 + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    canvas[:, ty:ty + height, tx:tx + width] = small[:, sy:sy + height, sx:sx + width]
    return canvas
