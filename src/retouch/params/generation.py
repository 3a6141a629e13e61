"""What every generation job shares: :class:`GenerationParams` (A1111's ``StableDiffusionProcessing`` fields), how
its ``None`` fields resolve under the job's options (:class:`Resolved`), and the validated :class:`Job`.

The kinds of job add their own fields: :class:`~retouch.params.img2img.Img2ImgParams` (init images, masks,
strength) and :class:`~retouch.params.txt2img.Txt2ImgParams` (hires fix). Every edge calls ``validate``, which
raises ``ValueError`` naming the field and the bad value, or returns the :class:`Job`; nothing below validates
again.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from retouch.options import Options
from retouch.params.checks import (
    MAX_SIDE,
    check_bool,
    check_int,
    check_number,
    check_ratio,
    check_seed,
    check_text,
)

if TYPE_CHECKING:
    from retouch.sampling.registry import SamplerSpec
    from retouch.sampling.schedules import Scheduler

MAX_STEPS = 1000
MAX_BATCH = 64
MAX_ITERATIONS = 10000
NO_REFINER = (None, "", "None", "none")  # what A1111 reads as "no refiner"


def field_spec(default: Any = None, help: str = "", cli: bool = True, factory: Any = None) -> Any:
    meta = {"help": help, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class GenerationParams:
    """What every generation shares (A1111's ``StableDiffusionProcessing``): prompts, seeds, sampler, size,
    batches. :class:`Img2ImgParams` adds where the first latents come from (init images, masks, strength)."""

    prompt: str | list[str] = field_spec("", "the prompt (A1111 syntax: (emphasis:1.2), [from:to:when], AND, BREAK)")
    negative_prompt: str | list[str] = field_spec("", "the negative prompt")
    styles: list[str] = field_spec(help="names of saved styles to apply", factory=list)
    seed: int | str | list[int] | None = field_spec(-1, "seed; -1 = random")
    subseed: int | str | list[int] | None = field_spec(-1, "variation seed; -1 = random")
    subseed_strength: float = field_spec(0.0, "variation strength (0 = off)")
    seed_resize_from_h: int = field_spec(-1, "make the noise of an image this high (with --seed-resize-from-w)")
    seed_resize_from_w: int = field_spec(-1, "make the noise of an image this wide (with --seed-resize-from-h)")
    sampler_name: str | None = field_spec(None, "sampler, e.g. 'Euler a', 'DPM++ 2M' (default DPM++ 2M)")
    scheduler: str | None = field_spec(None, "schedule type, e.g. Automatic, Karras, Exponential")
    batch_size: int = field_spec(1, "images per batch")
    n_iter: int = field_spec(1, "number of batches")
    steps: int = field_spec(50, "sampling steps (img2img runs int(steps × denoising strength) + 1 of them)")
    cfg_scale: float = field_spec(7.0, "classifier-free guidance scale")
    width: int = field_spec(512, "processing width in pixels")
    height: int = field_spec(512, "processing height in pixels")
    restore_faces: bool | None = field_spec(None, "face restoration (not supported: must be off)")
    tiling: bool | None = field_spec(None, "seamless tiling (circular padding)")
    eta: float | None = field_spec(None, "eta for ancestral/SDE/DDIM samplers (default from options)")
    s_min_uncond: float | None = field_spec(None, "NGMS: skip the negative prompt below this sigma")
    s_churn: float | None = field_spec(None, "sigma churn (Euler, Heun, DPM2)")
    s_tmin: float | None = field_spec(None, "sigma tmin")
    s_tmax: float | None = field_spec(None, "sigma tmax (0 = infinity)")
    s_noise: float | None = field_spec(None, "sigma noise")
    disable_extra_networks: bool = field_spec(False, "strip <lora:…> tags without applying them")
    refiner_checkpoint: str | None = field_spec(None, "switch to this checkpoint during sampling (a name, as listed)")
    refiner_switch_at: float | None = field_spec(None, "the share of sampling done when the refiner takes over (0-1; None: from the start)")
    token_merging_ratio: float = field_spec(0.0, "token merging for this job (0-0.9; 0: from the options)")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def validate(self, options: Options | None = None) -> Job:
        """Check every field against ``options`` (the job's: ``override_settings`` applied; default
        :class:`Options`); raise ``ValueError("<field> …, got <value>")`` on the first bad one, or naming an
        option retouch does not support.

        Returns the resolved job: sampler and schedule objects, seeds expanded (-1 drawn at random), and what
        every field left to the options means (:class:`Resolved`). Nothing below decides these again.
        """
        options = options or Options()
        self._check_shared()
        self._check_own()
        from retouch.sampling.registry import resolve_sampler_and_scheduler

        sampler, scheduler = resolve_sampler_and_scheduler(self.sampler_name, self.scheduler)
        seeds, subseeds = expand_seeds(self, image_count(self))
        job = Job(self, sampler, scheduler, seeds, subseeds)
        check_supported(job, options)
        return dataclasses.replace(job, resolved=resolve(self, sampler, options))

    def _check_shared(self) -> None:
        check_text("prompt", self.prompt)
        check_text("negative_prompt", self.negative_prompt, allow_none=True)
        if not isinstance(self.styles, list | tuple) or not all(isinstance(s, str) for s in self.styles):
            raise ValueError(f"styles must be a list of style names, got {self.styles!r}")
        for name in ("seed", "subseed"):
            check_seed(name, getattr(self, name))
        check_number("subseed_strength", self.subseed_strength)
        for name in ("seed_resize_from_h", "seed_resize_from_w"):
            check_int(name, getattr(self, name), lo=-1, hi=MAX_SIDE)
        check_int("batch_size", self.batch_size, lo=1, hi=MAX_BATCH)
        check_int("n_iter", self.n_iter, lo=1, hi=MAX_ITERATIONS)
        check_int("steps", self.steps, lo=1, hi=MAX_STEPS)
        check_number("cfg_scale", self.cfg_scale)
        check_int("width", self.width, lo=8, hi=MAX_SIDE)
        check_int("height", self.height, lo=8, hi=MAX_SIDE)
        for name in ("restore_faces", "tiling"):
            check_bool(name, getattr(self, name), allow_none=True)
        check_bool("disable_extra_networks", self.disable_extra_networks)
        if self.restore_faces:
            raise ValueError("restore_faces: face restoration (CodeFormer/GFPGAN) is not supported by retouch; "
                             "set it to false")
        for name in ("eta", "s_min_uncond", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            check_number(name, getattr(self, name), lo=0.0, allow_none=True)
        check_ratio("token_merging_ratio", self.token_merging_ratio)
        if self.refiner_checkpoint not in NO_REFINER:
            if not isinstance(self.refiner_checkpoint, str):
                raise ValueError(f"refiner_checkpoint must be a checkpoint name, got {self.refiner_checkpoint!r}")
            # None: the refiner from the first step (A1111 switches unless a switch point says not yet)
            check_number("refiner_switch_at", self.refiner_switch_at, lo=0.0, allow_none=True)
            if self.refiner_switch_at is not None and self.refiner_switch_at > 1:
                raise ValueError(f"refiner_switch_at must be between 0 and 1, got {self.refiner_switch_at!r}")

    @property
    def refiner(self) -> str | None:
        """The refiner checkpoint's name, or None without one."""
        return None if self.refiner_checkpoint in NO_REFINER else self.refiner_checkpoint

    def _check_own(self) -> None:
        """The checks of the fields a kind of job adds (none here)."""


CHURN_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}


@dataclass(frozen=True)
class Resolved:
    """What a job's fields left to the options mean (A1111: ``None`` = the option), decided once in
    :meth:`GenerationParams.validate` under the job's options."""

    tiling: bool = False
    noise_multiplier: float = 1.0  # initial_noise_multiplier
    s_min_uncond: float = 0.0  # NGMS
    eta: float = 1.0  # the sampler family's eta (eta_ddim or eta_ancestral) unless the job gives one
    churn: Mapping[str, float] = field(default_factory=lambda: dict(CHURN_DEFAULTS))  # s_churn, s_tmin, s_tmax, s_noise
    churn_from_options: frozenset[str] = frozenset()  # the ones a non-default option forced (A1111 quirk, §9.13)
    token_merging_ratio: float = 0.0  # A1111 get_token_merging_ratio(): the (first) pass's
    token_merging_ratio_hr: float = 0.0  # … and a hires pass's (for_hr=True)


def resolve(params: GenerationParams, sampler: SamplerSpec, options: Options) -> Resolved:
    """The job's :class:`Resolved` values (spec §2.1, §9.13)."""
    def given(name: str) -> Any:
        value = getattr(params, name, None)  # initial_noise_multiplier: img2img's only
        return value if value is not None else getattr(options, name)

    churn = {name: given(name) for name in CHURN_DEFAULTS}
    from_options = {name: getattr(options, name) for name in CHURN_DEFAULTS}
    churn["s_tmax"], from_options["s_tmax"] = churn["s_tmax"] or float("inf"), from_options["s_tmax"] or float("inf")
    forced = {name for name, default in CHURN_DEFAULTS.items() if from_options[name] != default}
    churn.update({name: from_options[name] for name in forced})  # a non-default option wins (A1111 quirk)
    eta = params.eta if params.eta is not None else (options.eta_ddim if sampler.uses_timesteps
                                                     else options.eta_ancestral)
    multiplier = given("initial_noise_multiplier") if hasattr(params, "initial_noise_multiplier") else 1.0  # img2img's
    return Resolved(tiling=bool(given("tiling")), noise_multiplier=float(multiplier),
                    s_min_uncond=float(given("s_min_uncond")), eta=float(eta), churn=churn,
                    churn_from_options=frozenset(forced), **_merging_ratios(params, options))


def _merging_ratios(params: GenerationParams, options: Options) -> dict[str, float]:
    """A1111's ``get_token_merging_ratio()``: img2img's own option before the general one, unless the job's
    ``override_settings`` set the general one; a hires pass's own before the first pass's."""
    own = params.token_merging_ratio
    if hasattr(params, "init_images"):
        overridden = options.token_merging_ratio if "token_merging_ratio" in options.overridden else 0.0
        first = own or overridden or options.token_merging_ratio_img2img or options.token_merging_ratio
    else:
        first = own or options.token_merging_ratio
    hires = getattr(params, "token_merging_ratio_hr", 0.0) or options.token_merging_ratio_hr or own \
        or options.token_merging_ratio
    return {"token_merging_ratio": float(first), "token_merging_ratio_hr": float(hires)}


def check_supported(job: Job, options: Options) -> None:
    """Settings A1111 honours that retouch cannot: refuse them rather than ignore them."""
    o = job.params
    unsupported = {
        "sd_vae_encode_method": options.sd_vae_encode_method != "Full",
        "sd_vae_decode_method": options.sd_vae_decode_method != "Full",
        "use_old_emphasis_implementation": options.use_old_emphasis_implementation,
        "face_restoration": bool(o.restore_faces) or (o.restore_faces is None and options.face_restoration),
        "sd_hypernetwork": options.sd_hypernetwork not in ("", "None"),
    }
    for name, used in unsupported.items():
        if used:
            raise ValueError(f"{name}: not supported by retouch (TAESD, face "
                             "restoration, hypernetworks and the pre-1.0 emphasis are out of "
                             "scope); leave it at its default")


P = TypeVar("P", bound=GenerationParams)


@dataclass(frozen=True)
class Job(Generic[P]):
    """Validated parameters with everything resolved that can be resolved without a model.

    ``seeds`` / ``subseeds``: one per image of the job (A1111 ``all_seeds`` / ``all_subseeds``); ``resolved``:
    what the fields left to the options mean.
    """

    params: P
    sampler: SamplerSpec
    scheduler: Scheduler
    seeds: list[int]
    subseeds: list[int]
    resolved: Resolved = field(default_factory=Resolved)


def image_count(params: GenerationParams) -> int:
    """How many images a job makes before batching (A1111 ``len(all_prompts)``)."""
    if isinstance(params.prompt, list):
        return len(params.prompt)
    if isinstance(params.negative_prompt, list):
        return len(params.negative_prompt)
    return params.batch_size * params.n_iter


def fixed_seed(seed: int | str | None) -> int:
    """A1111 ``get_fixed_seed``: -1, None, "" and unparsable strings → random in [0, 4294967293]."""
    if seed is None or seed == "":
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    if seed == -1:
        return int(random.randrange(4294967294))
    return int(seed)


def expand_seeds(params: GenerationParams, n: int) -> tuple[list[int], list[int]]:
    """``(all_seeds, all_subseeds)`` for ``n`` images (spec §5.1–§5.2)."""
    if isinstance(params.seed, list):
        all_seeds = [int(s) for s in params.seed]
    else:
        seed = fixed_seed(params.seed)
        all_seeds = [seed + (k if params.subseed_strength == 0 else 0) for k in range(n)]
    if isinstance(params.subseed, list):
        all_subseeds = [int(s) for s in params.subseed]
    else:
        subseed = fixed_seed(params.subseed)
        all_subseeds = [subseed + k for k in range(n)]
    return all_seeds, all_subseeds


