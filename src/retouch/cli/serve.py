"""``retouch serve``: the AUTOMATIC1111-compatible HTTP API."""

from __future__ import annotations

import argparse

from retouch.cli.common import UsageError, model_kwargs
from retouch.options import Options


def serve_main(args: argparse.Namespace) -> int:
    import uvicorn

    from retouch.server.app import ServerConfig, create_app
    from retouch.server.protocol import guarded_protocol

    _check_limits(args)
    config = ServerConfig(ckpt=args.ckpt, ckpt_dir=args.ckpt_dir, outdir=args.outdir, api_auth=args.api_auth,
                          max_queue=args.max_queue, allow_image_urls=args.allow_image_urls,
                          max_pixels=args.max_pixels, load_kwargs=model_kwargs(args), vae_tiling=args.vae_tiling,
                          max_body_mb=args.max_body_mb, max_images=args.max_images, max_job_steps=args.max_job_steps,
                          body_timeout=args.body_timeout, header_timeout=args.header_timeout,
                          max_connections=args.max_connections,
                          options=Options(deterministic_batches=args.deterministic_batches))
    app = create_app(config=config)
    protocol = guarded_protocol(header_timeout=args.header_timeout, max_connections=args.max_connections)
    print(f"retouch API on http://{args.host}:{args.port} (docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", http=protocol, timeout_keep_alive=5)
    return 0


def _check_limits(args: argparse.Namespace) -> None:
    for name in ("max_body_mb", "max_images", "max_job_steps", "body_timeout", "header_timeout", "max_connections",
                 "max_queue", "max_pixels"):
        value = getattr(args, name)
        if not value > 0:
            raise UsageError(f"--{name.replace('_', '-')}: must be positive, got {value}")
