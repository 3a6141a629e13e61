"""``retouch img2img``: single images and batches from folders (spec §3.3 mode 5).

The command line is an edge: every job's parameters are validated (into :class:`Img2ImgJob`) before
the model is loaded, then each runs through :func:`retouch.generate`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from retouch.a1111 import img2img_params
from retouch.cli.common import UsageError, flag, model_kwargs, network_folders, param_values, parse_settings
from retouch.control import JobControl
from retouch.folder_batch import plan_folder
from retouch.imageops.resize import ACCEPTED_FORMATS, fix_image
from retouch.options import Options
from retouch.outputs import Outputs, writable_problem
from retouch.params import Img2ImgJob, fixed_seed
from retouch.soft_inpainting import SoftInpainting
from retouch.styles import read_styles

logger = logging.getLogger(__name__)


def read_image(path: str | Path, what: str) -> Image.Image:
    """Open an image as A1111 reads uploads: EXIF orientation applied, palette transparency → RGBA."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what}: {path} is a folder, not an image (use --input-dir for a folder of images)")
    if not path.is_file():
        raise UsageError(f"{what}: no such file: {path}")
    try:
        image = Image.open(path, formats=ACCEPTED_FORMATS)
        image.load()
    except Image.DecompressionBombError as e:
        raise UsageError(f"{what}: {path} is too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise UsageError(f"{what}: cannot read {path} as a PNG, JPEG, WebP, BMP, TIFF or GIF image "
                         f"({str(e).split(' <')[0]})") from None
    return fix_image(image)


def load_styles(path: str | None) -> dict[str, tuple[str, str]]:
    """An A1111 ``styles.csv`` (:mod:`retouch.styles`) as name → (prompt, negative prompt)."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise UsageError(f"--styles-file: no such file: {path}")
    try:
        return {name: (s.prompt, s.negative_prompt) for name, s in read_styles(path).items()}
    except ValueError as e:
        raise UsageError(f"--styles-file: {e}") from None


def run(args: argparse.Namespace) -> int:
    options = options_of(args)
    styles = load_styles(args.styles_file)
    jobs = _validated_jobs(args, options)  # fail fast, before the model is loaded
    script = _script(args)
    outdir = None if args.no_save else (args.output_dir or args.outdir)
    if outdir is not None and (problem := writable_problem(outdir)) is not None:
        raise UsageError(f"{'--output-dir' if args.output_dir else '-o/--outdir'}: {problem}")
    kwargs = model_kwargs(args)
    import torch  # torch and diffusers once the arguments are checked: a bad one is told at once

    from retouch.loading import load_model
    from retouch.pipeline import generate

    model = load_model(args.ckpt, vae=args.vae, **kwargs, **network_folders(args))
    model.vae_tiling = args.vae_tiling
    torch.set_grad_enabled(False)
    failed = False
    for stem, job in jobs:
        if script is not None:
            failed = _run_script(script, job, model, options, styles, outdir) or failed
            continue
        outputs = Outputs(samples_dir=outdir, grids_dir=outdir, grid=not args.no_save,
                          filename_stem=stem if args.input_dir else None)
        result = generate(job, model, options=options, control=progress_bar(), outputs=outputs, styles=styles)
        failed = report(result, outputs) or failed
    return 1 if failed else 0


def _script(args: argparse.Namespace) -> tuple[Any, dict] | None:
    """``--script NAME --script-args JSON``: the script and its parsed arguments (UsageError naming the flag)."""
    if not args.script:
        if args.script_args:
            raise UsageError("--script-args: give --script too")
        return None
    from retouch.scripts import find_script

    try:
        script = find_script(args.script)
        values = json.loads(args.script_args) if args.script_args else []
        if not isinstance(values, list):
            raise ValueError(f"must be a JSON list, got {args.script_args[:60]!r}")
        return script, script.parse(values)
    except json.JSONDecodeError as e:
        raise UsageError(f"--script-args: not JSON ({e})") from None
    except ValueError as e:
        raise UsageError(f"--script{'-args' if 'script_args' in str(e) or 'JSON' in str(e) else ''}: {e}") from None


def _run_script(script: tuple[Any, dict], job: Any, model: Any, options: Options, styles: Any,
                outdir: str | None) -> bool:
    """Run an img2img script; write its images (with their infotexts) to ``outdir`` and print them."""
    from retouch.outputs import save_image
    from retouch.pipeline import CheckpointFolder, JobResources
    from retouch.scripts import run_script

    outcome = run_script(script[0], script[1], job, model, options=options, control=progress_bar(),
                         resources=JobResources(CheckpointFolder.beside(model), model.upscaler_folders), styles=styles)
    for image, text in zip(outcome.images, outcome.infotexts, strict=False):
        if outdir is not None:
            print(save_image(image, outdir, decoration=str(outcome.seed), infotext=image.info.get("parameters", text),
                             extension=options.samples_format))
    print(outcome.info or (outcome.infotexts[0] if outcome.infotexts else ""))
    return False


def report(result: Any, outputs: Outputs) -> bool:
    """Print a job's files and infotext (comments to stderr); True when saving failed."""
    for path in outputs.files:
        print(path)
    print(result.infotexts[result.index_of_first_image])
    if result.comments:
        print("\n".join(result.comments), file=sys.stderr)
    return result.save_error is not None


def options_of(args: argparse.Namespace) -> Options:
    base = Options(deterministic_batches=True) if args.deterministic_batches else Options()
    try:
        return base.with_overrides(parse_settings(args.settings))
    except ValueError as e:
        raise UsageError(f"--set: {e}") from None


def _validated_jobs(args: argparse.Namespace, options: Options) -> list[tuple[str | None, Img2ImgJob]]:
    values = param_values(args)
    if args.input_dir:  # one seed for the whole folder (A1111's fix_seed), not one per file
        values["seed"] = fixed_seed(values.get("seed", -1))
        values["subseed"] = fixed_seed(values.get("subseed", -1))
    latent_mask = read_image(args.latent_mask_path, "--latent-mask") if args.latent_mask_path else None
    values["soft_inpainting"] = _soft_inpainting(args)
    base = Options()  # A1111 reads initial_noise_multiplier from the options before --set applies
    return [(stem, img2img_params({**values, "init_images": images, "image_mask": mask, "latent_mask": latent_mask},
                                  base_options=base).validate(options))
            for stem, images, mask in _jobs(args)]


def _soft_inpainting(args: argparse.Namespace) -> SoftInpainting | None:
    """``--soft-inpainting`` [``--soft-inpainting-settings BIAS,STRENGTH,…``] → settings (A1111's order)."""
    if not args.soft_inpainting:
        if args.soft_inpainting_settings:
            raise UsageError("--soft-inpainting-settings: give --soft-inpainting too")
        return None
    raw = [v.strip() for v in (args.soft_inpainting_settings or "").split(",") if v.strip()]
    try:
        values = [int(v) if v.lstrip("-").isdigit() else float(v) for v in raw]
        return SoftInpainting.from_script_args([True, *values])
    except ValueError as e:
        raise UsageError(f"--soft-inpainting-settings: {e}") from None


def _jobs(args: argparse.Namespace):
    """(file stem, init images, mask) for each job: the positional images, or each file of --input-dir."""
    if args.input_dir:
        return list(_folder_jobs(args))
    if not args.init_images:
        raise UsageError("INIT_IMAGE: give at least one source image (or --input-dir)")
    images = [read_image(p, "INIT_IMAGE") for p in args.init_images]
    mask = read_image(args.mask, flag("mask")) if args.mask else None
    return [(None, images, mask)]


def _folder_jobs(args: argparse.Namespace):
    """Each file of ``--input-dir`` with its mask, by A1111's rules (:mod:`retouch.folder_batch`)."""
    folder = Path(args.input_dir)
    if not folder.is_dir():
        raise UsageError(f"--input-dir: not a folder: {folder}")
    mask_folder = Path(args.mask_dir) if args.mask_dir else None
    if mask_folder is not None and not mask_folder.is_dir():
        raise UsageError(f"--mask-dir: not a folder: {mask_folder}")
    plan = plan_folder(folder, mask_folder)
    if not plan.jobs and not plan.without_mask:
        raise UsageError(f"--input-dir: no images (png/jpg/jpeg/webp/tif) in {folder}")
    for path in plan.without_mask:
        print(f"retouch: warning: no mask for {path.name} in {args.mask_dir}; skipped", file=sys.stderr)
    masks: dict[Path, Image.Image] = {}
    for job in plan.jobs:
        mask = None
        if job.mask is not None:
            if job.mask not in masks:
                masks[job.mask] = read_image(job.mask, "--mask-dir")
            mask = masks[job.mask]
        yield job.image.stem, [read_image(job.image, "--input-dir")], mask


def progress_bar() -> JobControl:
    """A job control that draws a tqdm bar of the sampling steps on stderr."""
    from tqdm import tqdm

    bar: dict[str, Any] = {"bar": None}

    def on_step(control: JobControl, d: dict) -> None:
        if bar["bar"] is None or bar["bar"].total != control.sampling_steps:
            if bar["bar"] is not None:
                bar["bar"].close()
            bar["bar"] = tqdm(total=control.sampling_steps, desc="sampling", file=sys.stderr, leave=False)
        bar["bar"].n = d["i"] + 1
        bar["bar"].refresh()

    return JobControl(on_step=on_step)
