"""``torch.compile`` of the UNet (``load_model(..., compile=True)``) against the eager UNet, and its warm-up (issue 27).

One worker process compiles from an empty cache folder (the first start), a second process with the same folder
is the next start (Inductor's on-disk caches hit). In each, the eager and the compiled UNet are the same module
with the same weights (``unet.forward`` is the eager code), called alternately so that drift in this shared
VM's speed falls on both. ``freezing`` (Inductor folding the weights into the compiled code) is measured too,
in its own process, as what retouch leaves out: it would bake LoRA-patched weights in.

Workers run as ``python bench/compile_bench.py NAME JSON``; :func:`section` drives them from ``bench/run.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SIZES, REPEATS = (256, 512), 3


# ---------------------------------------------------------------------------------------------
# Worker (its own process: Inductor's cache folder and freezing are process settings)
def unet_calls(args: dict) -> dict:
    os.environ["RETOUCH_CACHE_DIR"] = args["cache"]
    import torch

    torch.set_num_threads(2)
    if args.get("freezing"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    from retouch.models import load_model

    model = load_model(args["ckpt"], dtype=torch.bfloat16, channels_last=True, compile=True)
    unet, rows = model.unet, {}
    started = time.perf_counter()
    with torch.inference_mode():
        for size in args["sizes"]:
            latent = size // 8
            x = torch.randn(2, 4, latent, latent, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
            t, cond = torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768, dtype=torch.bfloat16)
            begin = time.perf_counter()
            compiled = unet(x, t, encoder_hidden_states=cond).sample
            warmup = time.perf_counter() - begin
            eager = unet.forward(x, t, encoder_hidden_states=cond).sample  # also the eager kernels' own warm-up
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(args["repeats"]):
                for name, call in (("eager", unet.forward), ("compiled", unet)):
                    begin = time.perf_counter()
                    call(x, t, encoder_hidden_states=cond)
                    times[name].append(time.perf_counter() - begin)
            rows[str(size)] = {"warmup_s": warmup, "eager_s": statistics.median(times["eager"]),
                               "compiled_s": statistics.median(times["compiled"]),
                               "max_difference": float((compiled.float() - eager.float()).abs().max())}
    return {"sizes": rows, "warmup_s": sum(r["warmup_s"] for r in rows.values()),
            "total_s": time.perf_counter() - started, "loadavg_1min": os.getloadavg()[0]}


# ---------------------------------------------------------------------------------------------
# The section (in bench/run.py's process)
def section(ckpt: Path, results: dict, worker) -> None:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="retouch-compile-") as cache:
        for name in ("first start", "next start"):
            out[name] = worker(__file__, "unet_calls", ckpt=str(ckpt), cache=cache, sizes=SIZES, repeats=REPEATS)
            print(f"compile, {name}: {out[name]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="retouch-compile-") as cache:
        out["freezing"] = worker(__file__, "unet_calls", ckpt=str(ckpt), cache=cache, sizes=SIZES, repeats=REPEATS,
                                 freezing=True)
        print(f"compile, freezing: {out['freezing']}", flush=True)
    results["compile"] = out


# ---------------------------------------------------------------------------------------------
# Markdown (bench/report.py)
def goal_rows(r: dict) -> list[tuple]:
    c = r.get("compile")
    if not c:
        return []
    first, later = c["first start"]["warmup_s"], c["next start"]["warmup_s"]
    return [("`--compile`: a second start reuses the cache (warm-up ≤ 10 % of the first)",
             f"{later:.1f} s vs {first:.1f} s ({later / first * 100:.0f} %)", later <= 0.1 * first,
             "--sections compile")]


def section_lines(r: dict) -> list[str]:
    c = r.get("compile")
    if not c:
        return []
    lines = ["## `--compile`: the UNet through `torch.compile` (SD1.5-sized, bf16, channels-last, batch 2)", "",
             "One UNet call (one CFG step) eager and compiled, the same module and weights, called alternately in "
             f"one process (median of {REPEATS}); warm-up is the first compiled call of each size. \"First start\" "
             "compiles into an empty cache folder; \"next start\" is a new process on the same folder. \"Freezing\" "
             "(Inductor folds the weights into the code) is what retouch does not use — LoRA networks are added "
             "into the weights in place and would need a recompile — measured for comparison. Max difference: "
             "between the compiled and eager outputs of the first call.", "",
             "| run | size | warm-up | eager | compiled | compiled / eager | max difference | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("first start", "next start", "freezing"):
        run = c.get(name)
        for size, row in (run or {}).get("sizes", {}).items():
            lines.append(f"| {name} | {size}² | {row['warmup_s']:.1f} s | {row['eager_s']:.2f} s | "
                         f"{row['compiled_s']:.2f} s | {row['compiled_s'] / row['eager_s']:.2f}× | "
                         f"{row['max_difference']:.3f} | {run['loadavg_1min']:.2f} |")
    return [*lines, ""]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    print(json.dumps(globals()[sys.argv[1]](json.loads(sys.argv[2]))))
