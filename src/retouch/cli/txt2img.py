"""``retouch txt2img --prompt … [--enable-hr --hr-scale 2 --hr-upscaler Latent …] -o OUTDIR``.

The flags are generated from :class:`~retouch.params.Txt2ImgParams` (A1111's names); the job is validated before
the model is loaded. The refiner and the hires checkpoint are found in ``--ckpt-dir`` (default: the folder of
``--ckpt``), model upscalers in ``--esrgan-models-path`` and friends.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.a1111 import txt2img_params
from retouch.cli.common import UsageError, model_kwargs, network_folders, param_values
from retouch.cli.img2img import load_styles, options_of, progress_bar, report
from retouch.outputs import Outputs, writable_problem
from retouch.params import Txt2ImgParams


def run(args: argparse.Namespace) -> int:
    options = options_of(args)
    styles = load_styles(args.styles_file)
    job = txt2img_params(param_values(args, Txt2ImgParams)).validate(options)  # before the model is loaded
    outdir = None if args.no_save else args.outdir
    if outdir is not None and (problem := writable_problem(outdir)) is not None:
        raise UsageError(f"-o/--outdir: {problem}")
    if args.ckpt_dir is not None and not Path(args.ckpt_dir).is_dir():
        raise UsageError(f"--ckpt-dir: not a folder: {args.ckpt_dir}")
    kwargs = {**model_kwargs(args), **network_folders(args)}
    import torch  # torch and diffusers once the arguments are checked: a bad one is told at once

    from retouch.loading import load_model
    from retouch.pipeline import CheckpointFolder, JobResources, generate

    model = load_model(args.ckpt, vae=args.vae, **kwargs)
    model.vae_tiling = args.vae_tiling
    torch.set_grad_enabled(False)
    checkpoints = CheckpointFolder.beside(model, **kwargs)
    if args.ckpt_dir is not None:
        checkpoints.folder = Path(args.ckpt_dir)
    outputs = Outputs(samples_dir=outdir, grids_dir=outdir, grid=not args.no_save)
    result = generate(job, model, options=options, control=progress_bar(), outputs=outputs, styles=styles,
                      resources=JobResources(checkpoints, model.upscaler_folders))
    return 1 if report(result, outputs) else 0
