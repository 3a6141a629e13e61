"""The CLIP text encoder and its tokenizer, as A1111 drives them (prompt spec §7–§8.3).

SD1 uses OpenAI CLIP ViT-L/14 (Hugging Face ``CLIPTextModel``); SD2 uses OpenCLIP ViT-H/14, which
diffusers' converter turns into a 23-layer ``CLIPTextModel`` (the last OpenCLIP block is never used:
SD2 reads the penultimate layer through ``ln_final``), so both run through the same class.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import ftfy
import torch
from transformers import CLIPTextModel, CLIPTokenizer

BOS_ID = 49406
EOS_ID = 49407
COMMA_ID = 267
_WHITESPACE = re.compile(r"\s+")


def load_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer from ``folder`` if it has the files, else the one retouch ships."""
    from retouch.models.ldm_config import bundled_path

    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        folder = bundled_path("clip_tokenizer")
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


@dataclass
class TextEncoder:
    """``kind`` is ``"clip"`` (SD1: pad with EOS, honours Clip skip) or ``"open_clip"`` (SD2)."""

    transformer: CLIPTextModel
    tokenizer: CLIPTokenizer
    kind: str

    def __post_init__(self) -> None:
        # The plain (eager) attention is what A1111 runs; with it the conditioning is bit-identical,
        # which matters because "Original" emphasis divides two nearly-zero means.
        self.transformer.set_attn_implementation("eager")

    @property
    def width(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def pad_id(self) -> int:
        return EOS_ID if self.kind == "clip" else 0

    def clean(self, text: str) -> str:
        """The text normalisation of A1111's tokenizer for this encoder, before BPE."""
        text = ftfy.fix_text(text)
        if self.kind == "open_clip":
            text = html.unescape(html.unescape(text)).strip()
        return _WHITESPACE.sub(" ", text).strip().lower()

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS and without truncation."""
        if not texts:
            return []
        cleaned = [self.clean(t) for t in texts]
        return self.tokenizer(cleaned, add_special_tokens=False, truncation=False)["input_ids"]

    def encode(self, tokens: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        """Hidden states ``(B, 77, C)`` for ``tokens`` ``(B, 77)`` of BOS + 75 + EOS ids.

        SD1: ``clip_skip`` n > 1 takes ``final_layer_norm(hidden_states[-n])``. SD2 pads with 0 after
        the first EOS and ignores ``clip_skip`` (as A1111 v1.10.1).
        """
        device = self.transformer.device
        tokens = tokens.to(device)
        if self.kind == "open_clip":
            tokens = _pad_after_first_eos(tokens, self.pad_id)
            clip_skip = 1
        if clip_skip <= 1:
            return self.transformer(input_ids=tokens).last_hidden_state.float()
        layers = int(self.transformer.config.num_hidden_layers)
        if clip_skip > layers:
            raise ValueError(f"CLIP_stop_at_last_layers must be at most {layers} for this text encoder, "
                             f"got {clip_skip}")
        out = self.transformer(input_ids=tokens, output_hidden_states=True)
        return self.transformer.final_layer_norm(out.hidden_states[-clip_skip]).float()


def _pad_after_first_eos(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    is_eos = tokens == EOS_ID
    seen = torch.cumsum(is_eos.int(), dim=1)
    after_first = (seen >= 1) & ~(is_eos & (seen == 1))
    return torch.where(after_first, torch.full_like(tokens, pad_id), tokens)
