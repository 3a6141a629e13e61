"""Random network files in kohya's layout for a given model: for tests, benchmarks, and checking a setup
(``<lora:…>`` parsing, folders, hashes) without a trained network.

:func:`write_random_network` picks the model's weight layers that ``select`` accepts and writes factors for
them under the key names kohya's trainer uses (``lora_unet_…``, ``lora_te_…``), so the file goes through
exactly the key mapping a downloaded one does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from retouch.networks.layers import Layer

_OPEN_CLIP_TO_KOHYA = {"mlp_c_fc": "mlp_fc1", "mlp_c_proj": "mlp_fc2", "ln_1": "layer_norm1", "ln_2": "layer_norm2"}


def kohya_names(layer: Layer) -> list[tuple[str, torch.nn.Module]]:
    """The kohya key prefix(es) of a layer and the module each patches (SDXL's encoders: ``lora_te1_``/``lora_te2_``)."""
    name = layer.name
    if name.startswith("diffusion_model_"):
        return [("lora_unet_" + name[len("diffusion_model_"):], layer.module)]
    te = "lora_te_"
    if name[:2] in ("0_", "1_"):  # SDXL: the conditioner's embedder index
        te, name = f"lora_te{int(name[0]) + 1}_", name[2:]
    if name.startswith("transformer_text_model_"):
        return [(te + name[len("transformer_"):], layer.module)]
    if name.startswith("model_transformer_resblocks_"):
        index, _, rest = name[len("model_transformer_resblocks_"):].partition("_")
        base = f"{te}text_model_encoder_layers_{index}_"
        if layer.fused:
            return [(base + f"self_attn_{p}_proj", m) for p, m in zip(("q", "k", "v", "out"), layer.modules,
                                                                      strict=True)]
        return [(base + _OPEN_CLIP_TO_KOHYA.get(rest, rest), layer.module)]
    return []


def attention_and_conv(layer: Layer) -> bool:
    """Attention projections, feed-forwards and convolutions of the UNet; the text encoder's attention and MLP."""
    if layer.inert:
        return False
    module = layer.module
    if isinstance(module, torch.nn.Conv2d):
        return True
    return isinstance(module, torch.nn.Linear) and not layer.name.endswith(("time_embed_0", "time_embed_2"))


def write_random_network(path: str | os.PathLike, layers: dict[str, Layer], *, kind: str = "lora", rank: int = 4,
                         alpha: float | None = None, dtype: torch.dtype = torch.float16, seed: int = 0,
                         scale: float = 0.05, select: Callable[[Layer], bool] = attention_and_conv,
                         metadata: dict[str, str] | None = None) -> Path:
    """Write a random ``kind`` ("lora", "loha", "lokr") network for ``layers`` (a model's
    ``extra_networks.layers``) to ``path`` (safetensors); factors ~ N(0, scale), ``alpha`` default ``rank / 2``."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in layers.values():
        if not select(layer):
            continue
        for key, module in kohya_names(layer):
            weight = getattr(module, "weight", None)
            if weight is None or weight.ndim not in (2, 4):
                continue
            for part, tensor in _factors(kind, tuple(weight.shape), rank, generator, scale).items():
                tensors[f"{key}.{part}"] = tensor.to(dtype)
            tensors[f"{key}.alpha"] = torch.tensor(alpha if alpha is not None else rank / 2, dtype=dtype)
    if not tensors:
        raise ValueError("no layer was selected")
    path = Path(path)
    meta = {"ss_network_module": "networks.lora" if kind == "lora" else "lycoris.kohya", "ss_network_dim": str(rank),
            "ss_output_name": path.stem, **(metadata or {})}
    save_file(tensors, str(path), metadata=meta)
    return path


def _factors(kind: str, shape: tuple[int, ...], rank: int, generator: torch.Generator,
             scale: float) -> dict[str, torch.Tensor]:
    out_features, in_features = shape[0], shape[1]
    kernel = tuple(shape[2:])

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=generator) * scale

    if kind == "lora":
        return {"lora_down.weight": randn(rank, in_features, *kernel),
                "lora_up.weight": randn(out_features, rank, *([1, 1] if kernel else []))}
    fan_in = in_features * (kernel[0] * kernel[1] if kernel else 1)
    if kind == "loha":
        return {"hada_w1_a": randn(out_features, rank), "hada_w1_b": randn(rank, fan_in),
                "hada_w2_a": randn(out_features, rank), "hada_w2_b": randn(rank, fan_in)}
    if kind == "lokr":
        a = next(f for f in (4, 2, 1) if out_features % f == 0 and in_features % f == 0)
        w2 = randn(out_features // a, in_features // a, *kernel)
        return {"lokr_w1": randn(a, a), "lokr_w2": w2}
    raise ValueError(f"kind must be lora, loha or lokr, got {kind!r}")
