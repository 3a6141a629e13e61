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

from retouch.models.model import Model
from retouch.options import Options
from retouch.pipeline.sample import unet_call
from retouch.sampling.guidance import CFGDenoiser
from retouch.sampling.plan import SamplingPlan, model_denoiser


@dataclass(frozen=True)
class Refiner:
    model: Model
    switch_at: float


def check_refiner(refiner: Model, model: Model, field: str = "refiner_checkpoint") -> None:
    """A refiner must take the same latents and the same extra UNet input as the model it takes over from."""
    if refiner.latent_format != model.latent_format:
        raise ValueError(f"{field}: {refiner.name} works in another latent space than {model.name} "
                         f"({refiner.latent_format.channels} channels, scale {refiner.latent_format.scale_factor} vs "
                         f"{model.latent_format.channels}, {model.latent_format.scale_factor}); choose a checkpoint "
                         "of the same family")
    same_schedule = refiner.schedule.v_prediction == model.schedule.v_prediction and torch.equal(
        refiner.schedule.alphas_cumprod, model.schedule.alphas_cumprod)
    if not same_schedule:
        raise ValueError(f"{field}: {refiner.name} has another noise schedule or prediction type than {model.name}; "
                         "choose a checkpoint of the same family")
    if refiner.unet_input != model.unet_input:
        raise ValueError(f"{field}: {refiner.name} is a {refiner.unet_input.name.lower()} model and {model.name} a "
                         f"{model.unet_input.name.lower()} one; a refiner must take the same UNet input")


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
        if done < self.refiner.switch_at or self.model is self.refiner.model or not self._in_this_pass():
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
        self.extra_params["Refiner switch at"] = self.refiner.switch_at
        return True
