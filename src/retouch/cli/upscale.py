"""``retouch upscale IMAGE … --upscaler NAME --scale 2 -o OUTDIR``: A1111's Extras upscaling on the command line
(the same function as ``/sdapi/v1/extra-single-image``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import UPSCALER_FLAGS, UsageError, network_folders


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="pictures to upscale")
    parser.add_argument("-o", "--outdir", default="outputs/extras-images", help="where to write them")
    parser.add_argument("--upscaler", default="Lanczos", help="upscaler_1: Lanczos, Nearest or a model's name")
    parser.add_argument("--scale", type=float, default=2.0, help="upscale by this factor (upscaling_resize)")
    parser.add_argument("--width", type=int, default=None, help="upscale to this width (with --height)")
    parser.add_argument("--height", type=int, default=None, help="upscale to this height (with --width)")
    parser.add_argument("--no-crop", action="store_true", help="with --width/--height: keep the aspect, no crop")
    parser.add_argument("--upscaler-2", default="None", help="a second upscaler blended in (upscaler_2)")
    parser.add_argument("--upscaler-2-visibility", type=float, default=0.0, help="its weight, 0-1")
    for kind, what in UPSCALER_FLAGS:
        parser.add_argument(f"--{kind}-models-path", default=None, metavar="DIR", help=f"folder of {what} models")


def run(args: argparse.Namespace) -> int:
    from retouch.cli.img2img import read_image
    from retouch.loading import upscaler_folders
    from retouch.options import Options
    from retouch.outputs import encode_image, image_texts, next_sequence_number, writable_problem
    from retouch.upscalers import Upscalers, find_upscalers
    from retouch.upscalers.extras import ExtrasUpscale, infotext, upscale_extras

    if (args.width is None) != (args.height is None):
        raise UsageError("--width/--height: give both (or neither, to scale by --scale)")
    folders = network_folders(args)
    settings = ExtrasUpscale(resize_mode=0 if args.width is None else 1, upscaling_resize=args.scale,
                             upscaling_resize_w=args.width or 512, upscaling_resize_h=args.height or 512,
                             upscaling_crop=not args.no_crop, upscaler_1=args.upscaler, upscaler_2=args.upscaler_2,
                             extras_upscaler_2_visibility=args.upscaler_2_visibility)
    options = Options()
    upscalers = Upscalers(find_upscalers(upscaler_folders(*(folders[f"{k}_models_path"] for k, _ in UPSCALER_FLAGS)),
                                         options))
    settings.check(upscalers)  # ValueError naming the field: before any image is read
    images = [(Path(path), read_image(path, "IMAGE")) for path in args.images]
    outdir = Path(args.outdir)
    if (problem := writable_problem(outdir)) is not None:
        raise UsageError(f"-o/--outdir: {problem}")
    outdir.mkdir(parents=True, exist_ok=True)
    for path, image in images:
        result, info = upscale_extras(image if image.mode in ("RGB", "RGBA") else image.convert("RGB"), settings,
                                      upscalers, options)
        text = infotext(info)
        target = outdir / f"{next_sequence_number(outdir):05}-{path.stem}.png"
        target.write_bytes(encode_image(result, "png", texts={**image_texts(image), "postprocessing": text}))
        print(target)
        print(text)
    return 0
