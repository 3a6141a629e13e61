"""``retouch serve``: the AUTOMATIC1111-compatible HTTP API."""

from __future__ import annotations

import argparse

from retouch.cli.common import model_kwargs


def serve_main(args: argparse.Namespace) -> int:
    import uvicorn

    from retouch.server.app import ServerConfig, create_app

    config = ServerConfig(ckpt=args.ckpt, ckpt_dir=args.ckpt_dir, outdir=args.outdir, api_auth=args.api_auth,
                          max_queue=args.max_queue, allow_image_urls=args.allow_image_urls,
                          max_pixels=args.max_pixels, load_kwargs=model_kwargs(args), vae_tiling=args.vae_tiling)
    app = create_app(config=config)
    print(f"retouch API on http://{args.host}:{args.port} (docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
