"""Token merging (A1111's "Token merging ratio" options): what it saves on the SD1.5-sized model, and what it changes.

``.venv/bin/python bench/run.py --sections tome``. In one worker process: one UNet call (batch 2, as
classifier-free guidance runs it) for each ratio, the median of three after a warm-up — in fp32 at 512² (CPU
users' default precision), and in bf16 channels-last (the fastest default settings) at 512² and 768²; then the
benchmark img2img job at 512² (bf16, 20 steps × 0.75, Euler) for each ratio, and each job's distance from the
unmerged job's picture (max and mean level difference).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

RATIOS = (0.0, 0.3, 0.5)
CALL_SIZES = (512, 768)
JOB_SIZE = 512


def measure(args: dict) -> dict:
    import numpy as np
    import torch
    from workers import job, peak_rss_mb

    from retouch import load_model
    from retouch.models.token_merging import token_merging
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(2)
    fp32 = load_model(args["ckpt"])
    calls = _calls(fp32.unet, torch.float32, (512,), token_merging)  # CPU users' default precision
    del fp32
    model = load_model(args["ckpt"], dtype=torch.bfloat16, channels_last=True)
    calls += _calls(model.unet, torch.bfloat16, CALL_SIZES, token_merging)
    jobs, reference = [], None
    for ratio in RATIOS:
        p = StableDiffusionProcessingImg2Img(sd_model=model, **job(JOB_SIZE, "Euler"),
                                             override_settings={"token_merging_ratio_img2img": ratio})
        start = time.perf_counter()
        image = np.asarray(process_images(p).images[0], dtype=np.int16)
        row = {"ratio": ratio, "seconds": time.perf_counter() - start}
        reference = image if reference is None else reference
        difference = np.abs(image - reference)
        row.update(max_diff=int(difference.max()), mean_diff=float(difference.mean()))
        jobs.append(row)
        print(f"job {JOB_SIZE}² ratio {ratio}: {row['seconds']:.1f} s, max diff {row['max_diff']}", flush=True)
    return {"calls": calls, "jobs": jobs, "peak_rss_mb": peak_rss_mb()}


def _calls(unet, dtype, sizes, token_merging) -> list[dict]:
    """One UNet call (batch 2) per size and ratio: the median of three after a warm-up."""
    import torch

    calls = []
    for size in sizes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, size // 8, size // 8, generator=gen).to(dtype)
        context = torch.randn(2, 77, 768, generator=gen).to(dtype)
        t = torch.tensor([500.0, 500.0])
        for ratio in RATIOS:
            times = []
            with torch.inference_mode(), token_merging(ratio):
                for _ in range(4):
                    start = time.perf_counter()
                    unet(x, t, encoder_hidden_states=context)
                    times.append(time.perf_counter() - start)
            precision = "fp32" if dtype == torch.float32 else "bf16"
            calls.append({"size": size, "precision": precision, "ratio": ratio,
                          "seconds": statistics.median(times[1:])})
            print(f"UNet call {size}² {precision} ratio {ratio}: {calls[-1]['seconds']:.2f} s", flush=True)
    return calls


def section(ckpt: Path, results: dict, worker_of) -> None:
    results["token_merging"] = worker_of(Path(__file__), "measure", ckpt=str(ckpt))


def section_lines(r: dict) -> list[str]:
    t = r.get("token_merging")
    if not t:
        return []
    host = r.get("section_cpu", {}).get("tome", r["machine"]["cpu"])
    columns = [(512, "fp32"), *((size, "bf16") for size in CALL_SIZES)]
    seconds = {(c["size"], c.get("precision", "bf16"), c["ratio"]): c["seconds"] for c in t["calls"]}
    first = t["jobs"][0]["seconds"]
    lines = [
        "## Token merging (A1111's \"Token merging ratio\", SD1.5-sized)",
        "",
        "Token merging is A1111's own speed option (tomesd 0.1.3, as A1111 applies it: the self-attention of the "
        "full-resolution blocks only). It changes the picture by design, as it does in A1111; off (0, the default) "
        f"the UNet runs diffusers' own code. Measured on {host} with "
        "`.venv/bin/python bench/run.py --sections tome`.",
        "",
        "One UNet call has batch 2, as classifier-free guidance runs it; bf16 runs channels-last; the job is bf16.",
        "",
        "| ratio | " + " | ".join(f"UNet call {size}² {precision} | vs off" for size, precision in columns
                             if (size, precision, 0.0) in seconds)
        + " | img2img 512², 20 steps × 0.75 | vs off | picture vs off: max / mean level difference |",
        "| --- " * (2 * sum((s, p, 0.0) in seconds for s, p in columns) + 4) + "|",
    ]
    for row in t["jobs"]:
        ratio = row["ratio"]
        cells = []
        for size, precision in columns:
            if (size, precision, ratio) in seconds:
                value = seconds[(size, precision, ratio)]
                cells += [f"{value:.2f} s", f"{value / seconds[(size, precision, 0.0)]:.2f}×"]
        lines.append(f"| {ratio:g} | {' | '.join(cells)} | {row['seconds']:.1f} s | {row['seconds'] / first:.2f}× | "
                     f"{row['max_diff']} / {row['mean_diff']:.2f} |")
    lines += ["", "The weights are random: the differences measure how far the picture moves, not how good a "
              "trained model's merged picture looks.", ""]
    return lines


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(globals()[sys.argv[1]](json.loads(sys.argv[2]))))
