"""SDXL's conditioning, as A1111 v1.10.1 computes it (``sd_models_xl.get_learned_conditioning`` through sgm's
``GeneralConditioner``).

* cross-attention: CLIP-L's and OpenCLIP's hidden states (each with its own chunking and emphasis
  normalisation), concatenated along the channels;
* vector: OpenCLIP's pooled, projected output of the first chunk, then the sinusoidal embeddings (256 per
  number) of the original size ``(height, width)``, the crop ``(sdxl_crop_top, sdxl_crop_left)`` and the
  target size ``(height, width)`` — A1111 passes the job's size for both sizes;
* a negative prompt whose texts are all empty gives zeros for both text parts (A1111's
  ``force_zero_embeddings``); the size parts stay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from retouch.conditioning import Conditioning, PromptContext
from retouch.models.text_encoder import TextEncoder, encode_texts

SIZE_EMBEDDING = 256  # per number: sgm's ConcatTimestepEmbedderND(outdim=256)


def timestep_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """sgm's sinusoidal embedding ``[cos, sin]`` of each value ``(N,)`` → ``(N, dim)``, in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = values[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def size_embeddings(height: int, width: int, crop_top: int, crop_left: int, batch: int) -> torch.Tensor:
    """The original-size, crop and target-size embeddings ``(batch, 3·2·256)``."""
    parts = [torch.tensor([height, width], dtype=torch.float32), torch.tensor([crop_top, crop_left], dtype=torch.float32),
             torch.tensor([height, width], dtype=torch.float32)]
    embedded = torch.cat([timestep_embedding(p, SIZE_EMBEDDING).reshape(-1) for p in parts])
    return embedded[None].repeat(batch, 1)


@dataclass
class SDXLConditioner:
    """SDXL prompt encoding (a :class:`~retouch.conditioning.PromptEncoder`): ``clip_l`` + ``clip_g``."""

    clip_l: TextEncoder
    clip_g: TextEncoder

    def encode_prompts(self, texts: Sequence[str], context: PromptContext) -> Conditioning:
        options = context.options
        used: dict[str, Any] = {}
        pooled: list[torch.Tensor] = []
        clip_l_skip = options.CLIP_stop_at_last_layers if options.sdxl_clip_l_skip else 0
        with torch.inference_mode():
            z_l = encode_texts(self.clip_l, texts, options, context.find_embedding, used, clip_skip=clip_l_skip)
            z_g = encode_texts(self.clip_g, texts, options, context.find_embedding, used, clip_skip=0,
                               pooled=pooled)
            crossattn = torch.cat([z_l, z_g], dim=2)
            vector_text = pooled[0]
            if context.is_negative and all(t == "" for t in texts):
                crossattn, vector_text = torch.zeros_like(crossattn), torch.zeros_like(vector_text)
            sizes = size_embeddings(context.height, context.width, options.sdxl_crop_top, options.sdxl_crop_left,
                                    len(texts)).to(vector_text)
            vector = torch.cat([vector_text, sizes], dim=1)
        if used and context.used_embeddings is not None:
            context.used_embeddings(list(used.values()))
        return Conditioning(crossattn, vector)
