"""Script and upscaler benchmarks (issue 26).

* **SD upscale** 512² → 1024² on the SD1.5-sized random checkpoint (bf16 channels-last UNet, fp32 VAE): the
  script end to end vs the time inside its own network calls (UNet, text encoder, VAE encode/decode) — what
  the script adds (upscaling, cutting and blending tiles, the per-tile bookkeeping) must stay ≤ 3 %.
* **ESRGAN** ×4 with A1111's tiling (``ESRGAN_tile`` 192, overlap 8): a full-size RRDBNet (23 blocks, 64
  filters, 16.7 M parameters, random weights — the architecture of ESRGAN, 4x-UltraSharp, Real-ESRGAN x4plus)
  at 1024² → 4096²: wall time, time inside the network, peak RSS. The reference in the same run: the same
  model on a 512² picture, tiled and untiled (one call on the whole picture), so the cost of tiling and what it
  saves in memory are both measured.

Workers run as ``python bench/scripts_bench.py NAME JSON``; :func:`section` drives them from ``bench/run.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

UPSCALE_FROM, UPSCALE_STEPS, UPSCALE_DENOISE, OVERLAP = 512, 20, 0.3, 64
ESRGAN_FILE = "esrgan-rrdb23-random-x4.pth"


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process)
def sd_upscale(args: dict) -> dict:
    import torch
    from workers import DTYPES, NetworkTimer, peak_rss_mb, source

    from retouch import load_model
    from retouch.control import JobControl
    from retouch.options import Options
    from retouch.params import Img2ImgParams
    from retouch.pipeline import CheckpointFolder, JobResources
    from retouch.scripts import find_script, run_script

    torch.set_num_threads(2)
    model = load_model(args["ckpt"], dtype=DTYPES["bf16"], channels_last=True)
    options = Options()
    job = Img2ImgParams(init_images=[source(UPSCALE_FROM)], prompt="a watercolor painting of a forest",
                        negative_prompt="blurry", width=UPSCALE_FROM, height=UPSCALE_FROM, steps=UPSCALE_STEPS,
                        denoising_strength=UPSCALE_DENOISE, sampler_name="Euler", seed=1).validate(options)
    script = find_script("SD upscale")
    script_args = script.parse([None, OVERLAP, "Lanczos", 2.0])
    resources = JobResources(CheckpointFolder.beside(model), model.upscaler_folders)
    timer = NetworkTimer(model)
    start = time.perf_counter()
    with torch.inference_mode():
        outcome = run_script(script, script_args, job, model, options=options, control=JobControl(), resources=resources)
    total = time.perf_counter() - start
    return {"total": total, "network": timer.total, "calls": timer.calls, "size": list(outcome.images[0].size),
            "peak_rss_mb": peak_rss_mb()}


def write_esrgan(path: Path) -> None:
    """A full-size ESRGAN ×4 (RRDBNet: 23 blocks, 64 filters, growth 32) with random weights, scaled as ESRGAN's
    own initialisation (×0.1) so that activations stay in range; spandrel detects it as ESRGAN."""
    import torch

    from retouch.upscalers.spandrel_models import spandrel

    spandrel()  # its torchvision stand-in, before the architecture module is imported
    from spandrel.architectures.ESRGAN.arch.RRDB import RRDBNet

    torch.manual_seed(0)
    net = RRDBNet(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("weight"):
                tensor.mul_(0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def esrgan(args: dict) -> dict:
    """Upscale an ``args["size"]``² picture ×4 with A1111's ESRGAN tiling (``tile`` 0: one call, untiled)."""
    import torch
    from workers import current_rss_mb, peak_rss_mb, source

    from retouch.options import Options
    from retouch.upscalers import Upscalers
    from retouch.upscalers.catalogue import UpscalerFolders, find_upscalers
    from retouch.upscalers.spandrel_models import ModelCache

    torch.set_num_threads(2)
    folder = Path(args["folder"])
    options = Options().with_overrides({"ESRGAN_tile": args["tile"]})
    cache = ModelCache()
    upscalers = Upscalers(find_upscalers(UpscalerFolders(esrgan=folder), options), cache)
    upscaler = upscalers.find(Path(ESRGAN_FILE).stem)
    picture = source(args["size"])
    upscalers.upscale(source(64), 4, upscaler, options)  # load the model (and warm its kernels) first
    assert upscaler.path is not None
    model = cache.get(upscaler.path)
    calls, inside = [0], [0.0]
    forward = model.model.forward

    def timed(*a, **kw):
        started = time.perf_counter()
        try:
            return forward(*a, **kw)
        finally:
            inside[0] += time.perf_counter() - started
            calls[0] += 1

    model.model.forward = timed
    before = current_rss_mb()
    start = time.perf_counter()
    result = upscalers.upscale(picture, 4, upscaler, options)
    total = time.perf_counter() - start
    return {"size": args["size"], "tile": args["tile"], "total": total, "network": inside[0], "calls": calls[0],
            "out": list(result.size), "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------------------------
# The section (in bench/run.py's process)
def section(ckpt: Path, cache: Path, results: dict, worker) -> None:
    """``worker(script, name, **args)`` runs one worker of this file in a fresh process."""
    upscale = worker(__file__, "sd_upscale", ckpt=str(ckpt))
    print(f"SD upscale {UPSCALE_FROM}→{upscale['size'][0]}: {upscale['total']:.1f} s, ratio "
          f"{upscale['total'] / upscale['network']:.4f}", flush=True)
    folder = cache / "esrgan"
    if not (folder / ESRGAN_FILE).is_file():
        write_esrgan(folder / ESRGAN_FILE)
    runs = [worker(__file__, "esrgan", folder=str(folder), size=size, tile=tile)
            for size, tile in ((512, 0), (512, 192), (1024, 192))]
    for run in runs:
        print(f"ESRGAN {run['size']}²→{run['out'][0]}² tile {run['tile']}: {run['total']:.1f} s, peak "
              f"{run['peak_rss_mb']:.0f} MB", flush=True)
    results["scripts"] = {"sd_upscale": upscale, "esrgan": runs, "steps": UPSCALE_STEPS,
                          "denoising": UPSCALE_DENOISE, "overlap": OVERLAP}


# ---------------------------------------------------------------------------------------------
# Markdown (bench/report.py)
def goal_rows(r: dict) -> list[tuple]:
    s = r.get("scripts")
    if not s:
        return []
    up = s["sd_upscale"]
    ratio = up["total"] / up["network"]
    big = s["esrgan"][-1]
    return [("SD upscale 512→1024 (bf16): time outside the network calls ≤ 3 %", f"{(ratio - 1) * 100:.2f} %",
             ratio <= 1.03, "--sections scripts"),
            ("(not a goal) ESRGAN ×4, 1024² → 4096², A1111's tiling", f"{big['total']:.0f} s, peak RSS "
             f"{big['peak_rss_mb']:.0f} MB", "info", "--sections scripts")]


def section_lines(r: dict) -> list[str]:
    s = r.get("scripts")
    if not s:
        return []
    up = s["sd_upscale"]
    calls = ", ".join(f"{name} {n}" for name, n in up["calls"].items() if n)
    lines = [
        "## Scripts and upscalers",
        "",
        f"**SD upscale** 512² → {up['size'][0]}² (Lanczos ×2, tiles 512², overlap {s['overlap']}, {s['steps']} steps × "
        f"denoising {s['denoising']}, Euler; SD1.5-sized, bf16 channels-last UNet, fp32 VAE):",
        "",
        "| end to end | in the networks | outside them | network calls | peak RSS |",
        "| --- | --- | --- | --- | --- |",
        f"| {up['total']:.1f} s | {up['network']:.1f} s | {up['total'] - up['network']:.2f} s "
        f"({(up['total'] / up['network'] - 1) * 100:.2f} %) | {calls} | {up['peak_rss_mb']:.0f} MB |",
        "",
        "**ESRGAN ×4** (full-size RRDBNet: 23 blocks, 64 filters, 16.7 M parameters, random weights; fp32, as A1111 "
        "on a CPU) through the upscaler path A1111's extras and SD upscale use — BGR tiles of `ESRGAN_tile` px "
        "with `ESRGAN_tile_overlap` 8, blended with A1111's ramps (tile 0: one call on the whole picture):",
        "",
        "| input → output | tile | wall time | in the network | calls | RSS before | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in s["esrgan"]:
        lines.append(f"| {run['size']}² → {run['out'][0]}² | {run['tile'] or 'none'} | {run['total']:.1f} s | "
                     f"{run['network']:.1f} s | {run['calls']} | {run['rss_before_mb']:.0f} MB | "
                     f"{run['peak_rss_mb']:.0f} MB |")
    untiled, tiled = s["esrgan"][0], s["esrgan"][1]
    ratio = tiled["total"] / untiled["total"]
    why = "despite computing its overlaps twice" if ratio < 1 else \
        "(its overlaps are computed twice)"
    lines += ["", f"At 512², the tiled run takes {ratio:.2f}× the untiled time, {why}, and takes the peak from "
              f"{untiled['peak_rss_mb']:.0f} MB to "
              f"{tiled['peak_rss_mb']:.0f} MB; untiled, 1024² → 4096² would hold 64-channel maps of 4096² "
              "(4.3 GB each in fp32).", ""]
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    result = globals()[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result))
