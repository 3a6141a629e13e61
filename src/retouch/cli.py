"""Command line: ``retouch img2img INIT_IMAGE --prompt … -o OUTDIR`` (and ``retouch serve``).

The img2img flags are generated from :class:`~retouch.params.Img2ImgParams` (A1111's field names in
kebab-case), so the library, the CLI and the API share one definition. Bad input exits with code 2
and a one-line message naming the flag.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from dataclasses import fields

from retouch.params import Img2ImgParams

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: str):
    hints = typing.get_type_hints(Img2ImgParams)
    return hints[annotation]


def _argument_kind(field_name: str) -> str:
    hint = _base_type(field_name)
    args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType | typing._UnionGenericAlias) else {hint}
    args.discard(type(None))
    if list[str] in args and len(args) == 1:
        return "list"
    if args == {bool}:
        return "bool"
    if args == {int}:
        return "int"
    if args == {float}:
        return "float"
    return "str"


def add_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per CLI-facing field of :class:`Img2ImgParams`, defaults left to the params object."""
    group = parser.add_argument_group("generation parameters (A1111 names)")
    for f in fields(Img2ImgParams):
        if not f.metadata.get("cli", True):
            continue
        kind = _argument_kind(f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {f.default if f.default is not None else 'auto'})"
        if kind == "bool":
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif kind == "list":
            group.add_argument(flag(f.name), dest=f.name, action="append", default=None, help=help_text)
        else:
            converter = {"int": int, "float": float, "str": str}[kind]
            group.add_argument(flag(f.name), dest=f.name, type=converter, default=None, help=help_text,
                               metavar=kind.upper())


PRECISIONS = ("fp32", "bf16", "fp16")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="UNet and text encoder precision (bf16 is about 2x faster on recent CPUs)")
    parser.add_argument("--vae-precision", choices=PRECISIONS, default=None,
                        help="VAE precision (default fp32 on CPU); NaNs fall back to fp32")
    parser.add_argument("--channels-last", action="store_true", help="UNet in channels-last memory format")
    parser.add_argument("--vae-tiling", choices=("auto", "always", "never"), default="auto",
                        help="tiled VAE: auto = when an untiled pass would not fit in free memory, or ran out of it")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def model_kwargs(args: argparse.Namespace) -> dict:
    """load_model keyword arguments from the model flags."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if args.threads:
        torch.set_num_threads(args.threads)
    return {"dtype": dtypes[args.precision],
            "vae_dtype": dtypes[args.vae_precision] if args.vae_precision else None,
            "channels_last": args.channels_last}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retouch", description="Stable Diffusion img2img and inpainting, "
                                                                 "identical to AUTOMATIC1111's webui.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    img = sub.add_parser("img2img", help="run img2img / inpainting on one or more images")
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
    add_param_flags(img)
    serve = sub.add_parser("serve", help="start the A1111-compatible HTTP API")
    serve.add_argument("--ckpt", default=None, help="model loaded at start (default: the bundled tiny model)")
    serve.add_argument("--ckpt-dir", default=None, help="checkpoints requests may switch to (sd_model_checkpoint)")
    add_model_flags(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--api-auth", default=None, help="USER:PASS[,USER2:PASS2] — HTTP Basic on every route")
    serve.add_argument("--max-queue", type=int, default=16, help="queued jobs before new ones get 503")
    serve.add_argument("--outdir", default=None, help="where save_images=true writes (default outputs/img2img-images)")
    serve.add_argument("--allow-image-urls", action="store_true",
                       help="fetch http(s) image URLs in requests (never from local/private addresses)")
    serve.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest accepted image (pixels)")
    return parser


def parse_settings(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set: expected OPTION=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.command == "serve":
            from retouch.server import serve_main

            return serve_main(args)
        return run_img2img(args)
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
    if head in Img2ImgParams.field_names():
        return f"{flag(head)}: "
    return ""


def run_img2img(args: argparse.Namespace) -> int:
    from retouch.cli_img2img import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
