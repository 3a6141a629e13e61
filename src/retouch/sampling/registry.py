"""A1111 v1.10.1's samplers and schedule types by name, and how a name resolves (spec §4.1).

One :class:`SamplerSpec` per sampler says everything the pipeline needs to run it: which function,
how it is called (:class:`CallStyle`), which schedule "Automatic" means for it, which options it
takes. Dispatch is a table lookup, never a comparison of display names.

Deliberate improvement over A1111: an unknown sampler or schedule name is a ``ValueError`` that lists
the valid names (A1111 silently runs DPM++ 2M / Automatic instead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from retouch.sampling import dpm_solver, samplers, timesteps
from retouch.sampling.schedules import SCHEDULERS, Scheduler


class SamplerKind(Enum):
    """What the sampler integrates over, and so which model denoiser it needs."""

    SIGMAS = "k-diffusion"  # σ schedule, denoiser D(x, σ)
    TIMESTEPS = "timestep"  # integer timesteps, ε(x, t) (DDIM, PLMS, UniPC: blend before each call)
    LCM = "lcm"  # σ schedule over LCM's 50 distilled timesteps


class CallStyle(Enum):
    """The sampler function's positional arguments after ``(model, x)``."""

    SIGMAS = "sigmas"  # (sigmas)
    SIGMA_RANGE = "sigma_range"  # sigma_min=, sigma_max= (DPM adaptive)
    SIGMA_RANGE_STEPS = "sigma_range_steps"  # sigma_min=, sigma_max=, n= (DPM fast)
    TIMESTEPS = "timesteps"  # (timesteps), alphas_cumprod=


# Keyword arguments a spec draws from the job's options: sampler keyword → Options field.
_UNIPC_OPTIONS = {"variant": "uni_pc_variant", "order": "uni_pc_order", "skip_type": "uni_pc_skip_type",
                  "lower_order_final": "uni_pc_lower_order_final"}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    function: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    kind: SamplerKind = SamplerKind.SIGMAS
    call: CallStyle = CallStyle.SIGMAS
    scheduler: str | None = None  # what "Automatic" means for this sampler (None: the model's own)
    second_order: bool = False  # two denoiser calls per step → conds scheduled over 2·steps
    brownian_noise: bool = False  # SDE samplers: noise from a Brownian tree
    uses_ensd: bool = False
    discard_next_to_last_sigma: bool = False
    solver_type: str | None = None
    takes_eta: bool = False
    churn_params: tuple[str, ...] = ()  # which of s_churn/s_tmin/s_tmax/s_noise the function takes
    cfg_scale_multiplier: float = 1.0  # DDIM CFG++ guides with cfg_scale / 12.5
    needs_a_step: bool = False  # refuses an empty schedule (UniPC) instead of returning the input
    option_kwargs: Mapping[str, str] = field(default_factory=dict)

    @property
    def uses_timesteps(self) -> bool:
        return self.kind is SamplerKind.TIMESTEPS

    def total_steps(self, steps: int) -> int:
        """Steps the prompt schedules are built for (A1111 ``Sampler.total_steps``)."""
        return steps * 2 if self.second_order else steps

    def fixed_kwargs(self) -> dict[str, Any]:
        return {"solver_type": self.solver_type} if self.solver_type else {}


_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_NOISE = ("s_noise",)
_S, _T = SamplerKind, CallStyle

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", samplers.sample_dpmpp_2m, ("k_dpmpp_2m",), scheduler="karras"),
    SamplerSpec("DPM++ SDE", samplers.sample_dpmpp_sde, ("k_dpmpp_sde",), scheduler="karras", second_order=True,
                brownian_noise=True, takes_eta=True, churn_params=_NOISE),
    SamplerSpec("DPM++ 2M SDE", samplers.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde",), scheduler="exponential",
                brownian_noise=True, takes_eta=True, churn_params=_NOISE),
    SamplerSpec("DPM++ 2M SDE Heun", samplers.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde_heun",),
                scheduler="exponential", brownian_noise=True, solver_type="heun", takes_eta=True,
                churn_params=_NOISE),
    SamplerSpec("DPM++ 2S a", samplers.sample_dpmpp_2s_ancestral, ("k_dpmpp_2s_a",), scheduler="karras",
                uses_ensd=True, second_order=True, takes_eta=True, churn_params=_NOISE),
    SamplerSpec("DPM++ 3M SDE", samplers.sample_dpmpp_3m_sde, ("k_dpmpp_3m_sde",), scheduler="exponential",
                discard_next_to_last_sigma=True, brownian_noise=True, takes_eta=True, churn_params=_NOISE),
    SamplerSpec("Euler a", samplers.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"), uses_ensd=True,
                takes_eta=True),
    SamplerSpec("Euler", samplers.sample_euler, ("k_euler",), churn_params=_CHURN),
    SamplerSpec("LMS", samplers.sample_lms, ("k_lms",)),
    SamplerSpec("Heun", samplers.sample_heun, ("k_heun",), second_order=True, churn_params=_CHURN),
    SamplerSpec("DPM2", samplers.sample_dpm_2, ("k_dpm_2",), scheduler="karras", discard_next_to_last_sigma=True,
                second_order=True, churn_params=_CHURN),
    SamplerSpec("DPM2 a", samplers.sample_dpm_2_ancestral, ("k_dpm_2_a",), scheduler="karras",
                discard_next_to_last_sigma=True, uses_ensd=True, second_order=True, takes_eta=True,
                churn_params=_NOISE),
    SamplerSpec("DPM fast", dpm_solver.sample_dpm_fast, ("k_dpm_fast",), call=_T.SIGMA_RANGE_STEPS, uses_ensd=True,
                takes_eta=True, churn_params=_NOISE),
    SamplerSpec("DPM adaptive", dpm_solver.sample_dpm_adaptive, ("k_dpm_ad",), call=_T.SIGMA_RANGE, uses_ensd=True,
                takes_eta=True),
    SamplerSpec("Restart", samplers.sample_restart, ("restart",), scheduler="karras", second_order=True),
    SamplerSpec("DDIM", timesteps.sample_ddim, ("ddim",), kind=_S.TIMESTEPS, call=_T.TIMESTEPS, takes_eta=True),
    SamplerSpec("DDIM CFG++", timesteps.sample_ddim_cfgpp, ("ddim_cfgpp",), kind=_S.TIMESTEPS, call=_T.TIMESTEPS,
                takes_eta=True, cfg_scale_multiplier=1 / 12.5),
    SamplerSpec("PLMS", timesteps.sample_plms, ("plms",), kind=_S.TIMESTEPS, call=_T.TIMESTEPS),
    SamplerSpec("UniPC", timesteps.sample_unipc, ("unipc",), kind=_S.TIMESTEPS, call=_T.TIMESTEPS,
                needs_a_step=True, option_kwargs=_UNIPC_OPTIONS),
    SamplerSpec("LCM", samplers.sample_lcm, ("k_lcm",), kind=_S.LCM),
)

DEFAULT_SAMPLER = SAMPLERS[0]
_BY_NAME = {s.name: s for s in SAMPLERS}
_BY_LOWER = {**{a.lower(): s for s in SAMPLERS for a in s.aliases}, **{s.name.lower(): s for s in SAMPLERS}}
_SCHEDULER_BY_NAME = {**{s.name: s for s in SCHEDULERS}, **{s.label: s for s in SCHEDULERS}}


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def scheduler_labels() -> list[str]:
    return [s.label for s in SCHEDULERS]


def find_sampler(name: str) -> SamplerSpec:
    info = _BY_NAME.get(name) or _BY_LOWER.get(name.lower())
    if info is None:
        raise ValueError(f"sampler_name: unknown sampler {name!r}; valid names: {', '.join(sampler_names())}")
    return info


def find_scheduler(name: str) -> Scheduler:
    found = _SCHEDULER_BY_NAME.get(name) or next(
        (s for s in SCHEDULERS if name.lower() in (s.name.lower(), s.label.lower(), *map(str.lower, s.aliases))), None)
    if found is None:
        raise ValueError(f"scheduler: unknown schedule type {name!r}; valid names: {', '.join(scheduler_labels())}")
    return found


def resolve_sampler_and_scheduler(sampler_name: str | None, scheduler: str | None) -> tuple[SamplerSpec, Scheduler]:
    """A1111's ``get_sampler_and_scheduler`` (without converting to Automatic): an old-style name such
    as ``"DPM++ 2M Karras"`` is split into sampler and schedule type; ``None`` means the default."""
    if sampler_name is not None and not isinstance(sampler_name, str):
        raise ValueError(f"sampler_name must be a string, got {sampler_name!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be a string, got {scheduler!r}")
    found = find_scheduler(scheduler) if scheduler else SCHEDULERS[0]
    name = sampler_name or DEFAULT_SAMPLER.name
    if name not in _BY_NAME:
        for option in SCHEDULERS:
            suffix = next((n for n in (option.label, option.name, *option.aliases) if name.endswith(" " + n)), None)
            if suffix is not None and name[: -(len(suffix) + 1)].lower() in _BY_LOWER:
                found, name = option, name[: -(len(suffix) + 1)]
                break
    return find_sampler(name), found
