"""The weight deltas of each network format, as A1111 v1.10.1's Lora extension computes them.

A module holds one layer's tensors from a network file (``lora_up.weight``, ``hada_w1_a``, …) and
computes ``delta(weight) -> (Δweight, Δbias)``: what to add to that layer's weight (and bias) at
multiplier ``m``. Formats, tried in A1111's order: LoRA/LoCon (incl. CP-decomposed convs and PEFT's
``lora_A``/``lora_B``), LoHa, IA3, LoKr, full diff, norm, GLoRA; any with DoRA's ``dora_scale``.
OFT is refused by name.

Arithmetic is A1111's, in float32 (A1111 casts LoRA factors to the model's dtype and keeps LyCORIS
factors in the file's dtype; on a float32 model with float32 LyCORIS files, as its CPU mode runs, the
deltas are bit-identical). ``scale`` is ``alpha / dim`` where the format has a rank, else 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

Tensor = torch.Tensor
COMMON_PARTS = frozenset({"alpha", "scale", "bias", "dora_scale"})


class FormatError(ValueError):
    """A layer's tensors that no format accepts, or accepts but cannot apply to that layer."""


@dataclass
class Module:
    """One layer's part of a network: its tensors and what they make of the layer's weight."""

    layer_key: str  # the A1111 layer name (decides the text-encoder vs UNet multiplier)
    w: dict[str, Tensor]
    dim: int | None = None
    PARTS: ClassVar[frozenset[str]] = frozenset()

    @property
    def is_text(self) -> bool:
        return "transformer" in self.layer_key[:20]  # A1111's test, NetworkModule.multiplier

    def scale(self) -> float:
        if "scale" in self.w:
            return float(self.w["scale"].item())
        if self.dim is not None and "alpha" in self.w:
            return float(self.w["alpha"].item()) / self.dim
        return 1.0

    def t(self, part: str) -> Tensor:
        return self.w[part].to(torch.float32)

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        """The unscaled delta, the shape A1111 gives it, and an extra bias (norm)."""
        raise NotImplementedError

    def delta(self, weight: Tensor, multiplier: float, dyn_dim: int | None = None) -> tuple[Tensor, Tensor | None]:
        """``(Δweight, Δbias)`` for ``weight`` (float32) at ``multiplier`` (A1111 ``finalize_updown``)."""
        updown, output_shape, ex_bias = self.updown(weight, dyn_dim)
        if "bias" in self.w:
            bias = self.t("bias")
            updown = (updown.reshape(bias.shape) + bias).reshape(output_shape)
        if len(output_shape) == 4:
            updown = updown.reshape(output_shape)
        if weight.numel() == updown.numel():
            updown = updown.reshape(weight.shape)
        if ex_bias is not None:
            ex_bias = ex_bias * multiplier
        updown = updown * self.scale()
        if "dora_scale" in self.w:
            updown = _weight_decompose(updown, weight, self.t("dora_scale"))
        return updown * multiplier, ex_bias


def _weight_decompose(updown: Tensor, weight: Tensor, dora_scale: Tensor) -> Tensor:
    """DoRA: rescale each input column of ``weight + updown`` to ``dora_scale``'s norm."""
    merged = updown + weight
    dims = weight.ndim - 1
    norm = (merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
            .reshape(merged.shape[1], *[1] * dims).transpose(0, 1))
    return merged * (dora_scale / norm) - weight


def _conventional(up: Tensor, down: Tensor, shape: list[int], dyn_dim: int | None = None) -> Tensor:
    up = up.reshape(up.size(0), -1)
    down = down.reshape(down.size(0), -1)
    if dyn_dim is not None:
        up, down = up[:, :dyn_dim], down[:dyn_dim, :]
    return (up @ down).reshape(shape)


def _cp(t: Tensor, wa: Tensor, wb: Tensor) -> Tensor:
    """LyCORIS' Tucker/CP rebuild (``make_weight_cp``)."""
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)


class Lora(Module):
    PARTS = frozenset({"lora_up.weight", "lora_down.weight", "lora_mid.weight"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        up, down = self.t("lora_up.weight"), self.t("lora_down.weight")
        if weight.ndim == 2:  # A1111 reshapes factors to the layer's kind (a 1×1 conv LoRA on a linear layer)
            up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
        elif down.ndim == 2:
            down = down.reshape(down.shape[0], -1, 1, 1)
        output_shape = [up.size(0), down.size(1)]
        if "lora_mid.weight" in self.w:
            mid = self.t("lora_mid.weight")
            up2, down2 = up.reshape(up.size(0), -1), down.reshape(down.size(0), -1)
            return torch.einsum("n m k l, i n, m j -> i j k l", mid, up2, down2), output_shape + list(mid.shape[2:]), None
        if down.ndim == 4:
            output_shape += list(down.shape[2:])
        return _conventional(up, down, output_shape, dyn_dim), output_shape, None


class Hada(Module):
    PARTS = frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        w1a, w1b, w2a, w2b = (self.t(p) for p in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
        output_shape = [w1a.size(0), w1b.size(1)]
        if "hada_t1" in self.w:
            t1 = self.t("hada_t1")
            output_shape = [w1a.size(1), w1b.size(1)] + list(t1.shape[2:])
            updown1 = _cp(t1, w1a, w1b)
        else:
            if w1b.ndim == 4:
                output_shape += list(w1b.shape[2:])
            updown1 = _conventional(w1a, w1b, output_shape)
        updown2 = _cp(self.t("hada_t2"), w2a, w2b) if "hada_t2" in self.w else _conventional(w2a, w2b, output_shape)
        return updown1 * updown2, output_shape, None


class Ia3(Module):
    PARTS = frozenset({"weight", "on_input"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        w = self.t("weight")
        output_shape = [w.size(0), weight.size(1)]
        if "on_input" in self.w and self.w["on_input"].item():
            output_shape.reverse()
        else:
            w = w.reshape(-1, 1)
        return weight * w, output_shape, None


class Lokr(Module):
    PARTS = frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        w1 = self.t("lokr_w1") if "lokr_w1" in self.w else self.t("lokr_w1_a") @ self.t("lokr_w1_b")
        if "lokr_w2" in self.w:
            w2 = self.t("lokr_w2")
        elif "lokr_t2" in self.w:
            w2 = _cp(self.t("lokr_t2"), self.t("lokr_w2_a"), self.t("lokr_w2_b"))
        else:
            w2 = self.t("lokr_w2_a") @ self.t("lokr_w2_b")
        output_shape = [w1.size(0) * w2.size(0), w1.size(1) * w2.size(1)]
        if weight.ndim == 4:
            output_shape = list(weight.shape)
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2.contiguous()).reshape(output_shape), output_shape, None


class Full(Module):
    PARTS = frozenset({"diff", "diff_b"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        ex_bias = self.t("diff_b") if "diff_b" in self.w else None
        return self.t("diff"), list(self.w["diff"].shape), ex_bias


class Norm(Module):
    PARTS = frozenset({"w_norm", "b_norm"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        ex_bias = self.t("b_norm") if "b_norm" in self.w else None
        return self.t("w_norm"), list(self.w["w_norm"].shape), ex_bias


class GLora(Module):
    PARTS = frozenset({"a1.weight", "a2.weight", "b1.weight", "b2.weight"})

    def updown(self, weight: Tensor, dyn_dim: int | None) -> tuple[Tensor, list[int], Tensor | None]:
        if weight.ndim != 2:
            raise FormatError("GLoRA applies to linear layers only")
        w1a, w1b, w2a, w2b = (self.t(p) for p in ("a1.weight", "b1.weight", "a2.weight", "b2.weight"))
        return (w2b @ w1b) + ((weight @ w2a) @ w1a), [w1a.size(0), w1b.size(1)], None


def _has(*parts: str) -> Callable[[Mapping[str, Tensor]], bool]:
    return lambda w: all(p in w for p in parts)


# (name, test, class, rank) in A1111's module_types order; ``rank`` gives the dim that alpha divides.
FORMATS: list[tuple[str, Callable[[Mapping[str, Tensor]], bool], type[Module], Callable | None]] = [
    ("LoRA", _has("lora_up.weight", "lora_down.weight"), Lora, lambda w: w["lora_down.weight"].shape[0]),
    ("LoHa", _has("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), Hada, lambda w: w["hada_w1_b"].shape[0]),
    ("IA3", _has("weight"), Ia3, None),
    ("LoKr", lambda w: ("lokr_w1" in w or _has("lokr_w1_a", "lokr_w1_b")(w))
     and ("lokr_w2" in w or _has("lokr_w2_a", "lokr_w2_b")(w)), Lokr,
     lambda w: (w["lokr_w2_b"].shape[0] if "lokr_w2_b" in w else w["lokr_w1_b"].shape[0] if "lokr_w1_b" in w
                else None)),
    ("full", _has("diff"), Full, None),
    ("norm", _has("w_norm", "b_norm"), Norm, None),
    ("GLoRA", _has("a1.weight", "a2.weight", "alpha", "b1.weight", "b2.weight"), GLora, None),
]
REFUSED = {"oft_blocks": "OFT", "oft_diag": "OFT", "boft_blocks": "BOFT"}


def make_module(layer_key: str, w: dict[str, Tensor]) -> Module:
    """The module for one layer's tensors ``w`` (keyed by their weight part), or :class:`FormatError`."""
    w = dict(w)
    if "lora_A.weight" in w and "lora_B.weight" in w:  # PEFT naming of the same factors
        w["lora_down.weight"], w["lora_up.weight"] = w.pop("lora_A.weight"), w.pop("lora_B.weight")
    for part, name in REFUSED.items():
        if part in w:
            raise FormatError(f"{name} networks are not supported by retouch (A1111's network_oft); "
                              "use LoRA, LoCon, LoHa, LoKr, IA3, GLoRA, full or norm networks")
    for name, accepts, cls, rank in FORMATS:
        if accepts(w):
            unknown = sorted(set(w) - cls.PARTS - COMMON_PARTS)
            if unknown:
                raise FormatError(f"{name} layer with tensors retouch does not know: {', '.join(unknown)}")
            return cls(layer_key, w, rank(w) if rank is not None else None)
    raise FormatError(f"no network format (LoRA, LoHa, IA3, LoKr, full, norm, GLoRA) accepts the tensors "
                      f"{', '.join(sorted(w))}")
