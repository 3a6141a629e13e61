"""A1111's field names → the core's parameters: the one edge adapter of the library's facades
(``StableDiffusionProcessingImg2Img`` / ``…Txt2Img``), the HTTP API (and the page, whose jobs are API requests) and the command
line. Every A1111 rule about *how a field is given* lives here, once:

* ``None`` prompts and styles are empty;
* ``sampler_index`` is the old name of ``sampler_name``; with neither, the API runs "Euler" (A1111's API
  default) and the library its class default;
* ``mask`` is ``image_mask``; ``mask_blur`` sets both axes (A1111's property);
* ``initial_noise_multiplier`` left ``None`` is the option's value *before* ``override_settings`` apply (A1111
  reads it when the processing object is made);
* soft inpainting comes as A1111's ``alwayson_scripts`` or as the ``soft_inpainting`` value, not both;
* the refiner comes as its fields or as A1111's ``Refiner`` always-on script (``[enabled, checkpoint, switch_at]``,
  which wins, as its ``setup()`` does);
* ``seed_enable_extras`` false drops the variation seed and seed resize (A1111's UI checkbox).

What ``None`` means for the job's other fields (tiling, eta, the sigma parameters, NGMS) is decided by
:meth:`retouch.params.Img2ImgParams.validate` under the job's options, also once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retouch.options import Options
from retouch.params import GenerationParams, Img2ImgParams, Txt2ImgParams
from retouch.soft_inpainting import parse_alwayson_scripts

API_DEFAULT_SAMPLER = "Euler"  # what A1111's API runs when a request names no sampler (its class default differs)
_IMAGE_FIELDS = ("init_images", "image_mask", "latent_mask")


REFINER_SCRIPT = "refiner"


def split_scripts(scripts: Any) -> tuple[Any, Any]:
    """A request's ``alwayson_scripts`` without the Refiner's, and the Refiner's args (None: not given)."""
    if not isinstance(scripts, Mapping):
        return scripts, None
    rest = {k: v for k, v in scripts.items() if str(k).lower() != REFINER_SCRIPT}
    refiner = next((v for k, v in scripts.items() if str(k).lower() == REFINER_SCRIPT), None)
    if refiner is None:
        return rest, None
    args = refiner.get("args") if isinstance(refiner, Mapping) else None
    if not isinstance(args, list | tuple) or not 1 <= len(args) <= 3:
        raise ValueError("alwayson_scripts['Refiner'].args must be [enabled, checkpoint, switch_at], got "
                         f"{str(args)[:100]}")
    return rest, list(args)


def _refiner(kwargs: dict[str, Any], args: list[Any] | None) -> None:
    """A1111's Refiner script ``setup()``: off (or no checkpoint) clears the refiner, on sets it."""
    if args is None:
        return
    enabled, checkpoint, switch_at = (*args, None, None)[:3]
    if not isinstance(enabled, bool):
        raise ValueError(f"alwayson_scripts['Refiner'].args[0] (enabled) must be true or false, got {enabled!r}")
    if not enabled or checkpoint in (None, "", "None"):
        kwargs.update(refiner_checkpoint=None, refiner_switch_at=None)
    else:
        kwargs.update(refiner_checkpoint=checkpoint, refiner_switch_at=0.8 if switch_at is None else switch_at)


def _shared(cls: type[GenerationParams], values: Mapping[str, Any], api: bool) -> dict[str, Any]:
    """The fields every kind of job takes, as A1111 reads them."""
    kwargs = {k: values[k] for k in cls.field_names() if k in values}
    _refiner(kwargs, split_scripts(values.get("alwayson_scripts"))[1])
    for name, empty in (("prompt", ""), ("negative_prompt", ""), ("styles", [])):
        if kwargs.get(name) is None:
            kwargs[name] = empty
    if kwargs.get("sampler_name") is None:
        kwargs["sampler_name"] = values.get("sampler_index") or (API_DEFAULT_SAMPLER if api else None)
    if values.get("seed_enable_extras") is False:
        kwargs.update(subseed=-1, subseed_strength=0, seed_resize_from_h=0, seed_resize_from_w=0)
    return kwargs


def txt2img_params(values: Mapping[str, Any], *, api: bool = False) -> Txt2ImgParams:
    """The txt2img job ``values`` (A1111 field names) stand for (``api``: the API's defaults)."""
    kwargs = _shared(Txt2ImgParams, values, api)
    for name in ("hr_prompt", "hr_negative_prompt"):
        if kwargs.get(name) is None:
            kwargs[name] = ""
    parse_alwayson_scripts(split_scripts(values.get("alwayson_scripts"))[0])  # soft inpainting needs a mask: no-op
    return Txt2ImgParams(**kwargs)


def img2img_params(values: Mapping[str, Any], *, base_options: Options, api: bool = False) -> Img2ImgParams:
    """The job parameters ``values`` (A1111 field names; images already decoded) stand for.

    ``base_options``: the options before the job's ``override_settings``. ``api``: apply the API's defaults.
    ``ValueError`` naming the field for what is given in two conflicting ways.
    """
    kwargs = _shared(Img2ImgParams, values, api)
    if values.get("mask") is not None and kwargs.get("image_mask") is None:
        kwargs["image_mask"] = values["mask"]
    if isinstance(values.get("mask_blur"), int) and not isinstance(values.get("mask_blur"), bool):
        kwargs["mask_blur_x"] = kwargs["mask_blur_y"] = values["mask_blur"]
    if kwargs.get("initial_noise_multiplier") is None:
        kwargs["initial_noise_multiplier"] = base_options.initial_noise_multiplier
    soft = parse_alwayson_scripts(split_scripts(values.get("alwayson_scripts"))[0])
    if soft is not None:
        if kwargs.get("soft_inpainting") not in (None, soft):
            raise ValueError("soft_inpainting: given both as a field and in alwayson_scripts; use one")
        kwargs["soft_inpainting"] = soft
    return Img2ImgParams(**kwargs)


def image_fields() -> tuple[str, ...]:
    """The fields that hold images (an edge decodes them before :func:`img2img_params`)."""
    return _IMAGE_FIELDS
