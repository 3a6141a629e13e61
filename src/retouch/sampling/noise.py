"""Noise for the SDE samplers: per-image Brownian trees, seeded by each image's seed (spec §5.3).

With the ``NV`` random source, torchsde's own normal draws must come from the Philox generator too.
torchsde draws them through a module-level function, ``torchsde._brownian.brownian_interval._randn``;
retouch replaces it once, process-wide, with a function that asks a :class:`contextvars.ContextVar`
which source the *current* job uses. A job sets the variable only for its own duration and thread, so
jobs with different sources can run at the same time, and code outside a job sees torchsde unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
from collections.abc import Iterator, Sequence

import torch

from retouch.sampling.rng import randn_seeded

# σ recomputed through exp(log σ) lands a rounding below the tree's σ_min; torchsde warns about it on
# every call. Filtered once, process-wide (``warnings.catch_warnings`` per call is not thread-safe).
warnings.filterwarnings("ignore", message="Should have t", module="torchsde")

_NV_SOURCE: contextvars.ContextVar[bool] = contextvars.ContextVar("retouch_torchsde_nv", default=False)
_install_lock = threading.Lock()
_installed = False


def _install_randn_switch() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from torchsde._brownian import brownian_interval

        original = brownian_interval._randn

        def randn(size, dtype, device, seed):
            if _NV_SOURCE.get():
                return randn_seeded(seed, size, "NV").to(device=device, dtype=dtype)
            return original(size, dtype, device, seed)

        brownian_interval._randn = randn
        _installed = True


@contextlib.contextmanager
def torchsde_source(source: str) -> Iterator[None]:
    """Within this block (this thread only), torchsde's normal draws follow ``source`` ("NV" → Philox)."""
    if source != "NV":
        yield
        return
    _install_randn_switch()
    token = _NV_SOURCE.set(True)
    try:
        yield
    finally:
        _NV_SOURCE.reset(token)


class BrownianNoiseSampler:
    """``noise(σ, σ_next)`` from one Brownian tree per image, each seeded with that image's seed."""

    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int], source: str):
        import torchsde

        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        self.source = source
        w0 = torch.zeros_like(x[0])
        with torchsde_source(source):
            self.trees = [torchsde.BrownianTree(sigma_min, w0, sigma_max, entropy=int(s)) for s in seeds]

    def __call__(self, sigma, sigma_next):
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1 if t0 < t1 else -1
        lo, hi = (t0, t1) if t0 < t1 else (t1, t0)
        with torchsde_source(self.source):
            w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / (t1 - t0).abs().sqrt()
