"""``retouch serve``: the AUTOMATIC1111-compatible HTTP API.

Everything that can be checked before the first request is (limits, ``--api-auth``, a writable
``--outdir`` and cache, the default checkpoint loads); SIGTERM/SIGINT stop accepting, cancel queued jobs
and interrupt the running one, so the server exits within one network call plus
``SHUTDOWN_SECONDS``.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from pathlib import Path

import uvicorn

from retouch.cli.common import UsageError, model_kwargs, network_folders
from retouch.options import Options
from retouch.outputs import writable_problem

SHUTDOWN_SECONDS = 5  # uvicorn's graceful timeout: what an interrupted job has to answer its request


def serve_main(args: argparse.Namespace) -> int:
    config = server_config(args)  # flags checked before the server (torch, diffusers) is imported
    from retouch.server.app import create_app

    app = create_app(config=config)
    backend = app.state.server.backend
    page = _mount_page(app, args)
    freeze_startup_objects()
    backend.warm_up()  # a checkpoint that does not load is a start-up error, not a 500 per request
    _run(app, args, backend.shutdown, "retouch API", page)
    return 0


def freeze_startup_objects() -> None:
    """Keep what start-up made (about 570,000 objects with the page: FastAPI, Gradio, torch, transformers) out of
    every later garbage collection. A full collection walked them all, 0.27 s with every thread stopped: a ping
    took up to 365 ms while checkpoints were switched. Models are loaded after this, so they stay collectable."""
    gc.collect()
    gc.freeze()


def cluster_main(args: argparse.Namespace) -> int:
    """``retouch cluster``: the same app, its jobs on Ray Serve replicas."""
    try:
        from retouch.cluster import ClusterOptions
        from retouch.cluster.ingress import start
    except ImportError:
        raise UsageError("the cluster needs the optional extra: pip install 'retouch[cluster]'") from None
    config = server_config(args)
    try:
        options = ClusterOptions(min_replicas=args.min_replicas, max_replicas=args.max_replicas or args.min_replicas,
                                 models_per_replica=args.models_per_replica, max_queue=args.max_queue,
                                 threads_per_replica=args.threads_per_replica, gpus_per_replica=args.gpus_per_replica)
    except ValueError as e:
        raise UsageError(f"--{str(e).split(':', 1)[0].replace('_', '-')}: {str(e).split(': ', 1)[-1]}") from None
    app, stop = start(config, options, args.address)
    backend = app.state.server.backend
    try:
        page = _mount_page(app, args)
        freeze_startup_objects()
        backend.warm_up()
        replicas = (f"{options.min_replicas}" if options.min_replicas == options.max_replicas
                    else f"{options.min_replicas}–{options.max_replicas}")
        _run(app, args, backend.shutdown, f"retouch cluster API ({replicas} replicas)", page)
    finally:
        stop()
    return 0


def _run(app, args: argparse.Namespace, on_exit: Callable[[], None], what: str, page: str) -> None:
    from retouch.server.protocol import guarded_protocol

    protocol = guarded_protocol(header_timeout=args.header_timeout, max_connections=args.max_connections)
    server = GracefulServer(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", http=protocol,
                                            timeout_keep_alive=5, timeout_graceful_shutdown=SHUTDOWN_SECONDS),
                             on_exit)
    print(f"{what} on http://{args.host}:{args.port} (docs: /docs)" + (f"; {page}" if page else ""), flush=True)
    server.run()


def server_config(args: argparse.Namespace):
    """The checked :class:`ServerConfig` of ``serve``/``cluster`` flags (UsageError for a bad one)."""
    from retouch.models.paths import cache_dir

    _check_limits(args)
    _check_auth(args.api_auth)
    for root in args.batch_root or ():
        if not Path(root).is_dir():
            raise UsageError(f"--batch-root: {root} is not a folder")
    check_writable(Path(args.outdir or "outputs/img2img-images"), "--outdir")
    check_writable(cache_dir(), "the cache folder (set RETOUCH_CACHE_DIR to a writable folder)")
    styles_file = _styles_file(args.styles_file)
    from retouch.server.app import ServerConfig

    return ServerConfig(ckpt=args.ckpt, ckpt_dir=args.ckpt_dir, vae_dir=args.vae_dir, vae_path=args.vae_path,
                          **network_folders(args), outdir=args.outdir,
                          api_auth=args.api_auth,
                          max_queue=args.max_queue, allow_image_urls=args.allow_image_urls,
                          max_pixels=args.max_pixels, load_kwargs=model_kwargs(args), vae_tiling=args.vae_tiling,
                          max_body_mb=args.max_body_mb, max_images=args.max_images, max_job_steps=args.max_job_steps,
                          max_request_pixels=args.max_request_pixels,
                          body_timeout=args.body_timeout, header_timeout=args.header_timeout,
                          max_connections=args.max_connections, max_upload_storage_mb=args.max_upload_storage_mb,
                          batch_roots=tuple(args.batch_root or ()), styles_file=styles_file,
                          options=Options(deterministic_batches=args.deterministic_batches))


def _styles_file(path: str | None) -> str | None:
    """``--styles-file``: readable as A1111's styles.csv if it exists, its folder writable."""
    if path is None:
        return None
    from retouch.styles import read_styles

    if Path(path).is_file():
        try:
            read_styles(path)
        except ValueError as e:
            raise UsageError(f"--styles-file: {e}") from None
    check_writable(Path(path).resolve().parent, "--styles-file")
    return path


def _mount_page(app, args: argparse.Namespace) -> str:
    """The web page at / unless --nowebui; without the ``ui`` extra, the API alone and how to get the page."""
    if args.nowebui:
        return ""
    from retouch import ui

    if not ui.available():
        return f"no web page: {ui.INSTALL_HINT}"
    ui.mount(app, app.state.server)
    return f"web UI on http://{args.host}:{args.port}/"


class GracefulServer(uvicorn.Server):
    """uvicorn's server, but a stop signal also cancels queued jobs and interrupts the running one."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig, frame) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


def check_writable(folder: Path, what: str) -> None:
    """``UsageError`` unless ``folder`` exists (or can be made), takes a file and has room."""
    problem = writable_problem(folder)
    if problem is not None:
        raise UsageError(f"{what}: {problem}")


def _check_auth(api_auth: str | None) -> None:
    if api_auth is None:
        return
    from retouch.server.auth import parse_api_auth

    try:
        parse_api_auth(api_auth)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_limits(args: argparse.Namespace) -> None:
    for name in ("max_body_mb", "max_images", "max_job_steps", "max_request_pixels", "body_timeout", "header_timeout",
                 "max_connections", "max_queue", "max_pixels", "max_upload_storage_mb"):
        value = getattr(args, name)
        if not value > 0:
            raise UsageError(f"--{name.replace('_', '-')}: must be positive, got {value}")
