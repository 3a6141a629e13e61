"""The parameters of an img2img / inpainting job: one object, validated once, at the edge.

:class:`Img2ImgParams` holds A1111's field names and class defaults (spec §2.1–§2.2). The CLI
generates its flags from these fields and the HTTP API fills them from requests; every edge then
calls :meth:`Img2ImgParams.validate`, which raises ``ValueError`` naming the field and the bad value,
or returns an :class:`Img2ImgJob`: the parameters with the sampler and schedule resolved to objects
and the seeds expanded. Nothing below the edges validates again.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from PIL import Image

from retouch.imageops.resize import oriented_size
from retouch.modes import InpaintFill, ResizeMode
from retouch.options import Options
from retouch.prompt_parser import check_prompt_size
from retouch.soft_inpainting import SoftInpainting

if TYPE_CHECKING:
    from retouch.sampling.registry import SamplerSpec
    from retouch.sampling.schedules import Scheduler

__all__ = ["GenerationParams", "Img2ImgJob", "Img2ImgParams", "Job", "InpaintFill", "Resolved", "ResizeMode", "check_supported", "expand_seeds",
           "fixed_seed"]

MAX_SIDE = 16384
MAX_STEPS = 1000
MAX_BATCH = 64
MAX_ITERATIONS = 10000
# Seeds are used as given, negatives included (torch maps them into uint64; spec §5.1). Within ±2^63 a seed
# plus its batch offset and ENSD (< 2^33) stays a valid 64-bit generator seed.
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1


def _f(default: Any = None, help: str = "", cli: bool = True, factory: Any = None) -> Any:
    meta = {"help": help, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class GenerationParams:
    """What every generation shares (A1111's ``StableDiffusionProcessing``): prompts, seeds, sampler, size,
    batches. :class:`Img2ImgParams` adds where the first latents come from (init images, masks, strength)."""

    prompt: str | list[str] = _f("", "the prompt (A1111 syntax: (emphasis:1.2), [from:to:when], AND, BREAK)")
    negative_prompt: str | list[str] = _f("", "the negative prompt")
    styles: list[str] = _f(help="names of saved styles to apply", factory=list)
    seed: int | str | list[int] | None = _f(-1, "seed; -1 = random")
    subseed: int | str | list[int] | None = _f(-1, "variation seed; -1 = random")
    subseed_strength: float = _f(0.0, "variation strength (0 = off)")
    seed_resize_from_h: int = _f(-1, "make the noise of an image this high (with --seed-resize-from-w)")
    seed_resize_from_w: int = _f(-1, "make the noise of an image this wide (with --seed-resize-from-h)")
    sampler_name: str | None = _f(None, "sampler, e.g. 'Euler a', 'DPM++ 2M' (default DPM++ 2M)")
    scheduler: str | None = _f(None, "schedule type, e.g. Automatic, Karras, Exponential")
    batch_size: int = _f(1, "images per batch")
    n_iter: int = _f(1, "number of batches")
    steps: int = _f(50, "sampling steps (img2img runs int(steps × denoising strength) + 1 of them)")
    cfg_scale: float = _f(7.0, "classifier-free guidance scale")
    width: int = _f(512, "processing width in pixels")
    height: int = _f(512, "processing height in pixels")
    restore_faces: bool | None = _f(None, "face restoration (not supported: must be off)")
    tiling: bool | None = _f(None, "seamless tiling (circular padding)")
    eta: float | None = _f(None, "eta for ancestral/SDE/DDIM samplers (default from options)")
    s_min_uncond: float | None = _f(None, "NGMS: skip the negative prompt below this sigma")
    s_churn: float | None = _f(None, "sigma churn (Euler, Heun, DPM2)")
    s_tmin: float | None = _f(None, "sigma tmin")
    s_tmax: float | None = _f(None, "sigma tmax (0 = infinity)")
    s_noise: float | None = _f(None, "sigma noise")
    disable_extra_networks: bool = _f(False, "strip <lora:…> tags without applying them")

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
        _check_text("prompt", self.prompt)
        _check_text("negative_prompt", self.negative_prompt, allow_none=True)
        if not isinstance(self.styles, list | tuple) or not all(isinstance(s, str) for s in self.styles):
            raise ValueError(f"styles must be a list of style names, got {self.styles!r}")
        for name in ("seed", "subseed"):
            _check_seed(name, getattr(self, name))
        _check_number("subseed_strength", self.subseed_strength)
        for name in ("seed_resize_from_h", "seed_resize_from_w"):
            _check_int(name, getattr(self, name), lo=-1, hi=MAX_SIDE)
        _check_int("batch_size", self.batch_size, lo=1, hi=MAX_BATCH)
        _check_int("n_iter", self.n_iter, lo=1, hi=MAX_ITERATIONS)
        _check_int("steps", self.steps, lo=1, hi=MAX_STEPS)
        _check_number("cfg_scale", self.cfg_scale)
        _check_int("width", self.width, lo=8, hi=MAX_SIDE)
        _check_int("height", self.height, lo=8, hi=MAX_SIDE)
        for name in ("restore_faces", "tiling"):
            _check_bool(name, getattr(self, name), allow_none=True)
        _check_bool("disable_extra_networks", self.disable_extra_networks)
        if self.restore_faces:
            raise ValueError("restore_faces: face restoration (CodeFormer/GFPGAN) is not supported by retouch; "
                             "set it to false")
        for name in ("eta", "s_min_uncond", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            _check_number(name, getattr(self, name), lo=0.0, allow_none=True)

    def _check_own(self) -> None:
        """The checks of the fields a kind of job adds (none here)."""


@dataclass
class Img2ImgParams(GenerationParams):
    """An img2img / inpainting job: A1111's ``StableDiffusionProcessingImg2Img`` fields and class defaults."""

    denoising_strength: float = _f(0.75, "how much of the image to repaint: 0 keeps it, 1 repaints it all")
    init_images: list[Image.Image] = _f(help="source images", factory=list, cli=False)
    resize_mode: int = _f(0, "0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale")
    image_cfg_scale: float | None = _f(None, "image guidance for instruct-pix2pix models")
    image_mask: Image.Image | None = _f(None, "inpainting mask (white = repaint)", cli=False)
    mask_blur_x: int = _f(4, "horizontal mask blur (Gaussian sigma, px)")
    mask_blur_y: int = _f(4, "vertical mask blur (Gaussian sigma, px)")
    mask_round: bool = _f(True, "binarise the mask")
    inpainting_fill: int = _f(0, "masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpaint_full_res: bool = _f(True, "inpaint only the masked area at full resolution")
    inpaint_full_res_padding: int = _f(0, "padding around the masked area (px)")
    inpainting_mask_invert: int = _f(0, "1 = repaint what is NOT masked")
    initial_noise_multiplier: float | None = _f(None, "scale of the initial noise (default from options)")
    latent_mask: Image.Image | None = _f(None, "separate mask for the latent blend", cli=False)
    soft_inpainting: SoftInpainting | None = _f(None, "soft inpainting settings (A1111's built-in extension)",
                                                cli=False)

    @property
    def uses_soft_inpainting(self) -> bool:
        """Soft inpainting is on and there is a mask (without one the extension does nothing)."""
        return self.soft_inpainting is not None and self.image_mask is not None

    @property
    def rounds_mask(self) -> bool:
        """``mask_round`` as the job uses it: soft inpainting switches it off."""
        return self.mask_round and not self.uses_soft_inpainting

    def _check_own(self) -> None:
        for name in ("mask_round", "inpaint_full_res"):
            _check_bool(name, getattr(self, name))
        _check_number("initial_noise_multiplier", self.initial_noise_multiplier, lo=0.0, allow_none=True)
        _check_number("image_cfg_scale", self.image_cfg_scale, allow_none=True)
        _check_number("denoising_strength", self.denoising_strength, lo=0.0)
        _check_images("init_images", self.init_images)
        if len(self.init_images) > self.batch_size:
            raise ValueError(f"init_images: bad number of images passed: {len(self.init_images)}; "
                             f"expecting {self.batch_size} or less")
        _check_choice("resize_mode", self.resize_mode, ResizeMode)
        for name in ("mask_blur_x", "mask_blur_y", "inpaint_full_res_padding"):
            _check_int(name, getattr(self, name), lo=0, hi=MAX_SIDE)
        _check_choice("inpainting_fill", self.inpainting_fill, InpaintFill)
        invert = self.inpainting_mask_invert
        _check_int("inpainting_mask_invert", int(invert) if isinstance(invert, bool) else invert, lo=0, hi=1)
        for name in ("image_mask", "latent_mask"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Image.Image):
                raise ValueError(f"{name} must be a PIL image or None, got {type(value).__name__}")
        if self.soft_inpainting is not None:
            if not isinstance(self.soft_inpainting, SoftInpainting):
                raise ValueError(f"soft_inpainting must be a SoftInpainting or None, got "
                                 f"{type(self.soft_inpainting).__name__}")
            self.soft_inpainting.validate()
        _check_inpaint_sizes(self)

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
    return Resolved(tiling=bool(given("tiling")), noise_multiplier=float(given("initial_noise_multiplier")),
                    s_min_uncond=float(given("s_min_uncond")), eta=float(eta), churn=churn,
                    churn_from_options=frozenset(forced))


def check_supported(job: Job, options: Options) -> None:
    """Settings A1111 honours that retouch cannot: refuse them rather than ignore them."""
    o = job.params
    unsupported = {
        "sd_vae_encode_method": options.sd_vae_encode_method != "Full",
        "sd_vae_decode_method": options.sd_vae_decode_method != "Full",
        "upscaler_for_img2img": options.upscaler_for_img2img not in (None, "", "None"),
        "token_merging_ratio": options.token_merging_ratio > 0 or options.token_merging_ratio_img2img > 0,
        "use_old_emphasis_implementation": options.use_old_emphasis_implementation,
        "face_restoration": bool(o.restore_faces) or (o.restore_faces is None and options.face_restoration),
        "sd_hypernetwork": options.sd_hypernetwork not in ("", "None"),
    }
    for name, used in unsupported.items():
        if used:
            raise ValueError(f"{name}: not supported by retouch (TAESD, upscaler models, token merging, face "
                             "restoration, refiner switching, hypernetworks and the pre-1.0 emphasis are out of "
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


Img2ImgJob = Job[Img2ImgParams]


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


def _check_inpaint_sizes(params: Img2ImgParams) -> None:
    """Fail before sampling where A1111 fails after it ("images do not match", spec §9.7–§9.8)."""
    if params.image_mask is None or params.inpaint_full_res:
        return
    if params.width % 8 or params.height % 8:
        raise ValueError(f"width/height: images do not match — whole-picture inpainting needs a width and height "
                         f"that are multiples of 8, got {params.width}x{params.height}")
    if params.resize_mode == 3 and any(oriented_size(img) != (params.width, params.height)
                                       for img in params.init_images):
        raise ValueError("resize_mode: images do not match — latent upscale (3) cannot inpaint an image whose size "
                         "differs from width x height; use resize mode 0-2")


def _check_text(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, str):
        check_prompt_size(name, value)
        return
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        for i, text in enumerate(value):
            check_prompt_size(f"{name}[{i}]", text)
        return
    raise ValueError(f"{name} must be a string or a non-empty list of strings, got {str(value)[:100]!r}")


def _check_seed(name: str, value: Any) -> None:
    if value is None:
        return  # A1111: None means "random"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return  # A1111: an unparsable string means "random"
    if isinstance(value, list | tuple):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{name} must be an integer or a non-empty list of integers, got {value!r}")
        for v in value:
            _check_int(name, v, lo=MIN_SEED, hi=MAX_SEED)
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    _check_int(name, value, lo=MIN_SEED, hi=MAX_SEED)


def _check_bool(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value!r}")


def _check_number(name: str, value: Any, lo: float | None = None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")


def _check_choice(name: str, value: Any, enum: type[IntEnum]) -> None:
    valid = [int(e) for e in enum]
    if isinstance(value, bool) or value not in valid:
        labels = ", ".join(f"{int(e)} ({e.name.lower().replace('_', ' ')})" for e in enum)
        raise ValueError(f"{name} must be one of {labels}, got {value!r}")


def _check_images(name: str, value: Any) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{name} must be a non-empty list of images, got {value!r}")
    for i, image in enumerate(value):
        if not isinstance(image, Image.Image):
            raise ValueError(f"{name}[{i}] must be a PIL image, got {type(image).__name__}")
        width, height = oriented_size(image)
        if width < 1 or height < 1:
            raise ValueError(f"{name}[{i}] is empty ({width}x{height})")
