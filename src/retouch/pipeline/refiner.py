"""The refiner: a second checkpoint sampling switches to part-way through (A1111 ``apply_refiner``).

Before each denoiser call the batch's :class:`RefinerSwitch` measures how much of the sampling is done — by the
σ of the call (its timestep in the model's σ table: ``(999 − t) / 1000``) or, with
``refiner_switch_by_sample_steps``, by the denoiser's step count — and, once that reaches ``refiner_switch_at``,
moves the denoiser to the refiner: its UNet, and the batch's prompts encoded by its text encoders (with the
batch's networks applied to it). The refiner's VAE decodes what it sampled. With the hires fix,
``hires_fix_refiner_pass`` says in which pass the switch may happen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from retouch.models.model import Model, UNetInput
from retouch.options import Options
from retouch.pipeline.sample import unet_call
from retouch.sampling.guidance import CFGDenoiser
from retouch.sampling.plan import SamplingPlan, model_denoiser


@dataclass(frozen=True)
class Refiner:
    model: Model
    switch_at: float | None  # None: from the first call, and no "Refiner switch at" in the infotext (A1111)


def check_same_latents(other: Model, model: Model, field: str) -> None:
    """A checkpoint that takes over another's latents (the refiner, the hires checkpoint) must read them as they
    are: the same latent channels and scale."""
    if other.latent_format != model.latent_format:
        raise ValueError(f"{field}: {other.name} works in another latent space than {model.name} "
                         f"({other.latent_format.channels} channels, scale {other.latent_format.scale_factor} vs "
                         f"{model.latent_format.channels}, {model.latent_format.scale_factor}); choose a checkpoint "
                         "of the same family")


def check_refiner(refiner: Model, model: Model, field: str = "refiner_checkpoint") -> None:
    """A refiner continues ``model``'s sampling mid-way (A1111 keeps the sampler's σs and the image conditioning
    made for ``model``): the same latents and noise schedule — its prediction type may differ (SD2's ε and v
    models share one schedule) — and a UNet that takes that conditioning. A plain refiner takes over from an
    inpainting model (it ignores the mask); an inpainting refiner cannot take over from a plain model (A1111 fails
    mid-job on the 1×1 dummy conditioning)."""
    check_same_latents(refiner, model, field)
    if not torch.equal(refiner.schedule.alphas_cumprod, model.schedule.alphas_cumprod):
        raise ValueError(f"{field}: {refiner.name} has another noise schedule than {model.name}; choose a "
                         "checkpoint of the same family")
    takes_over = refiner.unet_input is model.unet_input or (
        refiner.unet_input is UNetInput.PLAIN and model.unet_input is UNetInput.INPAINTING)
    if not takes_over:
        raise ValueError(f"{field}: {refiner.name} is {_kind(refiner)} model and {model.name} {_kind(model)} one; "
                         "a refiner takes the UNet input of the model it takes over from (a plain refiner may follow "
                         "an inpainting model)")


def _kind(model: Model) -> str:
    kind = model.unet_input.name.lower()
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def refiner_plan(plan: SamplingPlan, refiner: Model) -> SamplingPlan:
    """The sampling plan on the refiner: the same σs and steps, the refiner's prediction type (A1111
    ``update_inner_model``: a v model gets the v wrapper)."""
    return dataclasses.replace(plan, v_prediction=refiner.schedule.v_prediction)


class RefinerSwitch:
    """One batch's switch to the refiner (see the module doc); ``model`` is the model sampling is on.

    ``encode(model)`` gives the batch's conditioning on a model and ``plan_for(model)`` the sampling plan on its
    noise schedule; ``hires``: None outside the hires fix, else whether this is its second pass.
    """

    def __init__(self, refiner: Refiner, model: Model, options: Options, plan: SamplingPlan,
                 encode: Callable[[Model], Any], plan_for: Callable[[Model], SamplingPlan],
                 hires: bool | None = None):
        self.refiner, self.model, self.options, self.plan = refiner, model, options, plan
        self.encode, self.plan_for, self.hires = encode, plan_for, hires
        self.extra_params: dict[str, Any] = {}

    def __call__(self, cfg: CFGDenoiser, sigma: torch.Tensor) -> None:
        if self.options.refiner_switch_by_sample_steps:
            done = cfg.step / cfg.total_steps
            self.extra_params["Refiner switch by sampling steps"] = True
        else:
            done = float((999 - self._timestep(sigma)) / 1000)
        switch_at = self.refiner.switch_at
        if (switch_at is not None and done < switch_at) or self.model is self.refiner.model or not self._in_this_pass():
            return
        refiner = self.refiner.model
        conds = self.encode(refiner)
        cfg.inner = model_denoiser(self.plan_for(refiner), unet_call(refiner, self.options))
        cfg.guidance = dataclasses.replace(cfg.guidance, cond=conds.cond, uncond=conds.uncond)
        self.model = refiner

    def _timestep(self, sigma: torch.Tensor) -> int:
        """The model timestep of the call's σ (timestep samplers call with the timestep itself)."""
        if self.plan.discrete is None:
            return int(torch.max(sigma).to(dtype=torch.int))
        return int(torch.argmin(torch.abs(self.plan.discrete.sigmas.to(sigma.device) - torch.max(sigma))))

    def _in_this_pass(self) -> bool:
        """``hires_fix_refiner_pass``; records the infotext keys of a switch."""
        which = self.options.hires_fix_refiner_pass
        if self.hires is not None:
            if (which == "first pass" and self.hires) or (which == "second pass" and not self.hires):
                return False
            if which != "second pass":
                self.extra_params["Hires refiner"] = which
        self.extra_params["Refiner"] = self.refiner.model.short_title
        if self.refiner.switch_at is not None:
            self.extra_params["Refiner switch at"] = self.refiner.switch_at
        return True
