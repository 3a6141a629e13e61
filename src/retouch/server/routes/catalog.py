"""What the server offers and how it is set: samplers, schedulers, checkpoints, options, flags, scripts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from retouch.a1111 import REFINER_SCRIPT
from retouch.params.txt2img import LATENT_UPSCALE_MODES
from retouch.sampling import registry
from retouch.sampling.schedules import SCHEDULERS
from retouch.scripts import ScriptArg, img2img_scripts
from retouch.server.routes import State
from retouch.server.routing import GuardedRoute
from retouch.serving.errors import RequestError
from retouch.soft_inpainting import SCRIPT_NAME
from retouch.upscalers import Kind, find_upscalers

router = APIRouter(route_class=GuardedRoute)

_INNER_MODEL_SCHEDULERS = ("uniform", "sgm_uniform", "simple", "normal", "ddim", "beta")


@router.get("/sdapi/v1/samplers")
async def samplers():
    def options(s: registry.SamplerSpec) -> dict[str, Any]:
        flags = (("scheduler", s.scheduler), ("second_order", s.second_order), ("brownian_noise", s.brownian_noise),
                 ("uses_ensd", s.uses_ensd), ("discard_next_to_last_sigma", s.discard_next_to_last_sigma),
                 ("solver_type", s.solver_type))
        return {k: v for k, v in flags if v}

    return [{"name": s.name, "aliases": list(s.aliases), "options": options(s)} for s in registry.SAMPLERS]


@router.get("/sdapi/v1/schedulers")
async def schedulers():
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.name in _INNER_MODEL_SCHEDULERS} for s in SCHEDULERS]


@router.get("/sdapi/v1/sd-models")
async def sd_models(state: State):
    return [{"title": c.title, "model_name": c.model_name, "hash": c.hash, "sha256": c.sha256, "filename": c.filename,
             "config": c.config} for c in state.backend.checkpoints()]


@router.get("/sdapi/v1/prompt-styles")
async def prompt_styles(state: State):
    """The styles of ``--styles-file`` (A1111's styles.csv), in file order."""
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in state.styles.styles.values()]


@router.get("/sdapi/v1/sd-vae")
async def sd_vae(state: State):
    return [{"model_name": name, "filename": str(path)} for name, path in state.backend.vaes().items()]


@router.post("/sdapi/v1/refresh-vae")
async def refresh_vae(state: State):
    state.backend.refresh_checkpoints()  # one scan finds both
    return {}


@router.post("/sdapi/v1/refresh-checkpoints")
async def refresh_checkpoints(state: State):
    state.backend.refresh_checkpoints()
    return {}


@router.get("/sdapi/v1/options")
async def get_options(state: State):
    values = state.options.as_dict()
    values["sd_model_checkpoint"] = state.backend.default_checkpoint_title()
    return values


@router.post("/sdapi/v1/options")
async def set_options(values: dict[str, Any], state: State):
    values = dict(values)
    checkpoint = values.pop("sd_model_checkpoint", None)
    try:
        new = state.options.with_settings(values)
        state.backend.find_vae(new.sd_vae)
        if checkpoint:
            state.backend.set_default_checkpoint(checkpoint)
    except ValueError as e:
        raise RequestError(422, str(e), "ValueError") from None
    state.options = new
    return None


@router.get("/sdapi/v1/cmd-flags")
async def cmd_flags(state: State):
    config = state.config
    return {"ckpt": config.ckpt, "ckpt_dir": config.ckpt_dir, "vae_dir": config.vae_dir, "vae_path": config.vae_path,
            "api_auth": bool(config.api_auth),
            "max_queue": config.max_queue, "allow_image_urls": config.allow_image_urls, "outdir": config.outdir,
            "styles_file": [config.styles_file] if config.styles_file else [],
            "esrgan_models_path": config.esrgan_models_path, "realesrgan_models_path": config.realesrgan_models_path,
            "swinir_models_path": config.swinir_models_path, "dat_models_path": config.dat_models_path,
            "scunet_models_path": config.scunet_models_path,
            "api": True, "nowebui": True}


@router.get("/sdapi/v1/scripts")
async def scripts():
    """The scripts a request may name (``script_name``, img2img) and use in ``alwayson_scripts`` (the refiner and soft
    inpainting, A1111's built-ins), by A1111's lower-cased names."""
    selectable = sorted(script.title.lower() for script in img2img_scripts().values())
    return {"txt2img": [REFINER_SCRIPT, SCRIPT_NAME], "img2img": [*selectable, REFINER_SCRIPT, SCRIPT_NAME]}


@router.get("/sdapi/v1/script-info")
async def script_info():
    """The img2img scripts and their arguments, in A1111's ``script_args`` order."""
    def arg(a: ScriptArg) -> dict[str, Any]:
        return {"label": a.name, "value": a.default, "minimum": a.lo, "maximum": a.hi, "step": None,
                "choices": list(a.choices) if a.choices is not None else None}

    return [{"name": s.title.lower(), "is_alwayson": False, "is_img2img": True, "args": [arg(a) for a in s.args]}
            for s in img2img_scripts().values()]


# A1111's Upscaler.model_name of each kind of upscaler
_MODEL_NAMES = {Kind.ESRGAN: "ESRGAN_4x", Kind.REALESRGAN: "RealESRGAN", Kind.SWINIR: "SwinIR_4x", Kind.DAT: "DAT",
                Kind.SCUNET: "ScuNET GAN", Kind.LDSR: "LDSR"}


@router.get("/sdapi/v1/upscalers")
async def upscalers(state: State):
    """A1111's upscaler list (``--esrgan-models-path`` and friends), in its order; a named model whose file is not
    on disk has its download address as ``model_path``, as in A1111 (retouch never downloads it)."""
    found = find_upscalers(state.config.upscaler_folders(), state.options)
    return [{"name": u.name, "model_name": _MODEL_NAMES.get(u.kind), "model_path": str(u.path) if u.path else u.url,
             "model_url": None, "scale": u.scale} for u in found]


@router.get("/sdapi/v1/latent-upscale-modes")
async def latent_upscale_modes():
    return [{"name": name} for name in LATENT_UPSCALE_MODES]
