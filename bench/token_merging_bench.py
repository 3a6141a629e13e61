"""Token merging (A1111's "Token merging ratio" options): what it saves on the SD1.5-sized model, and what it changes.

``.venv/bin/python bench/run.py --sections tome``. In one worker process (bf16, channels-last, the fastest default
settings): one UNet call (batch 2, as classifier-free guidance runs it) at 512² and 768² for each ratio, median of
three after a warm-up; then the benchmark img2img job at 512² (20 steps × 0.75, Euler) for each ratio, and each
job's distance from the unmerged job's picture (max and mean level difference).
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
    model = load_model(args["ckpt"], dtype=torch.bfloat16, channels_last=True)
    unet = model.unet
    calls = []
    for size in CALL_SIZES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, size // 8, size // 8, generator=gen).to(torch.bfloat16)
        context = torch.randn(2, 77, 768, generator=gen).to(torch.bfloat16)
        t = torch.tensor([500.0, 500.0])
        for ratio in RATIOS:
            times = []
            with torch.inference_mode(), token_merging(ratio):
                for _ in range(4):
                    start = time.perf_counter()
                    unet(x, t, encoder_hidden_states=context)
                    times.append(time.perf_counter() - start)
            calls.append({"size": size, "ratio": ratio, "seconds": statistics.median(times[1:])})
            print(f"UNet call {size}² ratio {ratio}: {calls[-1]['seconds']:.2f} s", flush=True)
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


def section(ckpt: Path, results: dict, worker_of) -> None:
    results["token_merging"] = worker_of(Path(__file__), "measure", ckpt=str(ckpt))


def section_lines(r: dict) -> list[str]:
    t = r.get("token_merging")
    if not t:
        return []
    host = r.get("section_cpu", {}).get("tome", r["machine"]["cpu"])
    base = {c["size"]: c["seconds"] for c in t["calls"] if c["ratio"] == 0}
    first = t["jobs"][0]["seconds"]
    lines = [
        "## Token merging (A1111's \"Token merging ratio\", SD1.5-sized, bf16 channels-last)",
        "",
        "Token merging is A1111's own speed option (tomesd 0.1.3, as A1111 applies it: the self-attention of the "
        "full-resolution blocks only). It changes the picture by design, as it does in A1111; off (0, the default) "
        f"the UNet runs diffusers' own code. Measured on {host} with "
        "`.venv/bin/python bench/run.py --sections tome`.",
        "",
        "| ratio | UNet call 512² (batch 2) | vs off | UNet call 768² | vs off | img2img 512², 20 steps × 0.75 | vs off "
        "| picture vs off: max / mean level difference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in t["jobs"]:
        ratio = row["ratio"]
        cells = []
        for size in CALL_SIZES:
            seconds = next(c["seconds"] for c in t["calls"] if c["size"] == size and c["ratio"] == ratio)
            cells += [f"{seconds:.2f} s", f"{seconds / base[size]:.2f}×"]
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
