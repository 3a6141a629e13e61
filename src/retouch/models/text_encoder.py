"""The CLIP text encoder and its tokenizer, as A1111 drives them (prompt spec §7–§8.5).

SD1 uses OpenAI CLIP ViT-L/14 (Hugging Face ``CLIPTextModel``); SD2 uses OpenCLIP ViT-H/14, which
diffusers' converter turns into a 23-layer ``CLIPTextModel`` (the last OpenCLIP block is never used:
SD2 reads the penultimate layer through ``ln_final``), so both run through the same class.

* :func:`tokenize_line` — emphasis fragments → 75-token chunks (BREAK, comma back-tracking);
* :func:`encode_texts` — a batch of texts → ``(B, 77·K, C)`` with emphasis normalisation;
* :class:`SDTextConditioner` — the SD1/SD2 :class:`~retouch.conditioning.PromptEncoder`.
"""

from __future__ import annotations

import functools
import html
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ftfy
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from retouch import prompt_parser
from retouch.conditioning import Conditioning, PromptContext
from retouch.models.paths import bundled_path
from retouch.options import Options

BOS_ID = 49406
EOS_ID = 49407
COMMA_ID = 267
CHUNK_LENGTH = 75
_WHITESPACE = re.compile(r"\s+")


def load_tokenizer(folder: Path | None) -> CLIPTokenizer:
    """A CLIP BPE tokenizer from ``folder`` if it has the files, else the one retouch ships (OpenCLIP's
    tokenizer is the same BPE: same ids). One instance per folder, shared by every model that uses it."""
    if folder is None or not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        folder = bundled_path("clip_tokenizer")
    return _tokenizer(str(Path(folder).resolve()))


@functools.lru_cache(maxsize=8)
def _tokenizer(folder: str) -> CLIPTokenizer:
    # building the BPE tables holds the GIL ~50 ms (49,408 tokens, 48,894 merges): every other thread, the
    # server's event loop included, stood still that long on each checkpoint switch
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


# Where a chunk row's embedding vectors go: (offset of the first vector after BOS, vectors (n, width)).
Fix = tuple[int, torch.Tensor]


@dataclass
class TextEncoder:
    """``kind`` is ``"clip"`` (pads with EOS) or ``"open_clip"`` (pads with 0 after the first EOS).

    ``output``: ``"final"`` — the last hidden state through the final layer norm (SD1, where Clip skip
    applies; SD2); ``"hidden"`` — ``hidden_states[layer_idx]``, no norm (SDXL). ``projection``: the
    ``(out, width)`` text projection that makes the pooled output (SDXL's OpenCLIP). ``embedding_key``
    names this encoder's vectors in a multi-encoder embedding (SDXL: ``clip_l``/``clip_g``).
    """

    transformer: CLIPTextModel
    tokenizer: CLIPTokenizer
    kind: str
    embedding_key: str | None = None
    output: str = "final"
    layer_idx: int = -1
    projection: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # The plain (eager) attention is what A1111 runs; with it the conditioning is bit-identical,
        # which matters because "Original" emphasis divides two nearly-zero means.
        self.transformer.set_attn_implementation("eager")
        self._fixes = threading.local()
        self.transformer.embeddings.token_embedding.register_forward_hook(self._apply_fixes)

    def _apply_fixes(self, module: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        """Put textual-inversion vectors in place of their placeholder tokens (A1111 ``EmbeddingsWithFixes``)."""
        fixes: list[list[Fix]] | None = getattr(self._fixes, "rows", None)
        if not fixes or not any(fixes):
            return out
        out = out.clone()
        for row, row_fixes in enumerate(fixes):
            for offset, vectors in row_fixes:
                n = min(out.shape[1] - offset - 1, vectors.shape[0])
                out[row, offset + 1:offset + 1 + n] = vectors[:n].to(out)
        return out

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

    def encode(self, tokens: torch.Tensor, clip_skip: int = 1, fixes: list[list[Fix]] | None = None) -> torch.Tensor:
        """Hidden states ``(B, 77, C)`` for ``tokens`` ``(B, 77)`` of BOS + 75 + EOS ids; ``fixes`` per row put
        embedding vectors in place of token embeddings.

        SD1: ``clip_skip`` n > 1 takes ``final_layer_norm(hidden_states[-n])``. SD2 pads with 0 after
        the first EOS and ignores ``clip_skip`` (as A1111 v1.10.1). SDXL ("hidden" output): ``clip_skip``
        n > 0 takes ``hidden_states[-n]`` instead of the configured layer (A1111 ``sdxl_clip_l_skip``).
        """
        return self.encode_pooled(tokens, clip_skip, fixes)[0]

    def encode_pooled(self, tokens: torch.Tensor, clip_skip: int = 1,
                      fixes: list[list[Fix]] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`encode`, and the pooled output ``(B, out)`` when the encoder has a projection: the final
        layer's normed state at each row's end token (its highest id), projected — as sgm's OpenCLIP."""
        self._fixes.rows = fixes
        try:
            if self.output == "hidden":
                return self._encode_hidden(tokens, clip_skip)
            return self._encode(tokens, clip_skip), None
        finally:
            self._fixes.rows = None

    def _encode_hidden(self, tokens: torch.Tensor, clip_skip: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = tokens.to(self.transformer.device)
        if self.kind == "open_clip":
            tokens = _pad_after_first_eos(tokens, self.pad_id)
        out = self.transformer(input_ids=tokens, output_hidden_states=True)
        z = out.hidden_states[-clip_skip if clip_skip > 0 else self.layer_idx].float()
        if self.projection is None:
            return z, None
        ends = tokens.argmax(dim=-1)
        last = out.last_hidden_state[torch.arange(tokens.shape[0], device=tokens.device), ends]
        return z, torch.nn.functional.linear(last, self.projection.to(last)).float()

    def _encode(self, tokens: torch.Tensor, clip_skip: int) -> torch.Tensor:
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


# ---------------------------------------------------------------------------------------------
# Prompt text → chunks → hidden states (prompt spec §6–§8)
@dataclass
class PromptChunk:
    """77 token ids (BOS + 75 + EOS), their emphasis multipliers, and the embeddings placed in it
    (``(offset, embedding)``; offset counted without BOS, the embedding's vectors replace its tokens)."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Any]] = field(default_factory=list)


# (tokens, position) → (embedding, number of tokens its name takes) or None
FindEmbedding = Callable[[Sequence[int], int], "tuple[Any, int] | None"]


def empty_chunk() -> PromptChunk:
    return PromptChunk([BOS_ID] + [EOS_ID] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))


class _Chunker:
    """Accumulates tokens into 75-token chunks with A1111's comma back-tracking (§7)."""

    def __init__(self, backtrack: int):
        self.backtrack = backtrack
        self.chunks: list[PromptChunk] = []
        self.chunk = PromptChunk()
        self.token_count = 0
        self.last_comma = -1

    def next_chunk(self, is_last: bool = False) -> None:
        chunk = self.chunk
        self.token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [BOS_ID] + chunk.tokens + [EOS_ID] * pad + [EOS_ID]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * pad + [1.0]
        self.chunks.append(chunk)
        self.chunk = PromptChunk()
        self.last_comma = -1

    def add(self, token: int, weight: float) -> None:
        self._before(token)
        self.chunk.tokens.append(token)
        self.chunk.multipliers.append(weight)

    def add_embedding(self, token: int, embedding: Any, weight: float) -> None:
        """An embedding found at ``token``: its vectors take ``embedding.count`` places, all in one chunk."""
        self._before(token)
        count = int(embedding.count)
        if count > CHUNK_LENGTH:
            raise ValueError(f"prompt: embedding {embedding.name!r} has {count} vectors; at most {CHUNK_LENGTH} fit "
                             "in a prompt chunk")
        if len(self.chunk.tokens) + count > CHUNK_LENGTH:
            self.next_chunk()
        self.chunk.fixes.append((len(self.chunk.tokens), embedding))
        self.chunk.tokens += [0] * count
        self.chunk.multipliers += [weight] * count

    def _before(self, token: int) -> None:
        """Comma back-tracking and starting a new chunk, before a token (or embedding) is added."""
        chunk = self.chunk
        if token == COMMA_ID:
            self.last_comma = len(chunk.tokens)
        elif (self.backtrack != 0 and len(chunk.tokens) == CHUNK_LENGTH and self.last_comma != -1
              and len(chunk.tokens) - self.last_comma <= self.backtrack):
            cut = self.last_comma + 1
            moved_tokens, moved_multipliers = chunk.tokens[cut:], chunk.multipliers[cut:]
            chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
            self.next_chunk()
            self.chunk.tokens, self.chunk.multipliers = moved_tokens, moved_multipliers
        if len(self.chunk.tokens) == CHUNK_LENGTH:
            self.next_chunk()


def tokenize_line(encoder: TextEncoder, line: str, options: Options,
                  find_embedding: FindEmbedding | None = None) -> tuple[list[PromptChunk], int]:
    """Split one text into chunks of 75 tokens; also return A1111's token count (§7).

    The token count counts 75 for every chunk but the last, so BREAK and comma back-tracking
    make it exceed the number of real tokens. ``find_embedding`` finds textual-inversion embeddings
    by their names' tokens (A1111 checks at every token, inside each emphasis fragment).
    """
    parsed = prompt_parser.parse_prompt_attention(line) if options.emphasis != "None" else [[line, 1.0]]
    tokenized = encoder.tokenize([str(text) for text, _ in parsed])
    chunker = _Chunker(options.comma_padding_backtrack)
    for tokens, (text, weight) in zip(tokenized, parsed, strict=True):
        if text == "BREAK" and weight == -1:
            chunker.next_chunk()
            continue
        position = 0
        while position < len(tokens):
            found = find_embedding(tokens, position) if find_embedding is not None else None
            if found is None:
                chunker.add(tokens[position], weight)
                position += 1
            else:
                chunker.add_embedding(tokens[position], found[0], weight)
                position += found[1]
    if chunker.chunk.tokens or not chunker.chunks:
        chunker.next_chunk(is_last=True)
    return chunker.chunks, chunker.token_count


def encode_texts(encoder: TextEncoder, texts: Sequence[str], options: Options,
                 find_embedding: FindEmbedding | None = None, used: dict[str, Any] | None = None, *,
                 clip_skip: int | None = None, pooled: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Encode a batch of texts → ``(B, 77·K, C)``, K = the most chunks any text needs (§8.1).

    Texts with fewer chunks are completed with empty chunks; chunk k of every text is encoded in
    one transformer call and emphasis is normalised over that whole call. Embeddings the texts use are
    added to ``used`` (name → embedding). ``clip_skip``: instead of ``options.CLIP_stop_at_last_layers``.
    ``pooled``: receives the pooled output of the first chunk (encoders with a projection; as A1111).
    """
    by_text: dict[str, list[PromptChunk]] = {}
    for text in texts:
        if text not in by_text:
            by_text[text] = tokenize_line(encoder, text, options, find_embedding)[0]
    batch = [by_text[text] for text in texts]
    chunk_count = max(len(chunks) for chunks in batch)
    zs = []
    for i in range(chunk_count):
        column = [chunks[i] if i < len(chunks) else empty_chunk() for chunks in batch]
        tokens = torch.tensor([c.tokens for c in column], dtype=torch.long)
        multipliers = torch.tensor([c.multipliers for c in column], dtype=torch.float32)
        fixes = [[(offset, emb.for_encoder(encoder.embedding_key)) for offset, emb in c.fixes] for c in column]
        if used is not None:
            used.update((emb.name, emb) for c in column for _, emb in c.fixes)
        z, pooled_z = encoder.encode_pooled(tokens, options.CLIP_stop_at_last_layers if clip_skip is None
                                            else clip_skip, fixes)
        if pooled is not None and i == 0 and pooled_z is not None:
            pooled.append(pooled_z)
        zs.append(apply_emphasis(z, multipliers.to(z.device, z.dtype), options.emphasis))
    return torch.hstack(zs)


def apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor, emphasis: str) -> torch.Tensor:
    """Weight hidden states ``z`` ``(B, 77, C)`` by per-token ``multipliers`` ``(B, 77)`` (§8.5).

    "Original" rescales so the mean over the whole batch is unchanged.
    """
    if emphasis in ("None", "Ignore"):
        return z
    weighted = z * multipliers[..., None].expand(z.shape)
    if emphasis == "No norm":
        return weighted
    return weighted * (z.mean() / weighted.mean())


@dataclass
class SDTextConditioner:
    """SD1/SD2 prompt encoding: one CLIP (or OpenCLIP) encoder, cross-attention only."""

    encoder: TextEncoder

    def encode_prompts(self, texts: Sequence[str], context: PromptContext) -> Conditioning:
        used: dict[str, Any] = {}
        with torch.inference_mode():
            cond = Conditioning(encode_texts(self.encoder, texts, context.options, context.find_embedding, used))
        if used and context.used_embeddings is not None:
            context.used_embeddings(list(used.values()))
        return cond
