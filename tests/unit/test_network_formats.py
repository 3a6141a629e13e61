"""Network formats: each delta against the format's formula written out independently."""

from __future__ import annotations

import pytest
import torch

from retouch.networks.formats import FormatError, Hada, Lokr, Lora, make_module

g = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(shape, generator=g)


def test_lora_linear_is_up_down_times_alpha_over_rank_times_multiplier():
    up, down = randn(16, 4), randn(4, 8)
    module = make_module("diffusion_model_x", {"lora_up.weight": up.half(), "lora_down.weight": down.half(),
                                               "alpha": torch.tensor(2.0, dtype=torch.float16)})
    assert isinstance(module, Lora) and module.dim == 4
    delta, bias = module.delta(torch.zeros(16, 8), 0.7)
    expected = (up.half().float() @ down.half().float()) * (2.0 / 4) * 0.7
    assert bias is None
    assert torch.equal(delta, expected)


def test_lora_without_alpha_has_scale_one_and_peft_names_are_accepted():
    up, down = randn(6, 2), randn(2, 5)
    module = make_module("x", {"lora_B.weight": up, "lora_A.weight": down})
    delta, _ = module.delta(torch.zeros(6, 5), 1.0)
    assert torch.allclose(delta, up @ down)


def test_lora_conv_3x3_and_1x1_linear_factors_on_a_conv():
    up, down = randn(8, 2, 1, 1), randn(2, 4, 3, 3)
    module = make_module("x", {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0)})
    delta, _ = module.delta(torch.zeros(8, 4, 3, 3), 1.0)
    expected = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * 0.5
    assert torch.allclose(delta, expected, atol=1e-6)
    # a 1x1 conv layer (SD1's proj_in) with linear-shaped factors
    up2, down2 = randn(8, 2), randn(2, 4)
    delta2, _ = make_module("x", {"lora_up.weight": up2, "lora_down.weight": down2}).delta(torch.zeros(8, 4, 1, 1), 1.0)
    assert delta2.shape == (8, 4, 1, 1) and torch.allclose(delta2[:, :, 0, 0], up2 @ down2)


def test_lora_cp_decomposed_conv():
    up, down, mid = randn(8, 2, 1, 1), randn(2, 4, 1, 1), randn(2, 2, 3, 3)
    module = make_module("x", {"lora_up.weight": up, "lora_down.weight": down, "lora_mid.weight": mid})
    delta, _ = module.delta(torch.zeros(8, 4, 3, 3), 1.0)
    expected = torch.einsum("nmkl,in,mj->ijkl", mid, up[:, :, 0, 0], down[:, :, 0, 0])
    assert torch.allclose(delta, expected, atol=1e-6)


def test_lora_dyn_dim_keeps_the_first_ranks():
    up, down = randn(6, 4), randn(4, 5)
    module = make_module("x", {"lora_up.weight": up, "lora_down.weight": down})
    delta, _ = module.delta(torch.zeros(6, 5), 1.0, dyn_dim=2)
    assert torch.allclose(delta, up[:, :2] @ down[:2])


def test_loha_is_the_hadamard_product_of_two_low_rank_matrices():
    w = {k: randn(*s) for k, s in (("hada_w1_a", (6, 3)), ("hada_w1_b", (3, 5)), ("hada_w2_a", (6, 3)),
                                   ("hada_w2_b", (3, 5)))}
    module = make_module("x", {**w, "alpha": torch.tensor(1.5)})
    assert isinstance(module, Hada) and module.dim == 3
    delta, _ = module.delta(torch.zeros(6, 5), 2.0)
    expected = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"]) * 0.5 * 2.0
    assert torch.allclose(delta, expected, atol=1e-6)


def test_loha_tucker_form_on_a_conv():
    t1, t2 = randn(2, 2, 3, 3), randn(2, 2, 3, 3)
    w1a, w1b, w2a, w2b = randn(2, 8), randn(2, 4), randn(2, 8), randn(2, 4)
    module = make_module("x", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                               "hada_t1": t1, "hada_t2": t2})
    delta, _ = module.delta(torch.zeros(8, 4, 3, 3), 1.0)

    def rebuild(t, a, b):  # Tucker: W[o, i, k, l] = Σ t[p, q, k, l] a[p, o] b[q, i]
        return torch.einsum("pqkl,po,qi->oikl", t, a, b)

    assert torch.allclose(delta, rebuild(t1, w1a, w1b) * rebuild(t2, w2a, w2b), atol=1e-5)


def test_lokr_is_a_kronecker_product_and_alpha_counts_only_with_a_rank():
    w1, w2 = randn(2, 2), randn(3, 4)
    full = make_module("x", {"lokr_w1": w1, "lokr_w2": w2, "alpha": torch.tensor(1.0)})
    assert isinstance(full, Lokr) and full.dim is None  # no factorised part: scale 1 (A1111)
    delta, _ = full.delta(torch.zeros(6, 8), 1.0)
    assert torch.allclose(delta, torch.kron(w1, w2))
    w2a, w2b = randn(3, 2), randn(2, 4)
    low = make_module("x", {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(1.0)})
    delta, _ = low.delta(torch.zeros(6, 8), 1.0)
    assert torch.allclose(delta, torch.kron(w1, w2a @ w2b) * 0.5)


def test_lokr_on_a_conv_uses_a_4d_second_factor():
    w1, w2 = randn(2, 2), randn(4, 2, 3, 3)
    delta, _ = make_module("x", {"lokr_w1": w1, "lokr_w2": w2}).delta(torch.zeros(8, 4, 3, 3), 1.0)
    assert torch.allclose(delta, torch.kron(w1[:, :, None, None], w2))


def test_ia3_scales_the_weight_rows_or_columns():
    weight = randn(4, 3)
    w = randn(4)
    delta, _ = make_module("x", {"weight": w, "on_input": torch.tensor(False)}).delta(weight, 1.0)
    assert torch.allclose(delta, weight * w[:, None])


def test_full_diff_and_norm_with_bias():
    diff = randn(4, 3)
    delta, bias = make_module("x", {"diff": diff}).delta(torch.zeros(4, 3), 0.5)
    assert torch.allclose(delta, diff * 0.5) and bias is None
    w_norm, b_norm = randn(4), randn(4)
    delta, bias = make_module("x", {"w_norm": w_norm, "b_norm": b_norm}).delta(torch.zeros(4), 2.0)
    assert torch.allclose(delta, w_norm * 2) and torch.allclose(bias, b_norm * 2)


def test_glora_linear():
    weight = randn(6, 5)
    a1, a2, b1, b2 = randn(3, 5), randn(5, 3), randn(3, 5), randn(6, 3)  # LyCORIS' GLoRA factor shapes
    module = make_module("x", {"a1.weight": a1, "b1.weight": b1, "a2.weight": a2, "b2.weight": b2,
                               "alpha": torch.tensor(1.0)})
    delta, _ = module.delta(weight, 1.0)
    assert delta.shape == weight.shape
    assert torch.allclose(delta, b2 @ b1 + weight @ a2 @ a1, atol=1e-5)


def test_dora_rescales_columns_to_the_stored_norm():
    up, down = randn(6, 2), randn(2, 5)
    weight = randn(6, 5)
    dora = randn(1, 5).abs() + 0.5
    delta, _ = make_module("x", {"lora_up.weight": up, "lora_down.weight": down, "dora_scale": dora}).delta(weight, 1.0)
    merged = weight + delta
    assert torch.allclose(merged.norm(dim=0), dora[0], atol=1e-5)


def test_text_encoder_layers_take_the_te_multiplier():
    assert make_module("transformer_text_model_encoder_layers_0_mlp_fc1",
                       {"lora_up.weight": randn(2, 1), "lora_down.weight": randn(1, 2)}).is_text
    assert make_module("model_transformer_resblocks_0_attn_q_proj",
                       {"lora_up.weight": randn(2, 1), "lora_down.weight": randn(1, 2)}).is_text
    assert not make_module("diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                           {"lora_up.weight": randn(2, 1), "lora_down.weight": randn(1, 2)}).is_text


@pytest.mark.parametrize("weights, message", [
    ({"oft_blocks": torch.zeros(2, 2, 2), "alpha": torch.tensor(1.0)}, "OFT networks are not supported"),
    ({"something": torch.zeros(2)}, "no network format"),
    ({"lora_up.weight": torch.zeros(2, 1), "lora_down.weight": torch.zeros(1, 2), "extra": torch.zeros(1)},
     "does not know: extra"),
])
def test_unknown_or_refused_tensors_are_named(weights, message):
    with pytest.raises(FormatError, match=message):
        make_module("x", weights)
