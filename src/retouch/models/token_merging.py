"""Token merging (ToMe for SD): A1111's "Token merging ratio" options, per job, without rewriting a shared model.

A1111 applies ``tomesd`` (0.1.3, its pinned version) to the model before sampling, with ``use_rand=False``,
``merge_attn=True``, ``merge_crossattn=False``, ``merge_mlp=False`` and tomesd's other defaults
(``max_downsample=1``, ``sx=sy=2``): in every transformer block at the latent's full resolution, the tokens fed
to the self-attention are merged (each of the ``ratio`` share most like a token of a fixed 2×2 grid is averaged
into it) and the attention's output is spread back to every token. The matching is on the block's input, as
tomesd computes it (:func:`tomesd.patch.compute_merge`, used here as is, so the arithmetic is A1111's).
Self-attention at that resolution is the costliest part of an SD1/SD2 UNet call at 512² and above; SDXL has no
transformer at the full resolution, so there the option changes nothing (as in A1111).

A1111 patches the shared model's block classes and keeps the ratio on the model. Here every transformer block is
made *switchable* once, when the model is built (as :mod:`retouch.models.padding` does for convolutions): the
ratio comes from :func:`token_merging`, set for the current job's thread and block only. Outside it (ratio 0)
the blocks run diffusers' own code, untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tomesd.patch import compute_merge

Merge = Callable[[torch.Tensor], torch.Tensor]

_RATIO: contextvars.ContextVar[float] = contextvars.ContextVar("retouch_token_merging", default=0.0)
_SIZE: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("retouch_tome_size", default=None)
_MERGE: contextvars.ContextVar[tuple[Merge, Merge] | None] = contextvars.ContextVar("retouch_tome_merge",
                                                                                      default=None)
# What A1111 passes to tomesd.apply_patch, and tomesd's defaults for the rest
A1111_ARGS: dict[str, Any] = {"max_downsample": 1, "sx": 2, "sy": 2, "use_rand": False, "merge_attn": True,
                              "merge_crossattn": False, "merge_mlp": False}


@contextlib.contextmanager
def token_merging(ratio: float) -> Iterator[None]:
    """Within this block, switchable UNets merge this share of their full-resolution self-attention tokens
    (0: none, diffusers' own code)."""
    token = _RATIO.set(float(ratio))
    try:
        yield
    finally:
        _RATIO.reset(token)


def merging_ratio() -> float:
    """The current job's token merging ratio (within :func:`token_merging`; 0 outside)."""
    return _RATIO.get()


def _unet_forward(self: torch.nn.Module, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    if _RATIO.get() <= 0 or torch.compiler.is_compiling():
        return type(self).forward(self, sample, *args, **kwargs)
    token = _SIZE.set((sample.shape[2], sample.shape[3]))  # tomesd's hook: the latent's height and width
    try:
        return type(self).forward(self, sample, *args, **kwargs)
    finally:
        _SIZE.reset(token)


def _block_forward(self: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    ratio, size = _RATIO.get(), _SIZE.get()
    if ratio <= 0 or size is None or torch.compiler.is_compiling():
        return type(self).forward(self, hidden_states, *args, **kwargs)
    info = {"size": size, "args": {**A1111_ARGS, "ratio": ratio, "generator": None}}
    merge, _, _, unmerge, _, _ = compute_merge(hidden_states, info)  # attention only (A1111's merge_attn)
    token = _MERGE.set((merge, unmerge))
    try:
        return type(self).forward(self, hidden_states, *args, **kwargs)
    finally:
        _MERGE.reset(token)


def _self_attention_forward(self: torch.nn.Module, hidden_states: torch.Tensor, *args: Any,
                            **kwargs: Any) -> torch.Tensor:
    merges = _MERGE.get()
    if merges is None:
        return type(self).forward(self, hidden_states, *args, **kwargs)
    merge, unmerge = merges
    return unmerge(type(self).forward(self, merge(hidden_states), *args, **kwargs))


def make_token_merging_switchable(unet: torch.nn.Module) -> None:
    """Let ``unet`` (a diffusers UNet) and its transformer blocks follow :func:`token_merging` (idempotent)."""
    unet.forward = types.MethodType(_unet_forward, unet)
    for module in unet.modules():
        attention = getattr(module, "attn1", None)
        if type(module).__name__ == "BasicTransformerBlock" and isinstance(attention, torch.nn.Module):
            module.forward = types.MethodType(_block_forward, module)
            attention.forward = types.MethodType(_self_attention_forward, attention)
