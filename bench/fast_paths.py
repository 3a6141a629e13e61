"""The faster paths' distance from the default one, on the public reference cases (issue 27, exactness budget).

The default path (fp32, eager) is A1111's, bit for bit where the parity tests say so. Each faster path is the
same job with other ``load_model`` arguments or options; its distance is the max and mean |Δ| in 8-bit levels of
the final images against the default path's, over every public oracle img2img case that runs without networks
or scripts (SD1, SD1 inpainting, SD2-v, SDXL, SDXL inpainting). ``BUDGETS`` is what docs/benchmarks.md states
and what ``tests/pipeline/test_fast_paths.py`` holds each path to.

Run alone: ``python bench/fast_paths.py`` (prints the table); ``bench/run.py --sections fastpaths`` records it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETOUCH_SHARED_DIR", REPO.parent / "shared"))  # as the tests find it
CASES = ("002", "004", "005", "014", "016", "019", "025", "127", "150", "161", "182", "186", "193")

# name → (load_model keyword arguments, option overrides); dtypes by name (torch is imported lazily)
PATHS: dict[str, tuple[dict, dict]] = {
    "bf16 UNet + text encoder": ({"dtype": "bf16"}, {}),
    "bf16, channels-last": ({"dtype": "bf16", "channels_last": True}, {}),
    "bf16, bf16 VAE": ({"dtype": "bf16", "vae_dtype": "bf16"}, {}),
    "bf16, upcast_attn": ({"dtype": "bf16"}, {"upcast_attn": True}),
    "fp32, channels-last": ({"channels_last": True}, {}),
    "fp32, compiled UNet": ({"compile": True}, {}),
    "fp32, compiled UNet, frozen weights": ({"compile": "freeze"}, {}),
}
# held on SD1 cases only by tests/pipeline/test_compile.py (each architecture and size compiles once: every case
# here would add minutes to the tests); make bench measures them on every case
COMPILED, FROZEN = "fp32, compiled UNet", "fp32, compiled UNet, frozen weights"
# stated distance from the default path: (max, mean) |Δ| in 8-bit levels over the cases (the tiny reference
# models have random weights, which magnify precision effects far beyond a trained model's: see "Precision")
BUDGETS: dict[str, tuple[float, float]] = {
    "bf16 UNet + text encoder": (160, 8.0),  # measured 2026-12-06: max 120, worst mean 5.2
    "bf16, channels-last": (160, 8.0),  # 126, 5.6
    "bf16, bf16 VAE": (180, 9.0),  # 108, 6.1; 170, 5.7 on an AVX2-only CPU (emulated bf16; 2026-12-07)
    "bf16, upcast_attn": (160, 8.0),  # 139, 6.4
    "fp32, channels-last": (2, 0.01),  # 1, 0.002 (other convolution kernels: another summation order)
    "fp32, compiled UNet": (2, 0.01),  # SD1 cases 1, 0.0002 (Inductor's fused kernels: another summation order)
    "fp32, compiled UNet, frozen weights": (2, 0.01),  # tiny-sd1-b: 1
}


def _load_kwargs(spec: dict):
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    return {k: dtypes.get(v, v) if isinstance(v, str) else v for k, v in spec.items()}


def _job(case: str, options):
    from PIL import Image

    from retouch.a1111 import img2img_params

    request = json.loads((SHARED / "oracle" / "cases" / f"{case}.json").read_text())["request"]
    values = {**request, "init_images": [Image.open(SHARED / "oracle" / "inputs" / n) for n in request["init_images"]]}
    if request.get("mask"):
        values["mask"] = Image.open(SHARED / "oracle" / "inputs" / request["mask"])
    checkpoint = (request.get("override_settings") or {}).get("sd_model_checkpoint", "tiny-sd1")
    return checkpoint, img2img_params(values, base_options=options, api=True)


def _image(params, model, options):
    import numpy as np

    from retouch.pipeline import generate

    return np.asarray(generate(params, model, options=options).images[0].convert("RGB"), dtype=np.int16)


def distances(paths: dict[str, tuple[dict, dict]] = PATHS, cases: tuple[str, ...] = CASES) -> dict[str, dict]:
    """``{path: {"cases": {case: [max, mean]}, "max": …, "mean": …}}`` against the default path."""
    from retouch import load_model
    from retouch.options import Options

    base = Options()
    jobs = {case: _job(case, base) for case in cases}
    checkpoints = sorted({checkpoint for checkpoint, _ in jobs.values()})
    default = {name: load_model(SHARED / "models" / f"{name}.safetensors") for name in checkpoints}
    reference = {case: _image(params, default[ckpt], base) for case, (ckpt, params) in jobs.items()}
    del default
    out = {}
    for path, (load, overrides) in paths.items():
        options = base.with_overrides(overrides)
        models = {name: load_model(SHARED / "models" / f"{name}.safetensors", **_load_kwargs(load))
                  for name in checkpoints}
        rows = {}
        for case, (ckpt, params) in jobs.items():
            delta = abs(_image(params, models[ckpt], options) - reference[case])
            rows[case] = [int(delta.max()), float(delta.mean())]
        out[path] = {"cases": rows, "max": max(r[0] for r in rows.values()),
                     "mean": max(r[1] for r in rows.values())}
    return out


# ---------------------------------------------------------------------------------------------
# bench/run.py and the report
def section(results: dict) -> None:
    results["fast_paths"] = distances()
    for path, row in results["fast_paths"].items():
        print(f"{path}: max {row['max']}, worst mean {row['mean']:.2f} (budget {BUDGETS[path]})", flush=True)


def goal_rows(r: dict) -> list[tuple]:
    fast = r.get("fast_paths")
    if not fast:
        return []
    within = all(row["max"] <= BUDGETS[p][0] and row["mean"] <= BUDGETS[p][1] for p, row in fast.items())
    return [("faster paths within their stated distance of the default path (reference cases)",
             f"{len(fast)} paths, {len(CASES)} cases", within, "--sections fastpaths")]


def section_lines(r: dict) -> list[str]:
    fast = r.get("fast_paths")
    if not fast:
        return []
    lines = ["## Faster paths: distance from the default path (public reference cases)", "",
             f"Every public oracle img2img case without networks or scripts ({len(CASES)}: SD1, SD1 inpainting, "
             "SD2-v, SDXL, SDXL inpainting), run on the default path (fp32, eager: A1111's results) and on each "
             "faster path; absolute differences in 8-bit levels of the final image: the largest over the cases, and the worst "
             "case's mean. The tiny reference models have random weights, which magnify precision effects far "
             "beyond a trained model's (on the SD1.5-sized model see \"Precision and layout\"). The budget is what "
             "`tests/pipeline/test_fast_paths.py` holds each path to, on any CPU: on an AVX2-only one (bf16 emulated, "
             "2026-12-07) the bf16 paths' largest differences were 73–170 and worst means 5.7–6.4, the fp32 "
             "channels-last path's 1 and 0.00.", "",
             "| path | largest difference | worst mean difference | budget (largest, mean) |", "| --- | --- | --- | --- |"]
    for path, row in fast.items():
        budget = BUDGETS.get(path, ("–", "–"))
        lines.append(f"| {path} | {row['max']} | {row['mean']:.2f} | {budget[0]}, {budget[1]} |")
    return [*lines, ""]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    found = distances()
    for name, row in found.items():
        print(f"{name}: max {row['max']} mean {row['mean']:.2f}  budget {BUDGETS[name]}  {row['cases']}")
