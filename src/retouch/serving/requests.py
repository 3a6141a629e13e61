"""An A1111 txt2img or img2img request → a validated :class:`~retouch.serving.values.JobRequest` (the HTTP edge).

Every check happens here, before anything is queued: the request's fields (A1111's *API* defaults,
spec §7.1), its ``infotext``, ``override_settings``, the checkpoint it names, its images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PIL import Image

from retouch.a1111 import REFINER_SCRIPT, img2img_params, txt2img_params
from retouch.options import Options
from retouch.outputs import writable_problem
from retouch.params import (
    MAX_BATCH,
    MAX_ITERATIONS,
    MAX_STEPS,
    GenerationParams,
    Img2ImgParams,
    Job,
    Txt2ImgParams,
)
from retouch.params.txt2img import LATENT_UPSCALE_MODES, hires_target
from retouch.prompt_parser import count_prompt_parts
from retouch.scripts import find_script
from retouch.serving.errors import RequestError
from retouch.serving.images import image_bytes, open_image
from retouch.serving.infotext_fields import apply_infotext
from retouch.serving.queue import new_task_id
from retouch.serving.schemas import IGNORED_FIELDS, GenerationRequest, Img2ImgRequest, Txt2ImgRequest
from retouch.serving.state import ServerConfig, ServerState
from retouch.serving.values import JobRequest, RequestImages
from retouch.soft_inpainting import SCRIPT_NAME
from retouch.upscalers import Upscalers, find_upscaler, find_upscalers

_IMAGE_FIELDS = ("init_images", "image_mask", "latent_mask")


def job_request(req: Img2ImgRequest | Txt2ImgRequest, state: ServerState) -> JobRequest:
    """Validate ``req`` (a txt2img or an img2img request) completely; raise :class:`RequestError` (4xx) on anything
    bad. Images are read only as far as their headers (format, size): they are decoded when the job starts."""
    txt2img = isinstance(req, Txt2ImgRequest)
    _check_request_shape(req)
    values = req.model_dump()
    apply_infotext(values, req.model_fields_set, state.loras.restore_names)
    _check_api_values(values)
    _check_cost(values, state.config)
    overrides = dict(values.get("override_settings") or {})
    checkpoint = overrides.pop("sd_model_checkpoint", None)
    encoded, opened = (RequestImages([]), {}) if isinstance(req, Txt2ImgRequest) else _open_images(req, state.config)
    _check_pixel_budget(values, opened, state.config)
    try:
        if checkpoint is not None:
            checkpoint = state.backend.find_checkpoint(checkpoint)
        options = state.options.with_overrides(overrides)
        state.backend.find_vae(options.sd_vae)
        params = txt2img_request_params(values) if txt2img else request_params(values, opened, state.options)
        job = params.validate(options)
        others = _other_checkpoints(job.params, state)
        if options.upscaler_for_img2img not in (None, "", "None"):
            find_upscaler(find_upscalers(state.config.upscaler_folders(), options), options.upscaler_for_img2img,
                          "upscaler_for_img2img")
        if isinstance(job.params, Txt2ImgParams) and job.params.enable_hr:
            _check_hires(job.params, options, state.config)
        script = _script(req, job, opened, options, state) if getattr(req, "script_name", None) else None
    except ValueError as e:
        raise RequestError(422, str(e), "ValueError") from None
    save = bool(req.save_images)
    outdir = (state.config.outdir or f"outputs/{'txt2img' if txt2img else 'img2img'}-images") if save else None
    problem = writable_problem(outdir) if outdir is not None else None
    if problem is not None:
        raise RequestError(507, f"save_images: {problem}; nothing was done", "InsufficientStorage")
    if isinstance(job.params, Img2ImgParams):
        job = dataclasses.replace(job, params=dataclasses.replace(job.params, init_images=[], image_mask=None,
                                                                  latent_mask=None))
    known = state.styles.texts() if job.params.styles else {}
    return JobRequest(task_id=req.force_task_id or new_task_id(), job=job, images=encoded, options=options,
                      checkpoint=checkpoint, keep_checkpoint=req.override_settings_restore_afterwards is False,
                      outdir=outdir, grid=save, styles={name: known[name] for name in job.params.styles if name in known},
                      other_checkpoints=others, script=script)


def _check_request_shape(req: GenerationRequest) -> None:
    extra = set(req.model_extra or {}) - IGNORED_FIELDS
    if extra:
        raise RequestError(422, f"unknown fields: {', '.join(sorted(extra))}", "ValueError")
    if isinstance(req, Img2ImgRequest) and not req.init_images:
        raise RequestError(404, "Init image not found")
    script = getattr(req, "script_name", None)
    if script and isinstance(req, Txt2ImgRequest):
        raise RequestError(422, f"Script '{script}' not found (retouch has no txt2img scripts yet)")
    for name in getattr(req, "alwayson_scripts", None) or {}:
        if str(name).lower() not in (SCRIPT_NAME, REFINER_SCRIPT):
            raise RequestError(422, f"always on script {name} not found")


def _script(req: Img2ImgRequest | Txt2ImgRequest, job: Job, opened: dict[str, Any], options: Options,
            state: ServerState) -> tuple[str, dict]:
    """The script a request names, its arguments parsed, and its whole work checked against the server's limits
    (413 before any work)."""
    script = find_script(str(req.script_name))
    args = script.parse(req.script_args)
    sizes = [image.size for image in opened.get("init_images", [])]
    upscalers = Upscalers(find_upscalers(state.config.upscaler_folders(), options))
    steps, pixels = script.cost(job, args, sizes, upscalers)
    if script.confirm is not None:
        script.confirm(job, args, state.backend.find_checkpoint, state.backend.find_vae)
    config = state.config
    if steps > config.max_job_steps:
        raise RequestError(413, f"script_args: {script.title} would run {steps} sampling steps, more than this "
                                f"server's limit of {config.max_job_steps} per request (--max-job-steps)",
                           "PayloadTooLarge")
    if pixels > config.max_pixels:
        raise RequestError(413, f"script_args: {script.title} would make a {pixels}-pixel image, more than this "
                                f"server's limit of {config.max_pixels} (--max-pixels)", "PayloadTooLarge")
    return script.title, args


def _other_checkpoints(params: GenerationParams, state: ServerState) -> tuple[str, ...]:
    """The refiner and the hires checkpoint a job names, as the server's checkpoint names (ValueError naming the
    field for one it does not have)."""
    names = []
    if params.refiner is not None:
        names.append(state.backend.find_checkpoint(params.refiner, "refiner_checkpoint"))
    if isinstance(params, Txt2ImgParams) and params.enable_hr and params.hr_checkpoint is not None:
        names.append(state.backend.find_checkpoint(params.hr_checkpoint, "hr_checkpoint_name"))
    return tuple(dict.fromkeys(names))


def _check_hires(params: Txt2ImgParams, options: Options, config: ServerConfig) -> None:
    """The hires upscaler is one the server has, and the hires size is within ``--max-pixels``."""
    upscaler = params.hr_upscaler
    if upscaler is not None and upscaler not in LATENT_UPSCALE_MODES:
        find_upscaler(find_upscalers(config.upscaler_folders(), options), upscaler, "hr_upscaler")
    target = hires_target(params)
    pixels = max(target.upscale_to_x * target.upscale_to_y, target.width * target.height)
    if pixels > config.max_pixels:
        raise RequestError(413, f"hr_scale / hr_resize_x / hr_resize_y: the hires size {target.upscale_to_x}x"
                           f"{target.upscale_to_y} is more pixels than this server's limit of {config.max_pixels} "
                           "per image (--max-pixels)", "PayloadTooLarge")


def _check_api_values(values: dict[str, Any]) -> None:
    """The API's stricter edge checks (422 where A1111 answers 500)."""
    for name in ("width", "height"):
        v = values.get(name)
        if isinstance(v, int) and (v < 64 or v > 8192 or v % 8):
            raise RequestError(422, f"{name} must be a multiple of 8 between 64 and 8192, got {v}", "ValueError")
    init = values.get("init_images") or []
    batch = values.get("batch_size")
    if isinstance(batch, int) and len(init) > max(batch, 1):
        raise RequestError(422, f"init_images: bad number of images passed: {len(init)}; expecting {batch} or less",
                       "ValueError")


def _check_cost(values: dict[str, Any], config: ServerConfig) -> None:
    """What one request may ask of the worker (``--max-images``, ``--max-job-steps``; the hires fix's second pass
    counts its steps too)."""
    n_iter, batch_size, steps = (values.get(name) for name in ("n_iter", "batch_size", "steps"))
    hires = values.get("hr_second_pass_steps") if values.get("enable_hr") else None
    if isinstance(steps, int) and not isinstance(steps, bool) and isinstance(hires, int) and 0 <= hires <= MAX_STEPS:
        steps += hires or steps
    bounds = ((n_iter, MAX_ITERATIONS), (batch_size, MAX_BATCH), (steps, MAX_STEPS))
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= hi for v, hi in bounds):
        return  # a value out of its own range: the parameters' validation names the field
    assert isinstance(n_iter, int) and isinstance(batch_size, int) and isinstance(steps, int)
    if n_iter * batch_size > config.max_images:
        raise RequestError(422, f"n_iter × batch_size: {n_iter} × {batch_size} = {n_iter * batch_size} images, more "
                            f"than this server's limit of {config.max_images} per request (--max-images)",
                       "ValueError")
    prompt = values.get("prompt")
    parts = count_prompt_parts(prompt) if isinstance(prompt, str) else 1  # each AND part: a row of every UNet call
    cost = n_iter * batch_size * steps * parts
    if cost > config.max_job_steps:
        what = "n_iter × batch_size × steps" + (" × AND sub-prompts" if parts > 1 else "")
        raise RequestError(422, f"{what}: {cost} sampling steps, more than this server's limit of "
                            f"{config.max_job_steps} per request (--max-job-steps)", "ValueError")


def _open_images(req: Img2ImgRequest, config: ServerConfig) -> tuple[RequestImages, dict[str, Any]]:
    """The request's images: encoded bytes (for the job) and header-only PIL images (for the checks)."""
    def read(value: object, field: str) -> tuple[bytes, Image.Image]:
        data = image_bytes(value, field, allow_urls=config.allow_image_urls)
        return data, open_image(data, field, config.max_pixels)

    inits = [read(v, f"init_images[{i}]") for i, v in enumerate(req.init_images or [])]
    mask = read(req.mask, "mask") if req.mask else None
    # A1111's API accepts latent_mask but never decodes it (an error when used); here it works as in the library
    latent = read(req.latent_mask, "latent_mask") if req.latent_mask else None
    encoded = RequestImages([data for data, _ in inits], mask[0] if mask else None, latent[0] if latent else None)
    opened = {"init_images": [image for _, image in inits], "image_mask": mask[1] if mask else None,
              "latent_mask": latent[1] if latent else None}
    return encoded, opened


def _check_pixel_budget(values: dict[str, Any], opened: dict[str, Any], config: ServerConfig) -> None:
    """Every input pixel plus every output pixel one request may hold (``--max-request-pixels``), from
    the image headers, before anything is decoded; and the output size against ``--max-pixels``."""
    images = [*opened.get("init_images", []),
              *(opened[k] for k in ("image_mask", "latent_mask") if opened.get(k) is not None)]
    inputs = sum(image.width * image.height for image in images)
    width, height, batch, n_iter = (values.get(k) for k in ("width", "height", "batch_size", "n_iter"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height, batch, n_iter)):
        return  # the parameters' own validation names the bad field
    assert isinstance(width, int) and isinstance(height, int) and isinstance(batch, int) and isinstance(n_iter, int)
    if width * height > config.max_pixels:
        raise RequestError(413, f"width × height: {width}x{height} is more pixels than this server's limit of "
                            f"{config.max_pixels} per image (--max-pixels)", "PayloadTooLarge")
    outputs = width * height * batch * n_iter
    if inputs + outputs > config.max_request_pixels:
        raise RequestError(413, f"the request's images hold {inputs} pixels and it asks for {outputs} more "
                            f"(width × height × batch_size × n_iter), over this server's limit of "
                            f"{config.max_request_pixels} pixels per request (--max-request-pixels)",
                       "PayloadTooLarge")


def txt2img_request_params(values: dict[str, Any]) -> Txt2ImgParams:
    """A txt2img request's job parameters, as A1111's API builds its processing object."""
    return txt2img_params({k: v for k, v in values.items() if k not in IGNORED_FIELDS}, api=True)


def request_params(values: dict[str, Any], images: dict[str, Any], base_options: Options) -> Img2ImgParams:
    """The job parameters of a request, as A1111's API builds its processing object (:mod:`retouch.a1111`); the
    fields A1111's API ignores are ignored here too."""
    fields = {k: v for k, v in values.items() if k not in (*_IMAGE_FIELDS, "mask", *IGNORED_FIELDS)}
    return img2img_params({**fields, **images}, base_options=base_options, api=True)
