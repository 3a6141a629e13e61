"""Conditioning as a value, and A1111's prompt schedules over it (prompt spec §4–§9).

* :class:`Conditioning` — what the UNet is conditioned on: a cross-attention part ``(T, C)`` and,
  for model families that have one (SDXL), a vector part ``(D,)``; batched: ``(B, T, C)``/``(B, D)``.
* :func:`get_learned_conditioning` / :func:`get_multicond_learned_conditioning` — prompt-editing
  schedules and ``AND`` parts, encoded once per job by a :class:`PromptEncoder` (the model);
* :func:`reconstruct_cond_batch` / :func:`reconstruct_multicond_batch` — the batch a given denoiser
  call uses.

Nothing here knows a model family: tokenizing and encoding live behind :class:`PromptEncoder`
(``retouch.models``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from retouch import prompt_parser
from retouch.options import Options


@dataclass(frozen=True)
class Conditioning:
    """Cross-attention conditioning ``crossattn`` and the optional ``vector`` conditioning.

    One prompt: ``crossattn`` ``(T, C)`` (T = 77·chunks), ``vector`` ``(D,)``; a batch adds a leading
    dimension to both.
    """

    crossattn: torch.Tensor
    vector: torch.Tensor | None = None

    def __getitem__(self, index: int | slice | list[int] | torch.Tensor) -> Conditioning:
        vector = self.vector[index] if self.vector is not None else None
        return Conditioning(self.crossattn[index], vector)

    def __len__(self) -> int:
        return int(self.crossattn.shape[0])

    @property
    def tokens(self) -> int:
        """The cross-attention length (77 per chunk)."""
        return int(self.crossattn.shape[-2])

    @staticmethod
    def stack(items: Sequence[Conditioning]) -> Conditioning:
        """Per-prompt values → a batch; shorter cross-attention is padded by repeating its last row (§9.2)."""
        crossattn = stack_conds([c.crossattn for c in items])
        vectors = [c.vector for c in items]
        if any(v is None for v in vectors):
            return Conditioning(crossattn)
        return Conditioning(crossattn, torch.stack([v for v in vectors if v is not None]))

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Batches of the same length → one batch."""
        crossattn = torch.cat([c.crossattn for c in items])
        vectors = [c.vector for c in items]
        if any(v is None for v in vectors):
            return Conditioning(crossattn)
        return Conditioning(crossattn, torch.cat([v for v in vectors if v is not None]))


@dataclass(frozen=True)
class PromptContext:
    """What encoding a prompt may depend on besides its text (SDXL's size conditioning, A1111's
    ``SdConditioning``), and the job's textual-inversion embeddings: ``find_embedding(tokens, position)``
    finds one by its name's tokens; ``used_embeddings(embeddings)`` hears which ones an encoding used."""

    options: Options
    width: int = 512
    height: int = 512
    is_negative: bool = False
    find_embedding: Callable[[Sequence[int], int], tuple[Any, int] | None] | None = field(default=None, compare=False)
    used_embeddings: Callable[[list[Any]], None] | None = field(default=None, compare=False)


class PromptEncoder(Protocol):
    def encode_prompts(self, texts: Sequence[str], context: PromptContext) -> Conditioning:
        """A batch of texts (A1111 prompt syntax: emphasis, BREAK; no scheduling) → a batched value."""
        ...


def stack_conds(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``(T_i, C)`` tensors, padding shorter ones by repeating their last row."""
    length = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == length else torch.vstack([t, t[-1:].repeat(length - t.shape[0], 1)])
              for t in tensors]
    return torch.stack(padded)


# ---------------------------------------------------------------------------------------------
# Schedules (§5) and composable prompts (§4, §9)
@dataclass(frozen=True)
class ScheduledPromptConditioning:
    end_at_step: int
    cond: Conditioning


@dataclass(frozen=True)
class ComposableScheduledPromptConditioning:
    schedules: list[ScheduledPromptConditioning]
    weight: float = 1.0


@dataclass(frozen=True)
class MulticondLearnedConditioning:
    batch: list[list[ComposableScheduledPromptConditioning]]


def get_learned_conditioning(
    encoder: PromptEncoder,
    prompts: Sequence[str],
    steps: int,
    context: PromptContext,
    hires_steps: int | None = None,
    check: Callable[[], None] | None = None,
) -> list[list[ScheduledPromptConditioning]]:
    """For each prompt, its prompt-editing schedule with each entry's conditioning.

    All texts of one prompt's schedule are encoded together (as A1111: they share emphasis
    normalisation and are padded to the same chunk count). ``check()`` runs before each encoding
    (an interrupt check).
    """
    schedules = prompt_parser.get_learned_conditioning_prompt_schedules(
        prompts, steps, hires_steps, context.options.use_old_scheduling)
    cache: dict[str, list[ScheduledPromptConditioning]] = {}
    result = []
    for prompt, schedule in zip(prompts, schedules, strict=True):
        if prompt not in cache:
            if check is not None:
                check()
            conds = encoder.encode_prompts([text for _, text in schedule], context)
            cache[prompt] = [ScheduledPromptConditioning(end, conds[i]) for i, (end, _) in enumerate(schedule)]
        result.append(cache[prompt])
    return result


def get_multicond_learned_conditioning(
    encoder: PromptEncoder,
    prompts: Sequence[str],
    steps: int,
    context: PromptContext,
    hires_steps: int | None = None,
    check: Callable[[], None] | None = None,
) -> MulticondLearnedConditioning:
    """Positive prompts: split on ``AND`` with weights, then scheduled and encoded (§4)."""
    indexes, flat = prompt_parser.get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(encoder, flat, steps, context, hires_steps, check)
    return MulticondLearnedConditioning(
        [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in parts] for parts in indexes])


def _pick(schedule: Sequence[ScheduledPromptConditioning], step: int) -> Conditioning:
    """First entry with ``step <= end_at_step``; entry 0 when the counter ran past the end (§5.6)."""
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.cond
    return schedule[0].cond


def reconstruct_cond_batch(conds: Sequence[Sequence[ScheduledPromptConditioning]], step: int) -> Conditioning:
    """Negative prompts: the batch for denoiser call ``step`` (0-based). All entries of a negative
    batch have one length (they are encoded together)."""
    picked = [_pick(schedule, step) for schedule in conds]
    return Conditioning.stack(picked)


def reconstruct_multicond_batch(
    conds: MulticondLearnedConditioning, step: int
) -> tuple[list[list[tuple[int, float]]], Conditioning]:
    """Positive prompts at denoiser call ``step``: per image ``[(row, weight), …]`` and the rows.

    Rows of different token lengths are padded by repeating their last vector (§9.2).
    """
    picked: list[Conditioning] = []
    conds_list = []
    for parts in conds.batch:
        image_parts = []
        for part in parts:
            image_parts.append((len(picked), part.weight))
            picked.append(_pick(part.schedules, step))
        conds_list.append(image_parts)
    return conds_list, Conditioning.stack(picked)
