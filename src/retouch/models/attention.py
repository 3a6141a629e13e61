"""The UNet's attention, with A1111's "Upcast cross attention layer to float32" (``upcast_attn``).

A1111 computes scaled dot-product attention on float32 queries, keys and values when the option is on and
the UNet runs in a lower precision (``sd_hijack_optimizations``: ``q, k, v = q.float(), k.float(), v.float()``,
the result cast back). The processor below does the same, per call: a job passes ``upcast=True`` through the
UNet's ``cross_attention_kwargs``. Without it, it is diffusers' own processor, unchanged (the float32 path
stays bit for bit what it was). Speed: the float32 flash kernel alone is faster than the bf16 one on a CPU
without AMX (0.30 vs 0.36 s for one 64² self-attention of SD1), but the casts eat that: a whole bf16 UNet call
takes the same time either way (``docs/benchmarks.md``, "Limits").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class UpcastableAttnProcessor(AttnProcessor2_0):
    """diffusers' ``AttnProcessor2_0``; with ``upcast=True`` its attention product is computed in float32."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 upcast: bool = False, **kwargs: Any) -> torch.Tensor:
        if not upcast or hidden_states.dtype == torch.float32 or not _plain(attn, hidden_states, attention_mask, temb):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch = hidden_states.shape[0]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2).float()

        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(context)), heads(attn.to_v(context))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(hidden_states.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _plain(attn: Attention, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
           temb: torch.Tensor | None) -> bool:
    """What the UNets' transformer blocks use (token sequences; no mask, group or spatial norm, q/k norms); the
    rest (the VAE's spatial attention, which never gets ``upcast``) takes diffusers' path."""
    return hidden_states.ndim == 3 and attention_mask is None and temb is None and attn.group_norm is None \
        and attn.spatial_norm is None and attn.norm_q is None and attn.norm_k is None

def use_upcastable_attention(unet: torch.nn.Module) -> None:
    """Give every attention layer of ``unet`` the processor above."""
    set_processor = getattr(unet, "set_attn_processor", None)
    if set_processor is not None:
        set_processor(UpcastableAttnProcessor())
