"""Denoiser wrappers: UNet noise prediction → ``denoised(x, σ)``, then CFG and inpaint blending.

* :class:`EpsDenoiser` / :class:`VDenoiser` / :class:`LCMDenoiser` — k-diffusion's CompVis wrappers.
* :class:`TimestepEpsModel` — the UNet as ε(x, t) for DDIM/PLMS/UniPC.
* :class:`CFGDenoiser` — classifier-free guidance with A1111's per-call prompt schedules, composable
  ``AND`` weights, instruct-pix2pix 3-way guidance, NGMS, and the inpaint blend (spec §3.9, §3.11).
  Samplers never see masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from retouch.conditioning import (
    MulticondLearnedConditioning,
    reconstruct_cond_batch,
    reconstruct_multicond_batch,
)
from retouch.sampling.schedules import DiscreteSchedule, append_zero

# apply_model(x, t, context, concat) -> UNet output (ε, or v for v-prediction models)
ApplyModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class Interrupted(Exception):  # noqa: N818 - A1111's InterruptedException
    """Raised inside the denoiser when the job was interrupted or skipped."""


def _dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v[(...,) + (None,) * (ndim - v.ndim)]


class EpsDenoiser:
    """ε-prediction: ``D(x, σ) = x − σ·ε(x/√(σ²+1), t(σ))`` (k-diffusion ``CompVisDenoiser``)."""

    def __init__(self, apply_model: ApplyModel, schedule: DiscreteSchedule):
        self.apply_model = apply_model
        self.schedule = schedule

    def __call__(self, x, sigma, context, concat=None):
        c_in = _dims(1 / (sigma**2 + 1) ** 0.5, x.ndim)
        eps = self.apply_model(x * c_in, self.schedule.sigma_to_t(sigma), context, concat)
        return x + eps * _dims(-sigma, x.ndim)


class VDenoiser(EpsDenoiser):
    """v-prediction (SD2 768-v): k-diffusion ``CompVisVDenoiser`` scalings."""

    def __call__(self, x, sigma, context, concat=None):
        c_skip = _dims(1 / (sigma**2 + 1), x.ndim)
        c_out = _dims(-sigma / (sigma**2 + 1) ** 0.5, x.ndim)
        c_in = _dims(1 / (sigma**2 + 1) ** 0.5, x.ndim)
        return self.apply_model(x * c_in, self.schedule.sigma_to_t(sigma), context, concat) * c_out + x * c_skip


class LCMSchedule(DiscreteSchedule):
    """The 50 timesteps an LCM was distilled on (every 20th of 1000), as A1111's LCM sampler."""

    ORIGINAL_STEPS = 50

    def __init__(self, alphas_cumprod: torch.Tensor):
        total = alphas_cumprod.shape[0]
        self.skip_steps = total // self.ORIGINAL_STEPS
        valid = torch.zeros(self.ORIGINAL_STEPS, dtype=torch.float32)
        for x in range(self.ORIGINAL_STEPS):
            valid[self.ORIGINAL_STEPS - 1 - x] = alphas_cumprod[total - 1 - x * self.skip_steps]
        super().__init__(((1 - valid) / valid) ** 0.5)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start, end = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return append_zero(self.t_to_sigma(torch.linspace(start, end, n)))

    def sigma_to_t(self, sigma, quantize=None):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t):
        t = torch.clamp(((t - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(t)


class LCMDenoiser(EpsDenoiser):
    """A1111's LCM denoiser: consistency-model boundary scalings on top of the ε prediction."""

    def __call__(self, x, sigma, context, concat=None):
        c_in = _dims(1 / (sigma**2 + 1) ** 0.5, x.ndim)
        t = self.schedule.sigma_to_t(sigma)
        eps = self.apply_model(x * c_in, t, context, concat)
        output = x + eps * _dims(-sigma, x.ndim)
        scaled_t = _dims(t, x.ndim) * 10.0
        c_skip = 0.25 / (scaled_t**2 + 0.25)
        c_out = scaled_t / (scaled_t**2 + 0.25) ** 0.5
        return c_out * output + c_skip * x


class TimestepEpsModel:
    """The UNet as ε(x, t) at integer timesteps (v-prediction converted to ε)."""

    def __init__(self, apply_model: ApplyModel, alphas_cumprod: torch.Tensor, v_prediction: bool):
        self.apply_model = apply_model
        self.v_prediction = v_prediction
        ac = alphas_cumprod.double()
        self.sqrt_ac, self.sqrt_one_minus_ac = ac.sqrt().float(), (1 - ac).sqrt().float()

    def __call__(self, x, t, context, concat=None):
        out = self.apply_model(x, t, context, concat)
        if not self.v_prediction:
            return out
        idx = t.to(torch.int)
        return _dims(self.sqrt_ac[idx], x.ndim) * out + _dims(self.sqrt_one_minus_ac[idx], x.ndim) * x


@dataclass
class Guidance:
    """What the CFG denoiser needs besides ``x`` and σ (A1111 ``sampler_extra_args``)."""

    cond: MulticondLearnedConditioning
    uncond: list
    cond_scale: float
    image_cond: torch.Tensor | None = None
    s_min_uncond: float = 0.0


class CFGDenoiser:
    """Classifier-free guidance around an inner denoiser, one call per sampler model evaluation.

    Args:
        inner: ``inner(x, σ_or_t, context, concat) -> denoised`` (or ε for timestep samplers).
        guidance: conditioning, scale and image conditioning.
        options: the job's :class:`~retouch.options.Options`.
        total_steps: expected number of calls (for ``skip_early_cond``).
        init_latent / mask / nmask: inpaint blend; ``mask`` 1 = keep ``init_latent``, ``nmask`` 1 = repaint.
        mask_before_denoising: timestep samplers blend the input instead of the output.
        image_cfg_scale: instruct-pix2pix image guidance (None or 1.0: plain two-pass CFG).
        empty_cond: encoded empty prompt ``(77, C)`` for the ``pad_cond_uncond`` option.
        should_stop: polled before each call; True raises :class:`Interrupted`.
    """

    def __init__(self, inner, guidance: Guidance, options, *, total_steps: int, init_latent=None, mask=None,
                 nmask=None, mask_before_denoising=False, image_cfg_scale=None, empty_cond=None,
                 should_stop: Callable[[], bool] | None = None, pred_x0: Callable | None = None):
        self.inner = inner
        self.guidance = guidance
        self.options = options
        self.total_steps = max(total_steps, 1)
        self.init_latent, self.mask, self.nmask = init_latent, mask, nmask
        self.mask_before_denoising = mask_before_denoising
        self.image_cfg_scale = image_cfg_scale
        self.empty_cond = empty_cond
        self.should_stop = should_stop
        self.pred_x0 = pred_x0 or (lambda x_in, x_out, sigma: x_out)
        self.step = 0
        self.last_latent = init_latent
        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        self.cond_scale_multiplier = 1.0  # DDIM CFG++ sets 1/12.5
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None
        self.extra_params: dict = {}  # infotext keys this denoiser adds (NGMS, Skip Early CFG)

    def blend(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.nmask + self.init_latent * self.mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted
        g, opts = self.guidance, self.options
        edit = self.image_cfg_scale is not None and self.image_cfg_scale != 1.0
        conds_list, tensor = reconstruct_multicond_batch(g.cond, self.step)
        uncond = reconstruct_cond_batch(g.uncond, self.step)
        if edit and not all(len(c) == 1 for c in conds_list):
            raise ValueError("prompt: AND is not supported for InstructPix2Pix models unless image_cfg_scale is 1.0")
        if self.mask_before_denoising and self.mask is not None:
            x = self.blend(x)

        batch_size = len(conds_list)
        repeats = [len(c) for c in conds_list]
        image_cond = g.image_cond
        x_in = torch.cat([torch.stack([x[i]] * n) for i, n in enumerate(repeats)] + [x] * (2 if edit else 1))
        sigma_in = torch.cat([torch.stack([sigma[i]] * n) for i, n in enumerate(repeats)] + [sigma] * (2 if edit else 1))
        image_in = None
        if image_cond is not None:
            parts = [torch.stack([image_cond[i]] * n) for i, n in enumerate(repeats)] + [image_cond]
            if edit:
                parts.append(torch.zeros_like(self.init_latent))
            image_in = torch.cat(parts)

        skip_uncond = False
        if opts.skip_early_cond != 0 and self.step / self.total_steps <= opts.skip_early_cond:
            skip_uncond = True
            self.extra_params["Skip Early CFG"] = opts.skip_early_cond
        elif ((self.step % 2 or opts.s_min_uncond_all) and g.s_min_uncond > 0 and sigma[0] < g.s_min_uncond
              and not edit):
            skip_uncond = True
            self.extra_params["NGMS"] = g.s_min_uncond
            if opts.s_min_uncond_all:
                self.extra_params["NGMS all steps"] = opts.s_min_uncond_all
        if skip_uncond:
            x_in, sigma_in = x_in[:-batch_size], sigma_in[:-batch_size]
            image_in = image_in[:-batch_size] if image_in is not None else None

        tensor, uncond = self._pad(tensor, uncond)
        x_out = self._evaluate(x_in, sigma_in, image_in, tensor, uncond, repeats, skip_uncond, edit)
        first_rows = [c[0][0] for c in conds_list]
        if skip_uncond:
            x_out = torch.cat([x_out, torch.cat([x_out[i:i + 1] for i in first_rows])])
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-uncond.shape[0]:])

        scale = g.cond_scale * self.cond_scale_multiplier
        if edit:
            out_cond, out_img_cond, out_uncond = x_out.chunk(3)
            denoised = out_uncond + scale * (out_cond - out_img_cond) + self.image_cfg_scale * (out_img_cond - out_uncond)
        else:
            denoised = combine_denoised(x_out, conds_list, uncond.shape[0], 1.0 if skip_uncond else scale)
        if not self.mask_before_denoising and self.mask is not None:
            denoised = self.blend(denoised)
        self.last_latent = self.pred_x0(torch.cat([x_in[i:i + 1] for i in first_rows]),
                                        torch.cat([x_out[i:i + 1] for i in first_rows]), sigma)
        self.step += 1
        return denoised

    def _pad(self, tensor, uncond):
        self.padded_cond_uncond = self.padded_cond_uncond_v0 = False
        if tensor.shape[1] == uncond.shape[1]:
            return tensor, uncond
        if self.options.pad_cond_uncond_v0:
            self.padded_cond_uncond_v0 = True
            if uncond.shape[1] < tensor.shape[1]:
                last = uncond[:, -1:].repeat([1, tensor.shape[1] - uncond.shape[1], 1])
                return tensor, torch.hstack([uncond, last])
            return tensor, uncond[:, :tensor.shape[1]]
        if self.options.pad_cond_uncond and self.empty_cond is not None:
            empty = self.empty_cond[None]
            repeats = (tensor.shape[1] - uncond.shape[1]) // empty.shape[1]
            self.padded_cond_uncond = repeats != 0
            if repeats < 0:
                tensor = torch.cat([tensor, empty.repeat((tensor.shape[0], -repeats, 1))], dim=1)
            elif repeats > 0:
                uncond = torch.cat([uncond, empty.repeat((uncond.shape[0], repeats, 1))], dim=1)
        return tensor, uncond

    def _evaluate(self, x_in, sigma_in, image_in, tensor, uncond, repeats, skip_uncond, edit):
        """Run the inner model over the rows of ``x_in`` image by image.

        Rows are ``[cond rows of every image…, uncond rows…(, unconditional no-image rows…)]`` as in
        A1111. Each image's rows go through their own call(s), so a batch gives exactly the numbers its
        images give one at a time (A1111 runs all rows in one call: the same maths, summed in another
        order). Positive and negative rows of different token lengths are evaluated separately, and
        so are all rows when ``batch_cond_uncond`` is off (prompt spec §9.4–§9.5).
        """
        x_out = torch.empty_like(x_in)
        n_cond, batch = sum(repeats), len(repeats)
        together = self.options.batch_cond_uncond and (skip_uncond or tensor.shape[1] == uncond.shape[1])
        offset = 0
        for i, n in enumerate(repeats):
            cond_rows = list(range(offset, offset + n))
            offset += n
            uncond_rows = [] if skip_uncond else [n_cond + i] + ([n_cond + batch + i] if edit else [])
            contexts = [tensor[r] for r in cond_rows] + [uncond[i]] * len(uncond_rows)
            rows = cond_rows + uncond_rows
            groups = [rows] if together else [cond_rows] + ([uncond_rows] if uncond_rows else [])
            for group in groups:
                context = torch.stack([contexts[rows.index(r)] for r in group])
                concat = image_in[group] if image_in is not None else None
                x_out[group] = self.inner(x_in[group], sigma_in[group], context, concat)
        return x_out


def combine_denoised(x_out: torch.Tensor, conds_list, n_uncond: int, cond_scale: float) -> torch.Tensor:
    """``u + Σ_k w_k·scale·(c_k − u)`` per image (prompt spec §9.6)."""
    denoised_uncond = x_out[-n_uncond:]
    denoised = torch.clone(denoised_uncond)
    for i, conds in enumerate(conds_list):
        for cond_index, weight in conds:
            denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
    return denoised
