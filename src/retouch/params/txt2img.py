"""txt2img and hires fix: :class:`Txt2ImgParams` (A1111's ``StableDiffusionProcessingTxt2Img`` fields and class
defaults) and the second pass's size, :func:`hires_target` (A1111's ``calculate_target_resolution``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from retouch.options import Options
from retouch.params.checks import MAX_SIDE, check_bool, check_int, check_number, check_ratio, check_text
from retouch.params.generation import GenerationParams, Job, field_spec

# A1111's ``shared.latent_upscale_modes``: the hires upscalers that resize the latent itself.
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
DEFAULT_LATENT_MODE = "Latent"  # A1111's latent_upscale_default_mode: hr_upscaler None
SAME_SAMPLER, SAME_SCHEDULER, SAME_CHECKPOINT = "Use same sampler", "Use same scheduler", "Use same checkpoint"
LATENT_FACTOR = 8


@dataclass
class Txt2ImgParams(GenerationParams):
    """A txt2img job (with the optional hires fix): A1111's ``StableDiffusionProcessingTxt2Img`` fields."""

    enable_hr: bool = field_spec(False, "hires fix: upscale the first pass and run an img2img pass over it")
    denoising_strength: float = field_spec(0.75, "hires fix: how much the second pass repaints")
    firstphase_width: int = field_spec(0, "old API: the first pass's width (width/height become the target)")
    firstphase_height: int = field_spec(0, "old API: the first pass's height")
    hr_scale: float = field_spec(2.0, "hires fix: upscale by this factor (unless hr_resize_x/y are given)")
    hr_upscaler: str | None = field_spec(None, "hires fix: a latent mode ('Latent', …) or an upscaler's name")
    hr_second_pass_steps: int = field_spec(0, "hires fix: steps of the second pass (0 = as the first)")
    hr_resize_x: int = field_spec(0, "hires fix: resize to this width (0 = from the height, keeping the aspect)")
    hr_resize_y: int = field_spec(0, "hires fix: resize to this height")
    hr_checkpoint_name: str | None = field_spec(None, "hires fix: run the second pass on this checkpoint")
    hr_sampler_name: str | None = field_spec(None, "hires fix: the second pass's sampler (default: the first's)")
    hr_scheduler: str | None = field_spec(None, "hires fix: the second pass's schedule type (default: the first's)")
    hr_prompt: str | list[str] = field_spec("", "hires fix: the second pass's prompt (empty = the prompt)")
    hr_negative_prompt: str | list[str] = field_spec("", "hires fix: the second pass's negative prompt")
    token_merging_ratio_hr: float = field_spec(0.0, "hires fix: token merging in the second pass (0: from the options)")

    def validate(self, options: Options | None = None) -> Job:
        """As :meth:`GenerationParams.validate`; ``firstphase_width/height`` (A1111's old API) are applied: they
        become ``width``/``height`` and the given size the hires target."""
        params = self
        if self.firstphase_width != 0 or self.firstphase_height != 0:
            for name in ("firstphase_width", "firstphase_height"):
                check_int(name, getattr(self, name), lo=8, hi=MAX_SIDE)
            params = dataclasses.replace(self, width=self.firstphase_width, height=self.firstphase_height,
                                         firstphase_width=0, firstphase_height=0)
        if self.enable_hr and options is not None and options.use_old_hires_fix_width_height:
            check_int("width", params.width, lo=8, hi=MAX_SIDE)
            check_int("height", params.height, lo=8, hi=MAX_SIDE)
            width, height = _old_first_pass_size(params.width, params.height)
            params = dataclasses.replace(params, hr_resize_x=params.width, hr_resize_y=params.height, width=width,
                                         height=height)
        return GenerationParams.validate(params, options)

    @property
    def hr_checkpoint(self) -> str | None:
        """The second pass's checkpoint name, or None for the job's own."""
        return None if self.hr_checkpoint_name in (None, "", SAME_CHECKPOINT) else self.hr_checkpoint_name

    @property
    def latent_mode(self) -> tuple[str, bool] | None:
        """``(interpolation, antialias)`` when the hires upscaler resizes the latent, else None."""
        return LATENT_UPSCALE_MODES.get(DEFAULT_LATENT_MODE if self.hr_upscaler is None else self.hr_upscaler)

    def _check_own(self) -> None:
        check_bool("enable_hr", self.enable_hr)
        check_number("denoising_strength", self.denoising_strength, lo=0.0)
        if self.denoising_strength > 1:
            raise ValueError(f"denoising_strength must be between 0 and 1, got {self.denoising_strength!r}")
        check_number("hr_scale", self.hr_scale, lo=0.0)
        check_int("hr_second_pass_steps", self.hr_second_pass_steps, lo=0, hi=1000)
        check_ratio("token_merging_ratio_hr", self.token_merging_ratio_hr)
        for name in ("hr_resize_x", "hr_resize_y"):
            check_int(name, getattr(self, name), lo=0, hi=MAX_SIDE)
        for name in ("hr_upscaler", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a name or null, got {value!r}"[:200])
        check_text("hr_prompt", self.hr_prompt)
        check_text("hr_negative_prompt", self.hr_negative_prompt, allow_none=True)
        if self.enable_hr:
            from retouch.sampling.registry import resolve_sampler_and_scheduler

            try:  # names checked before work
                resolve_sampler_and_scheduler(self.hr_sampler, self.hr_scheduler_name)
            except ValueError as e:
                raise ValueError(f"hr_{e}") from None  # "sampler_name: …" → "hr_sampler_name: …"
            target = hires_target(self)
            if target.width < LATENT_FACTOR or target.height < LATENT_FACTOR or \
                    max(target.upscale_to_x, target.upscale_to_y) > MAX_SIDE:
                raise ValueError(f"hr_scale / hr_resize_x / hr_resize_y: the hires size must be between "
                                 f"{LATENT_FACTOR} and {MAX_SIDE} pixels a side, got {target.width}x{target.height}")

    @property
    def hr_sampler(self) -> str | None:
        """The second pass's sampler name (None: the first pass's)."""
        return None if self.hr_sampler_name in (None, "", SAME_SAMPLER) else self.hr_sampler_name

    @property
    def hr_scheduler_name(self) -> str | None:
        """The second pass's schedule type (None: the first pass's)."""
        return None if self.hr_scheduler in (None, "", SAME_SCHEDULER) else self.hr_scheduler


Txt2ImgJob = Job[Txt2ImgParams]


@dataclass(frozen=True)
class HiresTarget:
    """Where the hires fix takes the first pass (A1111's ``hr_upscale_to_x/y``, ``truncate_x/y``).

    ``first_width/height``: the first pass's size; the first pass is upscaled to ``upscale_to_x × upscale_to_y``, then its latent loses ``truncate_x/y``
    columns/rows (half at each side) to match an asked-for aspect ratio. ``extra``: the infotext key.
    """

    first_width: int
    first_height: int
    upscale_to_x: int
    upscale_to_y: int
    truncate_x: int = 0
    truncate_y: int = 0
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def width(self) -> int:
        """The final image's width."""
        return (self.upscale_to_x // LATENT_FACTOR - self.truncate_x) * LATENT_FACTOR

    @property
    def height(self) -> int:
        return (self.upscale_to_y // LATENT_FACTOR - self.truncate_y) * LATENT_FACTOR

    def truncate(self, latents: Any) -> Any:
        """The latents cropped as A1111 crops them (``truncate // 2`` from the start, the rest from the end)."""
        h, w = latents.shape[2], latents.shape[3]
        return latents[:, :, self.truncate_y // 2:h - (self.truncate_y + 1) // 2,
                       self.truncate_x // 2:w - (self.truncate_x + 1) // 2]


def hires_target(params: Txt2ImgParams) -> HiresTarget:
    """The hires fix's target size (A1111 ``calculate_target_resolution``; its ``use_old_hires_fix_width_height``
    was applied by :meth:`Txt2ImgParams.validate`)."""
    width, height = params.width, params.height
    resize_x, resize_y = params.hr_resize_x, params.hr_resize_y
    if resize_x == 0 and resize_y == 0:
        return HiresTarget(width, height, int(width * params.hr_scale), int(height * params.hr_scale),
                           extra=(("Hires upscale", params.hr_scale),))
    extra = (("Hires resize", f"{resize_x}x{resize_y}"),)
    if resize_y == 0:
        return HiresTarget(width, height, resize_x, resize_x * height // width, extra=extra)
    if resize_x == 0:
        return HiresTarget(width, height, resize_y * width // height, resize_y, extra=extra)
    if width / height < resize_x / resize_y:
        to_x, to_y = resize_x, resize_x * height // width
    else:
        to_x, to_y = resize_y * width // height, resize_y
    return HiresTarget(width, height, to_x, to_y, (to_x - resize_x) // LATENT_FACTOR,
                       (to_y - resize_y) // LATENT_FACTOR, extra)


def _old_first_pass_size(width: int, height: int) -> tuple[int, int]:
    """A1111's ``old_hires_fix_first_pass_dimensions``: about 512² pixels, sides rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
