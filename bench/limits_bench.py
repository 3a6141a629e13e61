"""How close the networks run to this machine's limit (issue 27).

In one run: the machine's measured peaks (a 4096² matmul and an SD-shaped 3×3 convolution, bf16 and fp32), the
FLOPs of each network call of the SD1.5-sized model (counted with ``torch.utils.flop_counter``), each call's
achieved FLOP/s as a share of the peak of its precision, and a per-operator profile of one UNet call grouped
into attention, convolutions, matmuls, normalisation, layout conversions and elementwise work.

Workers run as ``python bench/limits_bench.py NAME JSON``; :func:`section` drives them from ``bench/run.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

LATENT, BATCH, REPEATS = 64, 2, 3  # 512² pictures; batch 2 = one CFG step
EXP_BLOCK, EXP_ROUNDS = 32 * 1024, 2000  # the exponential's rate: 128 KiB fp32 blocks, in the cache


def _timed(fn, repeats: int, single_over: float | None = None) -> float:
    """A warm-up call (kernel selection, weight packing), then the median of ``repeats`` calls; or one more call
    alone when the warm-up took over ``single_over`` seconds (a slow fallback kernel, not worth three runs)."""
    start = time.perf_counter()
    fn()
    if single_over is not None and time.perf_counter() - start > single_over:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load() -> dict:
    """``os.getloadavg`` over the last minute: every figure here is stated with the machine's load."""
    return {"loadavg_1min": os.getloadavg()[0]}


def _cpu_flags() -> dict:
    """Whether the CPU has the matrix units the bf16 kernels would use (``amx_bf16``) or only ``avx512_bf16``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process)
def peaks(args: dict) -> dict:
    """TFLOP/s of a 4096² matmul and of a 320→320 3×3 convolution over (2, 320, 64, 64), channels-last, and
    the fp32 exponentials per second (G/s) of ``torch.exp`` on a block that stays in the cache: the softmax's
    part of attention."""
    import torch

    torch.set_num_threads(2)
    out = {}
    with torch.inference_mode():
        for name in args.get("precisions", ("bf16", "fp32")):
            n, dtype = 4096, {"bf16": torch.bfloat16, "fp32": torch.float32}[name]
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            seconds = _timed(lambda a=a, b=b: torch.mm(a, b), REPEATS)
            out[f"matmul_{name}"] = 2 * n**3 / seconds / 1e12
            conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
            x = torch.randn(BATCH, 320, LATENT, LATENT, dtype=dtype).to(memory_format=torch.channels_last)
            seconds = _timed(lambda conv=conv, x=x: conv(x), REPEATS * 3)
            out[f"conv_{name}"] = 2 * 320 * 320 * 9 * LATENT * LATENT * BATCH / seconds / 1e12
        scores, weights = torch.rand(EXP_BLOCK) * -10, torch.empty(EXP_BLOCK)  # a softmax's x - max, in cache
        seconds = _timed(lambda: [torch.exp(scores, out=weights) for _ in range(EXP_ROUNDS)], REPEATS)
        out["exp_fp32"] = EXP_BLOCK * EXP_ROUNDS / seconds / 1e9
    return {**out, **_load(), **_cpu_flags()}


def networks(args: dict) -> dict:
    """FLOPs and time of one UNet call (batch 2, 64² latent), one VAE encode and one VAE decode (512²), run as a
    job runs them: within its memory settings (:mod:`retouch.models.memory`), the VAE through the model's own
    ``encode_first_stage`` / ``decode_first_stage``; and the softmax's exponentials per UNet call."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from workers import DTYPES

    from retouch import load_model
    from retouch.models.memory import keep_freed_blocks, return_freed_memory

    torch.set_num_threads(2)
    dtype, vae_dtype = DTYPES[args["precision"]], DTYPES[args["vae_precision"]]
    model = load_model(args["ckpt"], dtype=dtype, vae_dtype=vae_dtype, channels_last=True)
    unet = model.unet
    latent = torch.randn(BATCH, 4, LATENT, LATENT, dtype=dtype)
    context = torch.randn(BATCH, 77, 768, dtype=dtype)
    t = torch.full((BATCH,), 500.0)
    picture = torch.rand(1, 3, LATENT * 8, LATENT * 8) * 2 - 1
    z = torch.randn(1, 4, LATENT, LATENT)
    extra = {"cross_attention_kwargs": {"upcast": True}} if args.get("upcast") else {}

    def unet_call():
        with keep_freed_blocks():  # as the sampling runs it
            return unet(latent, t, encoder_hidden_states=context, **extra).sample

    calls = {"unet": unet_call, "vae_encode": lambda: model.encode_first_stage(picture),
             "vae_decode": lambda: model.decode_first_stage(z)}
    out = {}
    with torch.inference_mode(), return_freed_memory():
        for name, call in calls.items():
            exps = [0]
            counter = FlopCounterMode(display=False, custom_mapping=_attention_mapping(exps))
            with counter:
                call()
            flops = counter.get_total_flops()
            by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
            seconds = _timed(call, REPEATS if name == "unet" else 2)
            out[name] = {"flops": flops, "seconds": seconds, "tflops": flops / seconds / 1e12, "by_op": by_op,
                         "exps": exps[0]}
        if args.get("profile"):
            out["profile"] = _profile(calls["unet"])
    return {**out, "precision": args["precision"], "vae_precision": args["vae_precision"],
            "upcast": bool(args.get("upcast")), **_load()}


def _attention_mapping(exps: list[int]) -> dict:
    """The CPU flash-attention kernel's FLOPs (``flop_counter`` counts only the GPU kernels): Q·Kᵀ and P·V, a
    multiply-add = 2, the softmax not counted — the convention of its ``sdpa_flop``. Its softmax's exponentials
    (one per query-key pair and head) are added to ``exps[0]``."""
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    def count(query, key, value, *args, out_shape=None, **kwargs) -> int:
        batch, heads, queries, _ = query
        exps[0] += batch * heads * queries * key[2]
        return sdpa_flop_count(query, key, value)

    return {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: count}

CATEGORIES = (  # (category, substrings of aten operator names), first match wins
    ("attention", ("scaled_dot_product", "flash_attention", "softmax", "baddbmm", "bmm")),
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("matmul (linear)", ("addmm", "linear", "aten::mm", "matmul")),
    ("normalisation", ("group_norm", "layer_norm", "native_batch_norm")),
    ("layout conversions", ("copy_", "contiguous", "clone", "to_copy", "permute", "transpose", "reshape", "view",
                            "cat", "empty", "_to_dense", "as_strided")),
    ("elementwise", ("add", "mul", "silu", "gelu", "sigmoid", "div", "sub", "exp", "sin", "cos", "upsample",
                     "rsqrt", "pow", "neg", "tanh", "chunk", "split")),
)


def _profile(call) -> dict:
    """Self CPU time of one UNet call by category (and the top operators), from ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    by_category: dict[str, float] = {}
    operators = []
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        seconds = event.self_cpu_time_total / 1e6
        category = next((c for c, keys in CATEGORIES if any(k in event.key for k in keys)), "other")
        by_category[category] = by_category.get(category, 0.0) + seconds
        operators.append((event.key, seconds, event.count))
    operators.sort(key=lambda row: -row[1])
    return {"categories": by_category, "top": operators[:12]}


# ---------------------------------------------------------------------------------------------
# The section (in bench/run.py's process)
def section(ckpt: Path, results: dict, worker, precision: str = "bf16") -> None:
    """The peaks and the networks; ``precision="fp32"`` (section ``limits-fp32``, for a CPU without native bf16
    kernels, where a bf16 peak would take minutes to measure): float32 only, under ``limits_fp32``."""
    if precision == "fp32":
        peak = worker(__file__, "peaks", precisions=["fp32"])
        run = worker(__file__, "networks", ckpt=str(ckpt), precision="fp32", vae_precision="fp32", profile=True)
        results["limits_fp32"] = {"peaks": peak, "networks": [run]}
        return
    peak = worker(__file__, "peaks")
    print(f"peaks: {peak}", flush=True)
    runs = [worker(__file__, "networks", ckpt=str(ckpt), precision=p, vae_precision=v, profile=p == "bf16" and v == "fp32",
                   upcast=upcast)
            for p, v, upcast in (("bf16", "fp32", False), ("bf16", "bf16", True), ("fp32", "fp32", False))]
    for run in runs:
        print(f"networks {run['precision']}/{run['vae_precision']} upcast {run['upcast']}: "
              + ", ".join(f"{k} {run[k]['seconds']:.2f} s {run[k]['tflops']:.3f} TFLOP/s"
                          for k in ("unet", "vae_encode", "vae_decode")), flush=True)
    results["limits"] = {"peaks": peak, "networks": runs}


# ---------------------------------------------------------------------------------------------
# Markdown (bench/report.py)
def _share(run: dict, name: str, peaks: dict, best: bool = False) -> float:
    """The call's FLOP/s over the matmul peak of its precision (``best``: over the faster of matmul and conv)."""
    precision = run["precision"] if name == "unet" else run["vae_precision"]
    peak = max(peaks[f"matmul_{precision}"], peaks[f"conv_{precision}"]) if best else peaks[f"matmul_{precision}"]
    return run[name]["tflops"] / peak


def _units(peaks: dict) -> str:
    if "amx_bf16" not in peaks:
        return "matrix units not recorded"
    if peaks["amx_bf16"]:
        return "AMX (`amx_bf16`): bf16 matmuls on the tile units"
    return ("no AMX on this run's host, `avx512_bf16` only" if peaks.get("avx512_bf16") else "no AMX, no avx512_bf16") \
        + " — the bf16 peak is the vector units'"


def _reading(seconds: dict, flops: dict, peaks: dict, total: float, precision: str = "bf16") -> str:
    def rate(name: str) -> float:
        peak = peaks[f"conv_{precision}" if name == "convolution" else f"matmul_{precision}"]
        return flops.get(name, 0) / seconds[name] / 1e12 / peak * 100 if seconds.get(name) else 0.0

    def lost(name: str) -> float:  # seconds beyond what the category's FLOPs take at its kernel's peak
        return seconds.get(name, 0.0) * (1 - rate(name) / 100)

    dense = sum(seconds.get(k, 0.0) for k in ("convolution", "matmul (linear)"))
    gaps = sorted(("attention", "convolution", "matmul (linear)"), key=lost, reverse=True)
    return (f"Reading: the convolutions and linear layers ({dense / total * 100:.0f} % of the call) run at "
            f"{rate('convolution'):.0f} % and {rate('matmul (linear)'):.0f} % of what their kernels reach alone; "
            f"attention (PyTorch's CPU flash kernel, SD1's 40-wide heads over 4,096 positions) is "
            f"{seconds.get('attention', 0.0) / total * 100:.0f} % of the time at {rate('attention'):.0f} % of the "
            f"matmul peak. Most time beyond the kernels' peaks goes to {gaps[0]} ({lost(gaps[0]):.2f} s) and "
            f"{gaps[1]} ({lost(gaps[1]):.2f} s) — the gap between this UNet and the machine's limit. Normalisation, "
            "elementwise work and layout conversions together are "
            f"{sum(seconds.get(k, 0.0) for k in ('normalisation', 'elementwise', 'layout conversions')) / total * 100:.0f}"
            " %: fusing them (GroupNorm + SiLU, `torch.compile`) could win at most that.")


def _category_flops(by_op: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for op, n in by_op.items():
        category = next((c for c, keys in CATEGORIES if any(k.replace("aten::", "") in op for k in keys)), "other")
        out[category] = out.get(category, 0) + n
    return out


PREPACK_PROBE = (
    "Probed and left out (2026-12-07, the AMX host): convolution weights pre-packed for oneDNN in eager mode "
    "(`torch.ops.mkldnn._reorder_convolution_weight` once, `_convolution_pointwise` per call; Inductor's freezing "
    "does the same). Alone, a 2560→1280 3×3 convolution over an 8² latent took 7.2 instead of 26.6 ms, and the "
    "whole bf16 UNet's output was bit-identical to the eager channels-last call's. Within a job's memory "
    "settings, where the eager call's reordered copy of the weight comes from the heap instead of being faulted "
    "in, the gain shrinks: the UNet's convolutions took 0.52 instead of 0.66 s and the call 1.94 instead of "
    "2.02 s (4 %), for 1.1 GB more resident memory (a copy of every convolution weight). The convolutions' "
    "remaining distance from the peak is mostly the 8² and 16² layers: 128–512 output positions per call, too "
    "few to keep the matrix units busy (a 1280→1280 3×3 over 8² runs at 0.4 TFLOP/s packed).")


OPENVINO_PROBE = (
    "OpenVINO, which the issue allows if PyTorch cannot get there, was measured and not adopted (2026-12-07, the "
    "AMX host, a scratch install of OpenVINO 2026.4.1, nothing of it in the project): the same SD1.5-sized UNet "
    "converted with `openvino.convert_model` (48 s) and compiled for the CPU with a bf16 inference-precision "
    "hint, 2 threads, latency mode, took 1.87–1.91 s per call (batch 2, 512²), against 1.89–1.94 s for "
    "PyTorch's eager bf16 channels-last UNet in the same process within a job's memory settings; its output "
    "differed from the fp32 UNet's by up to 0.059 (PyTorch's bf16: 0.041). It does not change the floor above "
    "either: its kernels are oneDNN's, as PyTorch's are.")


def unet_floor(run: dict, peaks: dict) -> dict | None:
    """The least time one UNet call of ``run`` could take on this machine: its convolutions' FLOPs at the
    convolution peak, its other products (linear layers, attention's Q·Kᵀ and P·V) at the matmul peak and its
    softmax's exponentials at the measured exp rate (None for results without the exp counts)."""
    precision, unet = run["precision"], run["unet"]
    if "exps" not in unet or "exp_fp32" not in peaks:
        return None
    flops = _category_flops(unet.get("by_op", {}))
    conv = flops.get("convolution", 0) / (peaks[f"conv_{precision}"] * 1e12)
    products = (unet["flops"] - flops.get("convolution", 0)) / (peaks[f"matmul_{precision}"] * 1e12)
    exps = unet["exps"] / (peaks["exp_fp32"] * 1e9)
    seconds = conv + products + exps
    return {"conv_s": conv, "products_s": products, "exps_s": exps, "seconds": seconds,
            "best_share": unet["flops"] / seconds / 1e12 / peaks[f"matmul_{precision}"]}


def goal_rows(r: dict) -> list[tuple]:
    lim = r.get("limits")
    if not lim:
        return []
    peaks, bf16 = lim["peaks"], lim["networks"][0]
    share, floor = _share(bf16, "unet", peaks), unet_floor(bf16, peaks)
    limit = f"; this machine's limit: {floor['best_share'] * 100:.0f} %" if floor else ""
    rows = [("SD1.5-sized UNet at 512², bf16: ≥ 70 % of the measured bf16 matmul peak", f"{share * 100:.0f} % "
             f"({bf16['unet']['tflops']:.2f} of {peaks['matmul_bf16']:.2f} TFLOP/s{limit})", share >= 0.7,
             "--sections limits")]
    vae = {run["vae_precision"]: run["vae_encode"]["seconds"] + run["vae_decode"]["seconds"]
           for run in lim["networks"][:2]}
    if {"fp32", "bf16"} <= set(vae):
        run = lim["networks"][0]
        # the least a bf16 VAE pass can take here: its FLOPs at the best bf16 kernel rate measured
        least = (run["vae_encode"]["flops"] + run["vae_decode"]["flops"]) / (
            max(peaks["conv_bf16"], peaks["matmul_bf16"]) * 1e12)
        rows.append(("VAE at 512² (encode + decode), `--vae-precision bf16`: ≤ 1/3 of the fp32 VAE's time",
                     f"{vae['bf16']:.2f} s vs {vae['fp32']:.2f} s ({vae['bf16'] / vae['fp32']:.2f}×; this "
                     f"machine's limit at its bf16 peak: {least / vae['fp32']:.2f}×)",
                     vae["bf16"] <= vae["fp32"] / 3, "--sections limits"))
    return rows


def section_lines(r: dict) -> list[str]:
    lim = r.get("limits")
    if not lim:
        return []
    peaks = lim["peaks"]
    lines = [
        "## Limits: the networks against this machine's peak",
        "",
        f"Measured in the same run (load average {peaks['loadavg_1min']:.2f} over the minute before; 2 threads): "
        f"4096² matmul **{peaks['matmul_bf16']:.2f} TFLOP/s bf16**, {peaks['matmul_fp32']:.2f} TFLOP/s fp32; a "
        f"320→320 3×3 convolution over (2, 320, 64, 64), channels-last: {peaks['conv_bf16']:.2f} TFLOP/s bf16, "
        f"{peaks['conv_fp32']:.2f} TFLOP/s fp32. CPU: {_units(peaks)}. FLOPs counted with `torch.utils.flop_counter` "
        "(a multiply-add = 2; the CPU flash-attention kernel added with its `sdpa_flop` rule, which the counter "
        "applies to the GPU kernels only). Load: the 1-minute load average at the end of the measurement, this "
        "run's own 2 threads included. On this shared VM the bf16 peaks swing between minutes (three back-to-back "
        "measurements on 2026-12-07: matmul 1.20–1.48, conv 1.06–2.42 TFLOP/s): read shares within one run.",
        "",
        "| network call (SD1.5-sized, 512²) | precision | GFLOP | time | TFLOP/s | of the matmul peak | of the best "
        "kernel (matmul or conv) | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in lim["networks"]:
        lines += _network_rows(run, peaks)
    floor = unet_floor(lim["networks"][0], peaks)
    if floor:
        bf16 = lim["networks"][0]
        lines += ["", f"What this machine allows one bf16 UNet call: its convolutions at the convolution peak "
                  f"({floor['conv_s']:.2f} s), its other products (linear layers, attention's Q·Kᵀ and P·V) at the "
                  f"matmul peak ({floor['products_s']:.2f} s) and its softmax's {bf16['unet']['exps'] / 1e9:.2f} G "
                  f"exponentials at {peaks['exp_fp32']:.1f} G/s, `torch.exp`'s rate on a block in the cache "
                  f"({floor['exps_s']:.2f} s): {floor['seconds']:.2f} s, at which the call would run at "
                  f"{floor['best_share'] * 100:.0f} % of the matmul peak. It took {bf16['unet']['seconds']:.2f} s: "
                  f"the floor is {floor['seconds'] / bf16['unet']['seconds'] * 100:.0f} % of that. Each network call runs as "
                  "a job runs it: with the job's memory settings (freed blocks kept in the heap during sampling, "
                  "`retouch.models.memory`), the VAE through the model's own encode and decode."]
    lines += ["", PREPACK_PROBE, "", OPENVINO_PROBE]
    profiled = next((run for run in lim["networks"] if "profile" in run), None)
    if profiled:
        lines += _profile_lines(profiled, peaks)
    return [*lines, "", *fp32_lines(r)]


def _network_rows(run: dict, peaks: dict) -> list[str]:
    unet = "UNet, batch 2 (one CFG step)" + (", `upcast_attn`" if run.get("upcast") else "")
    lines = []
    for name, label in (("unet", unet), ("vae_encode", "VAE encode"), ("vae_decode", "VAE decode")):
        precision = run["precision"] if name == "unet" else run["vae_precision"]
        row = run[name]
        lines.append(f"| {label} | {precision} | {row['flops'] / 1e9:.0f} | {row['seconds']:.2f} s | "
                     f"{row['tflops']:.3f} | {_share(run, name, peaks) * 100:.0f} % | "
                     f"{_share(run, name, peaks, best=True) * 100:.0f} % | {run['loadavg_1min']:.2f} |")
    return lines


def _profile_lines(run: dict, peaks: dict) -> list[str]:
    """The profiled UNet call's time by category, each category's rate against its kernel's peak in the call's
    precision, the reading and the top operators."""
    precision = run["precision"]
    profile, flops = run["profile"], _category_flops(run["unet"].get("by_op", {}))
    total = sum(profile["categories"].values())
    lines = ["", f"Where one {precision} UNet call's time goes (`torch.profiler`, self CPU time of aten operators; "
             "the rate is the category's counted FLOPs over that time, against the conv peak for convolutions and "
             "the matmul peak otherwise):", "",
             "| category | time | share | GFLOP | TFLOP/s | of its peak |", "| --- | --- | --- | --- | --- | --- |"]
    for name, seconds in sorted(profile["categories"].items(), key=lambda kv: -kv[1]):
        work = flops.get(name, 0)
        peak = peaks[f"conv_{precision}" if name == "convolution" else f"matmul_{precision}"]
        rate = f"{work / seconds / 1e12:.3f} | {work / seconds / 1e12 / peak * 100:.0f} %" if work else "– | –"
        lines.append(f"| {name} | {seconds:.3f} s | {seconds / total * 100:.1f} % | {work / 1e9:.0f} | {rate} |")
    lines += ["", _reading(profile["categories"], flops, peaks, total, precision)]
    lines += ["", "| top operators | self time | calls |", "| --- | --- | --- |"]
    return lines + [f"| `{key}` | {seconds:.3f} s | {count} |" for key, seconds, count in profile["top"]]


def fp32_lines(r: dict) -> list[str]:
    """The float32 limits of a CPU without native bf16 kernels (section ``limits-fp32``)."""
    lim = r.get("limits_fp32")
    if not lim:
        return []
    peaks, run = lim["peaks"], lim["networks"][0]
    cpu = r.get("section_cpu", {}).get("limits-fp32", "another host")
    return ["## Limits in float32 (a CPU without native bf16 kernels)", "",
            f"The section above in float32 alone, measured on {cpu}, where float32 is the fast precision (\"Where "
            f"bf16 pays\"): 4096² matmul {peaks['matmul_fp32']:.3f} TFLOP/s, the 3×3 convolution "
            f"{peaks['conv_fp32']:.3f} TFLOP/s (load {peaks['loadavg_1min']:.2f}). Same method. "
            "`.venv/bin/python bench/run.py --sections limits-fp32` (3 minutes on that host).", "",
            "| network call (SD1.5-sized, 512²) | precision | GFLOP | time | TFLOP/s | of the matmul peak | of the best "
            "kernel (matmul or conv) | load |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *_network_rows(run, peaks), *_above_peak(run, peaks), *_profile_lines(run, peaks), ""]


def _above_peak(run: dict, peaks: dict) -> list[str]:
    """A note when a call outruns the matmul peak: the 4096² product is not the CPU's best rate for it."""
    if all(_share(run, name, peaks) <= 1 for name in ("unet", "vae_encode", "vae_decode")):
        return []
    return ["", f"Shares above 100 %: a 4096² {run['precision']} matmul is not this CPU's best product rate (a "
            "smaller product can run faster: see the linear layers' rate in the profile below), so the column to "
            "read is the best kernel's."]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    result = globals()[sys.argv[1]](json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}"))
    print(json.dumps(result))
