"""Command line: ``retouch img2img INIT_IMAGE --prompt … -o OUTDIR``, ``retouch txt2img --prompt … -o OUTDIR`` and
``retouch serve``.

The generation flags are generated from :class:`~retouch.params.Img2ImgParams` / ``Txt2ImgParams`` (A1111's field names in
kebab-case), so the library, the CLI and the API share one definition. Bad input exits with code 2
and a one-line message naming the flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from retouch.cli.common import EXIT_USAGE, UsageError, add_model_flags, add_param_flags, flag
from retouch.cli.upscale import add_parser as add_upscale_parser
from retouch.params import Img2ImgParams, Txt2ImgParams

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2), like every other usage error of retouch."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retouch", description="Stable Diffusion img2img and inpainting, identical to "
                                                 "AUTOMATIC1111's webui.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _img2img_parser(sub.add_parser("img2img", help="run img2img / inpainting on one or more images"))
    _txt2img_parser(sub.add_parser("txt2img", help="make images from a prompt (with the hires fix and the refiner)"))
    add_upscale_parser(sub.add_parser("upscale", help="upscale pictures as A1111's Extras tab does"))
    _serve_parser(sub.add_parser("serve", help="start the A1111-compatible HTTP API"))
    _cluster_parser(sub.add_parser("cluster", help="the same API over Ray Serve replicas (retouch[cluster])"))
    return parser


def _img2img_parser(img: argparse.ArgumentParser) -> None:
    img.add_argument("init_images", nargs="*", metavar="INIT_IMAGE", help="source image(s)")
    img.add_argument("-o", "--outdir", default="outputs", help="where to write the images (default: outputs)")
    img.add_argument("--ckpt", default=None, help="checkpoint (.safetensors/.ckpt or diffusers folder); "
                                                   "default: the bundled tiny model")
    img.add_argument("--vae", default=None, help="separate VAE file or folder")
    add_model_flags(img)
    img.add_argument("--mask", default=None, help="inpainting mask image (white = repaint)")
    img.add_argument("--latent-mask", dest="latent_mask_path", default=None, help="separate latent blend mask")
    img.add_argument("--set", dest="settings", action="append", default=[], metavar="OPTION=VALUE",
                     help="an A1111 option (override_settings), e.g. --set CLIP_stop_at_last_layers=2")
    img.add_argument("--styles-file", default=None, help="A1111 styles.csv to resolve --styles from")
    img.add_argument("--input-dir", default=None, help="batch: process every image in this folder")
    img.add_argument("--mask-dir", default=None, help="batch: masks (one for all, or matched by file stem)")
    img.add_argument("--output-dir", default=None, help="batch: write results here (named after the inputs)")
    img.add_argument("--no-save", action="store_true", help="do not write images (print infotexts only)")
    img.add_argument("--soft-inpainting", action="store_true", help="A1111's soft inpainting (with --mask)")
    img.add_argument("--script", default=None, metavar="TITLE",
                     help="an A1111 img2img script: 'SD upscale', 'Loopback', 'Prompts from file or textbox'")
    img.add_argument("--script-args", default=None, metavar="JSON",
                     help="its arguments as A1111's API takes them, e.g. '[null, 64, \"Lanczos\", 2]'")
    img.add_argument("--soft-inpainting-settings", default=None, metavar="BIAS,STRENGTH,BOOST,INFLUENCE,THRESHOLD,CONTRAST",
                     help="soft inpainting's schedule bias, preservation strength, transition contrast boost, mask "
                          "influence, difference threshold and difference contrast (leading ones suffice; "
                          "default 1,0.5,4,0,0.5,2)")
    add_param_flags(img)


def _txt2img_parser(txt: argparse.ArgumentParser) -> None:
    txt.add_argument("-o", "--outdir", default="outputs", help="where to write the images (default: outputs)")
    txt.add_argument("--ckpt", default=None, help="checkpoint (.safetensors/.ckpt or diffusers folder); "
                                                   "default: the bundled tiny model")
    txt.add_argument("--ckpt-dir", default=None,
                     help="where --refiner-checkpoint and --hr-checkpoint-name are found (default: --ckpt's folder)")
    txt.add_argument("--vae", default=None, help="separate VAE file or folder")
    add_model_flags(txt)
    txt.add_argument("--set", dest="settings", action="append", default=[], metavar="OPTION=VALUE",
                     help="an A1111 option (override_settings), e.g. --set hires_fix_refiner_pass=both")
    txt.add_argument("--styles-file", default=None, help="A1111 styles.csv to resolve --styles from")
    txt.add_argument("--no-save", action="store_true", help="do not write images (print infotexts only)")
    add_param_flags(txt, Txt2ImgParams)


def _serve_parser(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--ckpt", default=None, help="model loaded at start (default: the bundled tiny model)")
    serve.add_argument("--ckpt-dir", default=None, help="checkpoints requests may switch to (sd_model_checkpoint)")
    serve.add_argument("--vae-dir", default=None,
                       help="separate VAEs requests may name (sd_vae); *.vae.* files in --ckpt-dir are offered too")
    serve.add_argument("--vae-path", default=None, help="this VAE for every checkpoint, whatever sd_vae says")
    add_model_flags(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--nowebui", action="store_true", help="serve the API only, without the web page at /")
    serve.add_argument("--styles-file", default=None, metavar="PATH",
                       help="A1111's styles.csv: requests' styles are read from it, the page saves styles into it "
                            "(made when the first style is saved)")
    serve.add_argument("--batch-root", action="append", default=None, metavar="DIR",
                       help="let the page's Batch sub-tab read and write folders below DIR (repeatable; off by "
                            "default: the page then names no server folder at all)")
    serve.add_argument("--api-auth", default=None, help="USER:PASS[,USER2:PASS2] — HTTP Basic on every route")
    serve.add_argument("--max-queue", type=int, default=16, help="queued jobs before new ones get 503")
    serve.add_argument("--outdir", default=None, help="where save_images=true writes (default outputs/img2img-images)")
    serve.add_argument("--allow-image-urls", action="store_true",
                       help="fetch http(s) image URLs in requests (never from local/private addresses)")
    serve.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest accepted image (pixels)")
    limits = serve.add_argument_group("limits (what one request or connection may cost)")
    limits.add_argument("--max-body-mb", type=float, default=64.0,
                        help="largest request body; larger ones get 413 before they are read (default 64)")
    limits.add_argument("--max-images", type=int, default=100,
                        help="n_iter × batch_size one request may ask for (default 100)")
    limits.add_argument("--max-job-steps", type=int, default=10_000,
                        help="n_iter × batch_size × steps (× AND sub-prompts) one request may ask for "
                             "(default 10000)")
    limits.add_argument("--max-request-pixels", type=int, default=64 * 2**20,
                        help="pixels one request may hold: its images plus width × height × batch_size × n_iter "
                             "(default 64 Mi)")
    limits.add_argument("--max-upload-storage-mb", type=float, default=1024.0,
                        help="disk the page's uploads and shown images may hold at once; unused ones expire after "
                             "an hour (default 1024)")
    limits.add_argument("--body-timeout", type=float, default=60.0,
                        help="seconds a client has to send a whole request body (default 60)")
    limits.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a client has to send a request's headers (default 10)")
    limits.add_argument("--max-connections", type=int, default=512,
                        help="open connections; more are closed at once (default 512)")


def _cluster_parser(cluster: argparse.ArgumentParser) -> None:
    _serve_parser(cluster)
    group = cluster.add_argument_group("cluster (Ray Serve)")
    group.add_argument("--address", default=None,
                       help="Ray to join: auto or HOST:PORT (default: start a local Ray for this process)")
    group.add_argument("--min-replicas", type=int, default=1, help="job replicas kept running (default 1)")
    group.add_argument("--max-replicas", type=int, default=None,
                       help="autoscale up to this many replicas by queue length (default: --min-replicas)")
    group.add_argument("--models-per-replica", type=int, default=1,
                       help="checkpoints one replica keeps loaded; least recently used ones are evicted (default 1)")
    group.add_argument("--threads-per-replica", type=int, default=1, help="CPU threads (and Ray CPUs) per replica")
    group.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs per replica (default 0)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.command == "serve":
            from retouch.cli.serve import serve_main

            return serve_main(args)
        if args.command == "cluster":
            from retouch.cli.serve import cluster_main

            return cluster_main(args)
        if args.command == "upscale":
            from retouch.cli.upscale import run as run_upscale

            return run_upscale(args)
        if args.command == "txt2img":
            from retouch.cli.txt2img import run as run_txt2img

            return run_txt2img(args)
        from retouch.cli.img2img import run

        return run(args)
    except UsageError as e:
        print(f"retouch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"retouch: error: {_flag_for(str(e))}{e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("retouch: interrupted", file=sys.stderr)
        return 130


def _flag_for(message: str) -> str:
    """Prefix a params error with the flag it concerns (``steps must …`` → ``--steps: ``)."""
    head = message.split(" ", 1)[0].split("[", 1)[0].rstrip(":")
    if head in {*Img2ImgParams.field_names(), *Txt2ImgParams.field_names()}:
        return f"{flag(head)}: "
    return ""


if __name__ == "__main__":
    sys.exit(main())
