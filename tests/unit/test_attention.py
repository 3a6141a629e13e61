"""A1111's ``upcast_attn``: the attention product in float32 for a lower-precision UNet, nothing else changed."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from retouch.models.attention import UpcastableAttnProcessor


def attention(dtype: torch.dtype, cross: bool) -> Attention:
    torch.manual_seed(0)
    return Attention(64, cross_attention_dim=32 if cross else None, heads=4, dim_head=16).to(dtype).eval()


def reference_upcast(attn: Attention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """A1111's ``scaled_dot_product_attention_forward`` with ``upcast_attn``: q, k, v as float, result cast back."""
    def split(t):
        return t.view(t.shape[0], -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2).float()

    q, k, v = split(attn.to_q(x)), split(attn.to_k(context)), split(attn.to_v(context))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2).to(x.dtype)
    return attn.to_out[0](out)


@pytest.mark.parametrize("cross", [False, True])
def test_upcast_computes_the_product_in_float32(cross):
    attn = attention(torch.bfloat16, cross)
    x = torch.randn(2, 48, 64, dtype=torch.bfloat16)
    context = torch.randn(2, 7, 32, dtype=torch.bfloat16) if cross else None
    processor = UpcastableAttnProcessor()
    with torch.no_grad():
        upcast = processor(attn, x, context, upcast=True)
        plain = processor(attn, x, context)
        expected = reference_upcast(attn, x, x if context is None else context)
        diffusers = AttnProcessor2_0()(attn, x, context)
    assert torch.equal(upcast, expected)
    assert torch.equal(plain, diffusers)  # off: diffusers' processor, bit for bit
    assert not torch.equal(upcast, plain)  # and it does change a bf16 result


def test_upcast_leaves_a_float32_layer_alone():
    attn = attention(torch.float32, False)
    x = torch.randn(2, 48, 64)
    processor = UpcastableAttnProcessor()
    with torch.no_grad():
        assert torch.equal(processor(attn, x, upcast=True), AttnProcessor2_0()(attn, x))

