"""The A1111-compatible HTTP API (``/sdapi/v1/*`` img2img part, progress, queue, options)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from retouch import __version__
from retouch.infotext import parse_infotext
from retouch.options import Options
from retouch.sampling import registry
from retouch.sampling.schedules import SCHEDULERS
from retouch.server import service
from retouch.server.images import ApiError, decode_image, encode_image
from retouch.server.jobs import Cancelled, JobQueue, QueueFull, new_task_id
from retouch.server.schemas import (
    IGNORED_FIELDS,
    ImageToImageResponse,
    Img2ImgRequest,
    InterruptRequest,
    PNGInfoRequest,
    ProgressRequest,
)

# Latent → RGB approximation for live previews (A1111's "Approx cheap", SD1/SD2 latents)
_PREVIEW_COEFFS = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264],
                                [-0.184, -0.271, -0.473]])


@dataclass
class ServerConfig:
    ckpt: str | None = None
    ckpt_dir: str | None = None
    outdir: str | None = None
    api_auth: str | None = None
    max_queue: int = 16
    allow_image_urls: bool = False
    max_pixels: int = 4096 * 4096
    options: Options = field(default_factory=Options)
    load_kwargs: dict = field(default_factory=dict)  # precision / channels_last for load_model
    vae_tiling: str = "auto"


def envelope(status: int, error: str, detail: Any, body: Any = "", errors: str = "") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, "body": body,
                                                     "errors": errors or str(detail)})


def create_app(config: ServerConfig) -> FastAPI:
    app = FastAPI(title="retouch", version=__version__,
                  description="AUTOMATIC1111-compatible img2img / inpainting API")
    models = service.ModelManager(ckpt=config.ckpt, ckpt_dir=config.ckpt_dir, load_kwargs=config.load_kwargs,
                                  vae_tiling=config.vae_tiling)
    jobs = JobQueue(config.max_queue)
    state: dict[str, Any] = {"options": config.options, "job_timestamp": "0"}
    app.state.jobs, app.state.models = jobs, models
    if config.api_auth:
        app.middleware("http")(_basic_auth(config.api_auth))

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError):
        return envelope(e.status_code, e.error, e.detail)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException):
        response = envelope(e.status_code, "HTTPException", e.detail)
        for key, value in (e.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception):
        return envelope(500, type(e).__name__, str(e))

    @app.get("/internal/ping")
    async def ping():
        return {}

    @app.post("/sdapi/v1/img2img", response_model=ImageToImageResponse)
    async def img2img(req: Img2ImgRequest, response: Response):
        received = time.perf_counter()
        extra = set(req.model_extra or {}) - IGNORED_FIELDS
        if extra:
            raise ApiError(422, f"unknown fields: {', '.join(sorted(extra))}", "ValueError")
        if not req.init_images:
            raise ApiError(404, "Init image not found")
        if req.script_name:
            raise ApiError(422, f"Script '{req.script_name}' not found")
        for name in req.alwayson_scripts or {}:
            raise ApiError(422, f"always on script {name} not found")
        values = req.model_dump()
        service.apply_infotext(values, req.model_fields_set)
        _check_api_values(values)
        images = [decode_image(v, f"init_images[{i}]", max_pixels=config.max_pixels,
                               allow_urls=config.allow_image_urls) for i, v in enumerate(req.init_images)]
        mask = decode_image(req.mask, "mask", max_pixels=config.max_pixels,
                            allow_urls=config.allow_image_urls) if req.mask else None
        params = service.request_params(values)
        if values.get("sampler_name") is None:
            params["sampler_name"] = values.get("sampler_index") or "Euler"
        try:
            _, scheduler = registry.resolve_sampler_and_scheduler(params["sampler_name"], params.get("scheduler"))
        except ValueError as e:
            raise ApiError(422, str(e), "ValueError") from None
        params["override_settings"] = values.get("override_settings") or {}
        save = bool(req.save_images)
        task_id = req.force_task_id or new_task_id()

        timing = {"decode": time.perf_counter() - received}

        def run(control):
            started = time.perf_counter()
            timing["queue"] = started - received - timing["decode"]
            try:
                return service.run_job(control, models=models, base_options=state["options"], params=dict(params),
                                       images=images, mask=mask, outdir=config.outdir or "outputs/img2img-images",
                                       save=save,
                                       restore_afterwards=req.override_settings_restore_afterwards is not False)
            finally:
                timing["job"] = time.perf_counter() - started

        try:
            task = jobs.submit(task_id, run)
        except QueueFull:
            raise HTTPException(503, "the queue is full; retry later", headers={"Retry-After": "5"}) from None
        task.control.on_step = lambda control, d: _keep_preview(task, control, d, state["options"])
        try:
            p, processed = await asyncio.wrap_future(task.future)
        except Cancelled as e:
            raise ApiError(409, str(e), "Interrupted") from None
        except ValueError as e:
            raise ApiError(422, str(e), "ValueError") from None
        state["job_timestamp"] = processed.job_timestamp
        fmt = state["options"].samples_format
        encoding = time.perf_counter()
        b64 = [encode_image(img, fmt, state["options"].jpeg_quality) for img in processed.images] if req.send_images else []
        timing["encode"] = time.perf_counter() - encoding
        # Standard Server-Timing header (milliseconds): where the request's time went, for clients and benchmarks
        response.headers["Server-Timing"] = ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in timing.items())
        parameters = req.model_dump()
        if not req.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        return ImageToImageResponse(images=b64, parameters=parameters, info=processed.js())

    @app.get("/sdapi/v1/progress")
    async def progress(skip_current_image: bool = False):
        task = jobs.current
        control = task.control if task else None
        status = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                  "job_count": 0, "job_timestamp": state["job_timestamp"], "job_no": 0, "sampling_step": 0,
                  "sampling_steps": 0}
        if control is None or control.job_count <= 0:
            return {"progress": 0.0, "eta_relative": 0.0, "state": status, "current_image": None, "textinfo": None}
        status.update(skipped=control.skipped, interrupted=control.interrupted, job=task.id,
                      job_count=control.job_count, job_no=control.job_no, sampling_step=control.sampling_step,
                      sampling_steps=control.sampling_steps)
        value = _progress(control) + 0.01
        elapsed = time.time() - (task.started_at or time.time())
        eta = elapsed / value - elapsed
        image = None if skip_current_image else _preview_b64(task)
        return {"progress": min(value, 1.0), "eta_relative": eta, "state": status, "current_image": image,
                "textinfo": None}

    @app.post("/internal/progress")
    async def internal_progress(req: ProgressRequest):
        task = jobs.current
        active = task is not None and task.id == req.id_task
        position = jobs.queue_position(req.id_task or "")
        completed = req.id_task in jobs.finished
        if not active:
            text = f"In queue: {position[0]}/{position[1]}" if position else "Waiting..."
            return {"active": False, "queued": position is not None, "completed": completed, "progress": None,
                    "eta": None, "live_preview": None, "id_live_preview": -1, "textinfo": text,
                    "queue_position": position[0] if position else None}
        value = _progress(task.control)
        elapsed = time.time() - (task.started_at or time.time())
        eta = elapsed / value - elapsed if value > 0 else None
        preview, preview_id = None, req.id_live_preview
        if req.live_preview and task.preview_id != req.id_live_preview:
            image = _preview_b64(task)
            if image:
                preview, preview_id = "data:image/png;base64," + image, task.preview_id
        return {"active": True, "queued": False, "completed": False, "progress": value, "eta": eta,
                "live_preview": preview, "id_live_preview": preview_id, "textinfo": None, "queue_position": 0}

    @app.get("/internal/pending-tasks")
    async def pending_tasks():
        ids = list(jobs.pending)
        return {"size": len(ids), "tasks": ids}

    @app.post("/sdapi/v1/interrupt")
    async def interrupt(req: InterruptRequest | None = None, id_task: str | None = None):
        task_id = id_task or (req.id_task if req else None)
        found = jobs.interrupt(task_id)
        if task_id and not found:
            raise ApiError(404, f"no queued or running task {task_id!r}")
        return {}

    @app.post("/sdapi/v1/skip")
    async def skip():
        jobs.skip()
        return {}

    @app.get("/sdapi/v1/samplers")
    async def samplers():
        return [{"name": s.name, "aliases": list(s.aliases),
                 "options": {k: v for k, v in (("scheduler", s.scheduler), ("second_order", s.second_order),
                                                ("brownian_noise", s.brownian_noise), ("uses_ensd", s.uses_ensd),
                                                ("discard_next_to_last_sigma", s.discard_next_to_last_sigma),
                                                ("solver_type", s.solver_type)) if v}}
                for s in registry.SAMPLERS]

    @app.get("/sdapi/v1/schedulers")
    async def schedulers():
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
                 "default_rho": s.default_rho, "need_inner_model": s.name in ("uniform", "sgm_uniform", "simple",
                                                                            "normal", "ddim", "beta")}
                for s in SCHEDULERS]

    @app.get("/sdapi/v1/sd-models")
    async def sd_models():
        return [{"title": c.title, "model_name": c.model_name, "hash": c.short_hash, "sha256": None,
                 "filename": str(c.path), "config": None} for c in models.checkpoints.values()]

    @app.post("/sdapi/v1/refresh-checkpoints")
    async def refresh_checkpoints():
        models.refresh()
        return {}

    @app.get("/sdapi/v1/options")
    async def get_options():
        values = state["options"].as_dict()
        values["sd_model_checkpoint"] = models.loaded_title
        return values

    @app.post("/sdapi/v1/options")
    async def set_options(values: dict[str, Any]):
        values = dict(values)
        checkpoint = values.pop("sd_model_checkpoint", None)
        try:
            new = state["options"].with_overrides(values)
        except ValueError as e:
            raise ApiError(422, str(e), "ValueError") from None
        if checkpoint:
            models.default = models.find(checkpoint).name
        state["options"] = new
        return None

    @app.get("/sdapi/v1/cmd-flags")
    async def cmd_flags():
        return {"ckpt": config.ckpt, "ckpt_dir": config.ckpt_dir, "api_auth": bool(config.api_auth),
                "max_queue": config.max_queue, "allow_image_urls": config.allow_image_urls,
                "outdir": config.outdir, "api": True, "nowebui": True}

    @app.post("/sdapi/v1/png-info")
    async def png_info(req: PNGInfoRequest):
        if not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        image = decode_image(req.image, "image", max_pixels=config.max_pixels, allow_urls=False)
        items = {k: v for k, v in image.info.items() if isinstance(v, str | int | float)}
        text = items.pop("parameters", "")
        prompt, negative, params = parse_infotext(text) if text else ("", "", {})
        parameters = {"Prompt": prompt, "Negative prompt": negative, **params} if text else {}
        return {"info": text, "items": items, "parameters": parameters}

    @app.get("/sdapi/v1/scripts")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    @app.get("/sdapi/v1/memory")
    async def memory():
        process = psutil.Process()
        vm = psutil.virtual_memory()
        ram = {"free": vm.available, "used": process.memory_info().rss, "total": vm.total}
        cuda: dict[str, Any] = {"error": "no CUDA device"}
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            cuda = {"system": {"free": free, "used": total - free, "total": total}}
        return {"ram": ram, "cuda": cuda}

    return app


def _check_api_values(values: dict[str, Any]) -> None:
    """The API's stricter edge checks (issue: 422 where A1111 answers 500)."""
    for name in ("width", "height"):
        v = values.get(name)
        if isinstance(v, int) and (v < 64 or v > 8192 or v % 8):
            raise ApiError(422, f"{name} must be a multiple of 8 between 64 and 8192, got {v}", "ValueError")
    init = values.get("init_images") or []
    batch = values.get("batch_size")
    if isinstance(batch, int) and len(init) > max(batch, 1):
        raise ApiError(422, f"init_images: bad number of images passed: {len(init)}; expecting {batch} or less",
                       "ValueError")


def _progress(control) -> float:
    value = 0.0
    if control.job_count > 0:
        value += control.job_no / control.job_count
        if control.sampling_steps > 0:
            value += control.sampling_step / control.sampling_steps / control.job_count
    return min(value, 1.0)


def _keep_preview(task, control, d, options: Options) -> None:
    every = options.show_progress_every_n_steps
    if not options.live_previews_enable or every <= 0:
        return
    if d["i"] % every == 0 and isinstance(d.get("denoised"), torch.Tensor):
        task.preview_latent = d["denoised"][:1].detach().clone()
        task.preview_id += 1


def _preview_b64(task) -> str | None:
    from PIL import Image

    latent = task.preview_latent
    if latent is None:
        return None
    rgb = torch.einsum("...lxy,lr -> ...rxy", latent.float(), _PREVIEW_COEFFS)
    rgb = torch.clamp((rgb + 1.0) / 2.0, 0.0, 1.0)[0]
    array = (255.0 * rgb.permute(1, 2, 0).numpy()).astype("uint8")
    return encode_image(Image.fromarray(array))


def _basic_auth(api_auth: str):
    """HTTP Basic auth on every route (A1111's ``--api-auth user:pass[,user2:pass2]``)."""
    pairs = {}
    for item in api_auth.split(","):
        user, _, password = item.strip().partition(":")
        pairs[user] = password

    async def middleware(request: Request, call_next):
        header = request.headers.get("authorization", "")
        ok = False
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
                ok = user in pairs and secrets.compare_digest(password.encode(), pairs[user].encode())
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            response = envelope(401, "HTTPException", "Incorrect username or password")
            response.headers["WWW-Authenticate"] = "Basic"
            return response
        return await call_next(request)

    return middleware
