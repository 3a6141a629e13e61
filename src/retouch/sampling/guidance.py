"""Classifier-free guidance around a model denoiser, as A1111's ``CFGDenoiser`` (spec §3.11, prompt spec §9).

:class:`CFGDenoiser` turns ``inner(x, σ, cond, concat)`` into ``denoiser(x, σ) -> denoised`` for a
sampler: per-call prompt schedules, composable ``AND`` weights, instruct-pix2pix 3-way guidance,
NGMS and skip-early-CFG, and the ``pad_cond_uncond`` options. It knows nothing about masks (see
:mod:`retouch.sampling.inpaint`) or interruption.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from retouch.conditioning import (
    Conditioning,
    MulticondLearnedConditioning,
    ScheduledPromptConditioning,
    reconstruct_cond_batch,
    reconstruct_multicond_batch,
)
from retouch.options import Options


class ModelDenoiser(Protocol):
    """A UNet wrapped for a sampler family (see :mod:`retouch.sampling.denoisers`)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
                 concat: torch.Tensor | None = None) -> torch.Tensor: ...

    def predict_x0(self, x: torch.Tensor, out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Guidance:
    """What guidance needs besides ``x`` and σ (A1111 ``sampler_extra_args``)."""

    cond: MulticondLearnedConditioning
    uncond: list[list[ScheduledPromptConditioning]]
    scale: float  # cfg_scale × the sampler's multiplier (DDIM CFG++: 1/12.5)
    image_cond: torch.Tensor | None = None  # per image: what the UNet gets besides the latent
    image_cfg_scale: float | None = None  # instruct-pix2pix; None or 1.0 → plain two-way CFG
    s_min_uncond: float = 0.0
    empty_cond: Conditioning | None = None  # the encoded empty prompt, for the pad_cond_uncond option

    @property
    def edit(self) -> bool:
        return self.image_cfg_scale is not None and self.image_cfg_scale != 1.0


@dataclass
class _Rows:
    """The model rows of one call: every image's cond rows, then uncond rows (then pix2pix's
    no-image rows), as A1111 lays them out."""

    x: torch.Tensor
    sigma: torch.Tensor
    image: torch.Tensor | None
    repeats: list[int]  # cond rows per image
    conds_list: list[list[tuple[int, float]]]
    skip_uncond: bool


class CFGDenoiser:
    """``denoiser(x, σ) -> denoised`` with classifier-free guidance; one instance per batch.

    ``exact_batch``: evaluate each image's rows in calls of their own, so that every image of a batch
    gets exactly the numbers it gets alone (default: A1111's batched calls, fewer and faster).

    Attributes:
        step: denoiser calls made so far (prompt schedules are looked up by it).
        last_prediction: x₀ predicted by the first cond row of each image in the last call (what
            A1111 returns when a job is interrupted).
        extra_params: infotext keys this denoiser adds (NGMS, Skip Early CFG, Pad conds).
    """

    def __init__(self, inner: ModelDenoiser, guidance: Guidance, options: Options, *, total_steps: int,
                 exact_batch: bool = False):
        self.inner = inner
        self.guidance = guidance
        self.options = options
        self.total_steps = max(total_steps, 1)
        self.exact_batch = exact_batch
        self.step = 0
        self.last_prediction: torch.Tensor | None = None
        self.extra_params: dict = {}
        # called with (self, σ) before each call: may replace ``inner`` and ``guidance`` (the refiner's switch)
        self.before_call: Callable[[CFGDenoiser, torch.Tensor], None] | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self._guide(x, sigma)[0]

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guided output and the unconditional rows' output of the same call (DDIM CFG++)."""
        denoised, x_out, n_uncond = self._guide(x, sigma)
        return denoised, torch.clone(x_out[-n_uncond:])

    def _guide(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.before_call is not None:
            self.before_call(self, sigma)
        g = self.guidance
        conds_list, cond = reconstruct_multicond_batch(g.cond, self.step)
        uncond = reconstruct_cond_batch(g.uncond, self.step)
        rows = self._rows(x, sigma, conds_list)
        cond, uncond = self._pad(cond, uncond)
        x_out = self._evaluate(rows, cond, uncond)
        first_rows = [c[0][0] for c in conds_list]
        if rows.skip_uncond:
            x_out = torch.cat([x_out, torch.cat([x_out[i:i + 1] for i in first_rows])])
        denoised = self._combine(x_out, conds_list, len(uncond), rows.skip_uncond)
        self.last_prediction = self.inner.predict_x0(torch.cat([rows.x[i:i + 1] for i in first_rows]),
                                                     torch.cat([x_out[i:i + 1] for i in first_rows]), sigma)
        self.step += 1
        return denoised, x_out, len(uncond)

    def _rows(self, x: torch.Tensor, sigma: torch.Tensor, conds_list) -> _Rows:
        g = self.guidance
        repeats = [len(c) for c in conds_list]
        tail = 2 if g.edit else 1
        x_in = torch.cat([torch.stack([x[i]] * n) for i, n in enumerate(repeats)] + [x] * tail)
        sigma_in = torch.cat([torch.stack([sigma[i]] * n) for i, n in enumerate(repeats)] + [sigma] * tail)
        image_in = None
        if g.image_cond is not None:
            parts = [torch.stack([g.image_cond[i]] * n) for i, n in enumerate(repeats)] + [g.image_cond]
            if g.edit:
                parts.append(torch.zeros_like(g.image_cond))
            image_in = torch.cat(parts)
        skip_uncond = self._skip_uncond(sigma)
        if skip_uncond:
            batch = len(repeats)
            x_in, sigma_in = x_in[:-batch], sigma_in[:-batch]
            image_in = image_in[:-batch] if image_in is not None else None
        return _Rows(x_in, sigma_in, image_in, repeats, conds_list, skip_uncond)

    def _skip_uncond(self, sigma: torch.Tensor) -> bool:
        """Skip early CFG and NGMS (spec §2.1 s_min_uncond): run only the cond rows this call."""
        g, opts = self.guidance, self.options
        if opts.skip_early_cond != 0 and self.step / self.total_steps <= opts.skip_early_cond:
            self.extra_params["Skip Early CFG"] = opts.skip_early_cond
            return True
        if (self.step % 2 or opts.s_min_uncond_all) and g.s_min_uncond > 0 and sigma[0] < g.s_min_uncond \
                and not g.edit:
            self.extra_params["NGMS"] = g.s_min_uncond
            if opts.s_min_uncond_all:
                self.extra_params["NGMS all steps"] = opts.s_min_uncond_all
            return True
        return False

    def _pad(self, cond: Conditioning, uncond: Conditioning) -> tuple[Conditioning, Conditioning]:
        """Make cond and uncond the same length, as the ``pad_cond_uncond(_v0)`` options ask."""
        self.extra_params.pop("Pad conds", None)
        self.extra_params.pop("Pad conds v0", None)
        tensor, un = cond.crossattn, uncond.crossattn
        if tensor.shape[1] == un.shape[1]:
            return cond, uncond
        if self.options.pad_cond_uncond_v0:
            self.extra_params["Pad conds v0"] = True
            if un.shape[1] < tensor.shape[1]:
                un = torch.hstack([un, un[:, -1:].repeat([1, tensor.shape[1] - un.shape[1], 1])])
            else:
                un = un[:, :tensor.shape[1]]
        elif self.options.pad_cond_uncond and self.guidance.empty_cond is not None:
            empty = self.guidance.empty_cond.crossattn[None]
            repeats = (tensor.shape[1] - un.shape[1]) // empty.shape[1]
            if repeats != 0:
                self.extra_params["Pad conds"] = True
            if repeats < 0:
                tensor = torch.cat([tensor, empty.repeat((tensor.shape[0], -repeats, 1))], dim=1)
            elif repeats > 0:
                un = torch.cat([un, empty.repeat((un.shape[0], repeats, 1))], dim=1)
        return Conditioning(tensor, cond.vector), Conditioning(un, uncond.vector)

    def _evaluate(self, rows: _Rows, cond: Conditioning, uncond: Conditioning) -> torch.Tensor:
        if self.exact_batch:
            return self._evaluate_per_image(rows, cond, uncond)
        return self._evaluate_batched(rows, cond, uncond)

    def _evaluate_batched(self, rows: _Rows, cond: Conditioning, uncond: Conditioning) -> torch.Tensor:
        """Run the inner model over the rows as A1111 does (prompt spec §9.4–§9.5).

        Equal token lengths (or no negative rows this call): every row in one call, or with
        ``batch_cond_uncond`` off in slices of B rows (B = images). Different lengths: the positive rows
        in slices of 2B (B with ``batch_cond_uncond`` off), then all negative rows in one call.
        """
        x_out = torch.empty_like(rows.x)
        images, n_cond = len(rows.repeats), len(cond)
        tail = [uncond] * (2 if self.guidance.edit else 1)
        if rows.skip_uncond or cond.tokens == uncond.tokens:
            contexts = cond if rows.skip_uncond else Conditioning.cat([cond, *tail])
            step = len(rows.x) if self.options.batch_cond_uncond else images
            for a in range(0, len(rows.x), step):
                self._call(x_out, rows, contexts, a, a + step, 0)
            return x_out
        step = 2 * images if self.options.batch_cond_uncond else images
        for a in range(0, n_cond, step):
            self._call(x_out, rows, cond, a, min(a + step, n_cond), 0)
        self._call(x_out, rows, Conditioning.cat(tail), n_cond, len(rows.x), n_cond)
        return x_out

    def _call(self, x_out: torch.Tensor, rows: _Rows, contexts: Conditioning, a: int, b: int, first: int) -> None:
        """Rows ``a:b`` through the inner model; ``contexts`` row ``r - first`` belongs to row ``r``."""
        concat = rows.image[a:b] if rows.image is not None else None
        x_out[a:b] = self.inner(rows.x[a:b], rows.sigma[a:b], contexts[a - first:b - first], concat)

    def _evaluate_per_image(self, rows: _Rows, cond: Conditioning, uncond: Conditioning) -> torch.Tensor:
        """Run the inner model over every row, image by image (the ``deterministic_batches`` option).

        Each image's rows go through their own call(s), so a batch gives exactly the numbers its
        images give one at a time (A1111's batched calls do the same maths, summed in another order, at
        the cost of one call per image). Positive and negative rows of different token lengths are
        evaluated separately, and so are all rows when ``batch_cond_uncond`` is off.
        """
        x_out = torch.empty_like(rows.x)
        n_cond, batch = sum(rows.repeats), len(rows.repeats)
        together = self.options.batch_cond_uncond and (rows.skip_uncond or cond.tokens == uncond.tokens)
        offset = 0
        for i, n in enumerate(rows.repeats):
            cond_rows = list(range(offset, offset + n))
            offset += n
            uncond_rows = [] if rows.skip_uncond else [n_cond + i] + ([n_cond + batch + i] if self.guidance.edit else [])
            contexts = [cond[r] for r in cond_rows] + [uncond[i]] * len(uncond_rows)
            all_rows = cond_rows + uncond_rows
            groups = [all_rows] if together else [cond_rows] + ([uncond_rows] if uncond_rows else [])
            for group in groups:
                context = Conditioning.stack([contexts[all_rows.index(r)] for r in group])
                concat = rows.image[group] if rows.image is not None else None
                x_out[group] = self.inner(rows.x[group], rows.sigma[group], context, concat)
        return x_out

    def _combine(self, x_out: torch.Tensor, conds_list, n_uncond: int, skip_uncond: bool) -> torch.Tensor:
        g = self.guidance
        if g.edit:
            assert g.image_cfg_scale is not None
            out_cond, out_img_cond, out_uncond = x_out.chunk(3)
            return out_uncond + g.scale * (out_cond - out_img_cond) + g.image_cfg_scale * (out_img_cond - out_uncond)
        return combine_denoised(x_out, conds_list, n_uncond, 1.0 if skip_uncond else g.scale)


def combine_denoised(x_out: torch.Tensor, conds_list, n_uncond: int, cond_scale: float) -> torch.Tensor:
    """``u + Σ_k w_k·scale·(c_k − u)`` per image (prompt spec §9.6)."""
    denoised_uncond = x_out[-n_uncond:]
    denoised = torch.clone(denoised_uncond)
    for i, conds in enumerate(conds_list):
        for cond_index, weight in conds:
            denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
    return denoised

