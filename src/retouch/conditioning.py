"""Prompts → cross-attention conditioning, exactly as A1111 v1.10.1 (prompt spec §4–§9).

* :func:`tokenize_line` — emphasis fragments → 75-token chunks (BREAK, comma back-tracking);
* :func:`encode_texts` — a batch of texts → ``(B, 77·K, C)`` with emphasis normalisation;
* :func:`get_learned_conditioning` / :func:`get_multicond_learned_conditioning` — prompt-editing
  schedules and ``AND`` parts, encoded once per job;
* :func:`reconstruct_cond_batch` / :func:`reconstruct_multicond_batch` — the tensors a given
  denoiser call uses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from retouch import prompt_parser
from retouch.models.text_encoder import BOS_ID, COMMA_ID, EOS_ID, TextEncoder
from retouch.options import Options

logger = logging.getLogger(__name__)

CHUNK_LENGTH = 75


@dataclass
class PromptChunk:
    """77 token ids (BOS + 75 + EOS) and their emphasis multipliers."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)


def empty_chunk() -> PromptChunk:
    return PromptChunk([BOS_ID] + [EOS_ID] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))


def tokenize_line(encoder: TextEncoder, line: str, options: Options) -> tuple[list[PromptChunk], int]:
    """Split one text into chunks of 75 tokens; also return A1111's token count (§7).

    The token count counts 75 for every chunk but the last, so BREAK and comma back-tracking
    make it exceed the number of real tokens.
    """
    if options.use_old_emphasis_implementation:
        raise ValueError("option use_old_emphasis_implementation is not supported by retouch")
    parsed = prompt_parser.parse_prompt_attention(line) if options.emphasis != "None" else [[line, 1.0]]
    tokenized = encoder.tokenize([text for text, _ in parsed])
    backtrack = options.comma_padding_backtrack

    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def next_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [BOS_ID] + chunk.tokens + [EOS_ID] * pad + [EOS_ID]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * pad + [1.0]
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for tokens, (text, weight) in zip(tokenized, parsed, strict=True):
        if text == "BREAK" and weight == -1:
            next_chunk()
            continue
        for token in tokens:
            if token == COMMA_ID:
                last_comma = len(chunk.tokens)
            elif (backtrack != 0 and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(chunk.tokens) - last_comma <= backtrack):
                cut = last_comma + 1
                moved_tokens, moved_multipliers = chunk.tokens[cut:], chunk.multipliers[cut:]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                next_chunk()
                chunk.tokens, chunk.multipliers = moved_tokens, moved_multipliers
            if len(chunk.tokens) == CHUNK_LENGTH:
                next_chunk()
            chunk.tokens.append(token)
            chunk.multipliers.append(weight)

    if chunk.tokens or not chunks:
        next_chunk(is_last=True)
    return chunks, token_count


def encode_texts(encoder: TextEncoder, texts: Sequence[str], options: Options) -> torch.Tensor:
    """Encode a batch of texts → ``(B, 77·K, C)``, K = the most chunks any text needs (§8.1).

    Texts with fewer chunks are completed with empty chunks; chunk k of every text is encoded in
    one transformer call and emphasis is normalised over that whole call.
    """
    by_text: dict[str, list[PromptChunk]] = {}
    for text in texts:
        if text not in by_text:
            by_text[text] = tokenize_line(encoder, text, options)[0]
    batch = [by_text[text] for text in texts]
    chunk_count = max(len(chunks) for chunks in batch)
    zs = []
    for i in range(chunk_count):
        column = [chunks[i] if i < len(chunks) else empty_chunk() for chunks in batch]
        tokens = torch.tensor([c.tokens for c in column], dtype=torch.long)
        multipliers = torch.tensor([c.multipliers for c in column], dtype=torch.float32)
        z = encoder.encode(tokens, options.CLIP_stop_at_last_layers)
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


# ---------------------------------------------------------------------------------------------
# Schedules (§5) and composable prompts (§4, §9)
@dataclass(frozen=True)
class ScheduledPromptConditioning:
    end_at_step: int
    cond: torch.Tensor  # (77·K, C)


@dataclass(frozen=True)
class ComposableScheduledPromptConditioning:
    schedules: list[ScheduledPromptConditioning]
    weight: float = 1.0


@dataclass(frozen=True)
class MulticondLearnedConditioning:
    batch: list[list[ComposableScheduledPromptConditioning]]


def get_learned_conditioning(
    encoder: TextEncoder,
    prompts: Sequence[str],
    steps: int,
    options: Options,
    hires_steps: int | None = None,
) -> list[list[ScheduledPromptConditioning]]:
    """For each prompt, its prompt-editing schedule with each entry's conditioning.

    All texts of one prompt's schedule are encoded together (as A1111: they share emphasis
    normalisation and are padded to the same chunk count).
    """
    schedules = prompt_parser.get_learned_conditioning_prompt_schedules(
        prompts, steps, hires_steps, options.use_old_scheduling)
    cache: dict[str, list[ScheduledPromptConditioning]] = {}
    result = []
    for prompt, schedule in zip(prompts, schedules, strict=True):
        if prompt not in cache:
            conds = encode_texts(encoder, [text for _, text in schedule], options)
            cache[prompt] = [ScheduledPromptConditioning(end, conds[i]) for i, (end, _) in enumerate(schedule)]
        result.append(cache[prompt])
    return result


def get_multicond_learned_conditioning(
    encoder: TextEncoder,
    prompts: Sequence[str],
    steps: int,
    options: Options,
    hires_steps: int | None = None,
) -> MulticondLearnedConditioning:
    """Positive prompts: split on ``AND`` with weights, then scheduled and encoded (§4)."""
    indexes, flat = prompt_parser.get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(encoder, flat, steps, options, hires_steps)
    return MulticondLearnedConditioning(
        [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in parts] for parts in indexes])


def _pick(schedule: Sequence[ScheduledPromptConditioning], step: int) -> torch.Tensor:
    """First entry with ``step <= end_at_step``; entry 0 when the counter ran past the end (§5.6)."""
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.cond
    return schedule[0].cond


def reconstruct_cond_batch(conds: Sequence[Sequence[ScheduledPromptConditioning]], step: int) -> torch.Tensor:
    """Negative prompts: the ``(B, T, C)`` tensor for denoiser call ``step`` (0-based)."""
    first = conds[0][0].cond
    out = torch.zeros((len(conds),) + tuple(first.shape), device=first.device, dtype=first.dtype)
    for i, schedule in enumerate(conds):
        out[i] = _pick(schedule, step)
    return out


def reconstruct_multicond_batch(
    conds: MulticondLearnedConditioning, step: int
) -> tuple[list[list[tuple[int, float]]], torch.Tensor]:
    """Positive prompts at denoiser call ``step``: per image ``[(row, weight), …]`` and the rows.

    Rows of different token lengths are padded by repeating their last vector (§9.2).
    """
    tensors: list[torch.Tensor] = []
    conds_list = []
    for parts in conds.batch:
        image_parts = []
        for part in parts:
            image_parts.append((len(tensors), part.weight))
            tensors.append(_pick(part.schedules, step))
        conds_list.append(image_parts)
    return conds_list, stack_conds(tensors)


def stack_conds(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``(T_i, C)`` tensors, padding shorter ones by repeating their last row."""
    length = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == length else torch.vstack([t, t[-1:].repeat(length - t.shape[0], 1)])
              for t in tensors]
    return torch.stack(padded)


# ---------------------------------------------------------------------------------------------
# Extra networks (§3.2): until LoRA/hypernetwork loading exists, every named network is reported.
def extra_network_comments(networks: Mapping[str, list[prompt_parser.ExtraNetworkParams]]) -> list[str]:
    """Job comments (and warnings) for extra-network tags that retouch could not apply."""
    comments = []
    for kind, calls in networks.items():
        names = [call.positional[0] if call.positional else "" for call in calls]
        if kind in ("lora", "lyco"):
            comments.append("Lora not found: " + ", ".join(names))
        elif kind == "hypernet":
            comments.append("Hypernetwork not found: " + ", ".join(names))
        else:
            comments.append(f"Skipping unknown extra network: {kind}")
    for comment in comments:
        logger.warning("%s", comment)
    return comments
