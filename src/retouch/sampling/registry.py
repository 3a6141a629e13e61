"""A1111 v1.10.1's samplers and schedule types by name, and how a name resolves (spec §4.1).

Deliberate improvement over A1111: an unknown sampler or schedule name is a ``ValueError`` that lists
the valid names (A1111 silently runs DPM++ 2M / Automatic instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retouch.sampling import dpm_solver, samplers, timesteps
from retouch.sampling.schedules import SCHEDULERS, Scheduler

KDIFFUSION, TIMESTEP, LCM = "k-diffusion", "timestep", "lcm"


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    function: Callable
    aliases: tuple[str, ...] = ()
    kind: str = KDIFFUSION
    scheduler: str | None = None  # what "Automatic" means for this sampler (None: model's own)
    second_order: bool = False  # two denoiser calls per step → conds scheduled over 2·steps
    brownian_noise: bool = False  # SDE samplers: noise from a Brownian tree
    uses_ensd: bool = False
    discard_next_to_last_sigma: bool = False
    solver_type: str | None = None
    takes_eta: bool = False
    churn_params: tuple[str, ...] = ()  # which of s_churn/s_tmin/s_tmax/s_noise the function takes
    sigma_range_args: bool = False  # DPM fast/adaptive: called with sigma_min/sigma_max (and n)

    def total_steps(self, steps: int) -> int:
        """Steps the prompt schedules are built for (A1111 ``Sampler.total_steps``)."""
        return steps * 2 if self.second_order else steps


_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_NOISE = ("s_noise",)

SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", samplers.sample_dpmpp_2m, ("k_dpmpp_2m",), scheduler="karras"),
    SamplerInfo("DPM++ SDE", samplers.sample_dpmpp_sde, ("k_dpmpp_sde",), scheduler="karras", second_order=True,
                brownian_noise=True, takes_eta=True, churn_params=_NOISE),
    SamplerInfo("DPM++ 2M SDE", samplers.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde",), scheduler="exponential",
                brownian_noise=True, takes_eta=True, churn_params=_NOISE),
    SamplerInfo("DPM++ 2M SDE Heun", samplers.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde_heun",),
                scheduler="exponential", brownian_noise=True, solver_type="heun", takes_eta=True,
                churn_params=_NOISE),
    SamplerInfo("DPM++ 2S a", samplers.sample_dpmpp_2s_ancestral, ("k_dpmpp_2s_a",), scheduler="karras",
                uses_ensd=True, second_order=True, takes_eta=True, churn_params=_NOISE),
    SamplerInfo("DPM++ 3M SDE", samplers.sample_dpmpp_3m_sde, ("k_dpmpp_3m_sde",), scheduler="exponential",
                discard_next_to_last_sigma=True, brownian_noise=True, takes_eta=True, churn_params=_NOISE),
    SamplerInfo("Euler a", samplers.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"), uses_ensd=True,
                takes_eta=True),
    SamplerInfo("Euler", samplers.sample_euler, ("k_euler",), churn_params=_CHURN),
    SamplerInfo("LMS", samplers.sample_lms, ("k_lms",)),
    SamplerInfo("Heun", samplers.sample_heun, ("k_heun",), second_order=True, churn_params=_CHURN),
    SamplerInfo("DPM2", samplers.sample_dpm_2, ("k_dpm_2",), scheduler="karras", discard_next_to_last_sigma=True,
                second_order=True, churn_params=_CHURN),
    SamplerInfo("DPM2 a", samplers.sample_dpm_2_ancestral, ("k_dpm_2_a",), scheduler="karras",
                discard_next_to_last_sigma=True, uses_ensd=True, second_order=True, takes_eta=True,
                churn_params=_NOISE),
    SamplerInfo("DPM fast", dpm_solver.sample_dpm_fast, ("k_dpm_fast",), uses_ensd=True, takes_eta=True,
                churn_params=_NOISE, sigma_range_args=True),
    SamplerInfo("DPM adaptive", dpm_solver.sample_dpm_adaptive, ("k_dpm_ad",), uses_ensd=True, takes_eta=True,
                sigma_range_args=True),
    SamplerInfo("Restart", samplers.sample_restart, ("restart",), scheduler="karras", second_order=True),
    SamplerInfo("DDIM", timesteps.sample_ddim, ("ddim",), kind=TIMESTEP, takes_eta=True),
    SamplerInfo("DDIM CFG++", timesteps.sample_ddim, ("ddim_cfgpp",), kind=TIMESTEP, takes_eta=True),
    SamplerInfo("PLMS", timesteps.sample_plms, ("plms",), kind=TIMESTEP),
    SamplerInfo("UniPC", timesteps.sample_unipc, ("unipc",), kind=TIMESTEP),
    SamplerInfo("LCM", samplers.sample_lcm, ("k_lcm",), kind=LCM),
)

DEFAULT_SAMPLER = SAMPLERS[0]
_BY_NAME = {s.name: s for s in SAMPLERS}
_BY_LOWER = {**{a.lower(): s for s in SAMPLERS for a in s.aliases}, **{s.name.lower(): s for s in SAMPLERS}}
_SCHEDULER_BY_NAME = {**{s.name: s for s in SCHEDULERS}, **{s.label: s for s in SCHEDULERS}}


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def scheduler_labels() -> list[str]:
    return [s.label for s in SCHEDULERS]


def find_sampler(name: str) -> SamplerInfo:
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


def resolve_sampler_and_scheduler(sampler_name: str | None, scheduler: str | None) -> tuple[SamplerInfo, Scheduler]:
    """A1111's ``get_sampler_and_scheduler`` (without converting to Automatic): an old-style name such
    as ``"DPM++ 2M Karras"`` is split into sampler and schedule type; ``None`` means the default."""
    found = find_scheduler(scheduler) if scheduler else SCHEDULERS[0]
    name = sampler_name or DEFAULT_SAMPLER.name
    if name not in _BY_NAME:
        for option in SCHEDULERS:
            suffix = next((n for n in (option.label, option.name, *option.aliases) if name.endswith(" " + n)), None)
            if suffix is not None and name[: -(len(suffix) + 1)].lower() in _BY_LOWER:
                found, name = option, name[: -(len(suffix) + 1)]
                break
    return find_sampler(name), found
