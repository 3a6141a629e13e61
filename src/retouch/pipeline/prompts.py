"""Stage 0: the job's prompts, and how they fall into batches (A1111 ``setup_prompts``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lark

from retouch.options import Options
from retouch.params import Job
from retouch.prompt_parser import (
    apply_styles,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_extra_networks,
)


def expand_prompts(job: Job, styles: Mapping[str, tuple[str, str]] | None = None,
                   comments: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``all_prompts`` and ``all_negative_prompts`` (one per image), styles applied.

    A style named but not in ``styles`` is reported in ``comments`` ("Styles not found: …").
    """
    params = job.params
    negative = params.negative_prompt if params.negative_prompt is not None else ""
    if isinstance(params.prompt, list):
        prompts = list(params.prompt)
    elif isinstance(negative, list):
        prompts = [params.prompt] * len(negative)
    else:
        prompts = [params.prompt] * (params.batch_size * params.n_iter)
    negatives = list(negative) if isinstance(negative, list) else [negative] * len(prompts)
    if len(prompts) != len(negatives):
        raise ValueError(f"negative_prompt: received a different number of prompts ({len(prompts)}) and "
                         f"negative prompts ({len(negatives)})")
    styles = styles or {}
    missing = [name for name in params.styles if name not in styles]
    if missing and comments is not None:
        comments.append("Styles not found: " + ", ".join(missing))
    chosen = [styles.get(name, ("", "")) for name in params.styles]
    prompts = [apply_styles(p, [s[0] for s in chosen]) for p in prompts]
    negatives = [apply_styles(p, [s[1] for s in chosen]) for p in negatives]
    return prompts, negatives


@dataclass(frozen=True)
class Batch:
    """One batch of a job: iteration ``n`` and, per image, its prompt, negative prompt and seeds."""

    n: int
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]

    def __len__(self) -> int:
        return len(self.prompts)


def batches(job: Job, prompts: list[str], negatives: list[str], batch_size: int) -> Iterator[Batch]:
    """The ``n_iter`` batches of ``batch_size`` images (fewer when the prompt list runs out)."""
    b = batch_size
    for n in range(job.params.n_iter):
        chunk = slice(n * b, (n + 1) * b)
        if not prompts[chunk]:
            return
        yield Batch(n, prompts[chunk], negatives[chunk], job.seeds[chunk], job.subseeds[chunk])


CHUNK_TOKENS = 75


def prompt_length(model: Any, text: str, steps: int, options: Options, *, negative: bool = False) -> tuple[int, int]:
    """A1111's token counter for a prompt box: ``(tokens, target)`` — the most tokens any of the texts the prompt
    stands for takes (its network tags removed; each AND part and each prompt-editing step counted on its own;
    BREAK and chunks past 75 as A1111 counts them, embeddings as their vectors), and that count rounded up to whole
    75-token chunks."""
    from retouch.models.text_encoder import tokenize_line

    text = parse_extra_networks(text)[0]
    try:
        parts = [text] if negative else get_multicond_prompt_list([text])[1]
        schedules = get_learned_conditioning_prompt_schedules(parts, steps)
    except (ValueError, lark.exceptions.LarkError):
        schedules = [[[steps, text]]]
    database = model.embeddings
    database.check_for_changes()
    texts = [part for schedule in schedules for _, part in schedule]
    tokens = max(tokenize_line(model.text_encoder, part, options, database.find_at)[1] for part in texts)
    return tokens, math.ceil(max(tokens, 1) / CHUNK_TOKENS) * CHUNK_TOKENS
