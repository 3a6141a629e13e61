"""Per-job behaviour of every convolution, without rewriting a shared model per job: seamless tiling
(A1111 ``apply_circular``) and stopping (an interrupt lands within one convolution, in every network).

A1111 switches every ``Conv2d`` of the UNet and VAE to circular padding for a tiling job and back
afterwards: state on the shared model, wrong for the next job if anything fails, wrong for another job
running meanwhile. Here each convolution is made *switchable* once, when the model is built: it reads
the padding mode from a :class:`contextvars.ContextVar` at every call. :func:`circular_padding` sets it
for the current job's thread and block only, and restores it on any exit. :func:`stop_when` likewise
sets what the job's convolutions ask before they run: a 2048² VAE pass is one network call of many
seconds, and a job's interrupt must not wait for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F  # noqa: N812

from retouch.control import Interrupted

_STOP: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("retouch_stop", default=None)
_CIRCULAR: contextvars.ContextVar[bool] = contextvars.ContextVar("retouch_circular_padding", default=False)


@contextlib.contextmanager
def circular_padding(enabled: bool) -> Iterator[None]:
    """Within this block, switchable convolutions pad circularly when ``enabled``."""
    token = _CIRCULAR.set(enabled)
    try:
        yield
    finally:
        _CIRCULAR.reset(token)


def circular_enabled() -> bool:
    """Whether the current job's convolutions pad circularly (within :func:`circular_padding`)."""
    return _CIRCULAR.get()


@contextlib.contextmanager
def stop_when(should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """Within this block, a switchable convolution raises :class:`Interrupted` when ``should_stop()`` is true
    (None: never); an inner block's condition replaces an outer one's."""
    token = _STOP.set(should_stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def _switchable_conv_forward(self: torch.nn.Conv2d, input: torch.Tensor, weight: torch.Tensor,  # noqa: A002
                             bias: torch.Tensor | None) -> torch.Tensor:
    if torch.compiler.is_compiling():  # a compiled UNet: no circular jobs (run eager), stops between calls
        return torch.nn.Conv2d._conv_forward(self, input, weight, bias)
    should_stop = _STOP.get()
    if should_stop is not None and should_stop():
        raise Interrupted
    if _CIRCULAR.get():  # what Conv2d does with padding_mode="circular"
        padded = F.pad(input, self._reversed_padding_repeated_twice, mode="circular")
        return F.conv2d(padded, weight, bias, self.stride, (0, 0), self.dilation, self.groups)
    return torch.nn.Conv2d._conv_forward(self, input, weight, bias)


def make_padding_switchable(*modules: torch.nn.Module) -> None:
    """Let every ``Conv2d`` in ``modules`` follow :func:`circular_padding` (idempotent)."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and layer.padding_mode == "zeros":
                layer._conv_forward = types.MethodType(_switchable_conv_forward, layer)  # type: ignore[method-assign]
