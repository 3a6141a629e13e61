"""Where bf16 pays: float32 against bfloat16 on this run's CPU (issue 27: "bf16 end to end where it pays").

``.venv/bin/python bench/run.py --sections kernels``. In one worker process: the CPU's vector level
(``torch.backends.cpu.get_cpu_capability()``), whether oneDNN has native bf16 kernels for it, a 1024² matmul and
a 320→320 3×3 convolution over (2, 320, 32, 32) channels-last in each precision, and one SD1.5-sized UNet call
at 256² (batch 2, as classifier-free guidance runs it): fp32, fp32 channels-last and bf16 channels-last. Each host's row is kept:
docs/benchmarks.md lists every CPU it was run on.
"""

from __future__ import annotations

from pathlib import Path

MATMUL, CONV_LATENT, UNET_LATENT = 1024, 32, 32
REPEATS, SLOW_S = 3, 20  # the median of three; one call alone when a call takes over 20 s (bf16 fallbacks)


def measure(args: dict) -> dict:
    import torch
    from limits_bench import _cpu_flags, _load, _timed

    from retouch import load_model
    from retouch.models.loader import cpu_has_native_kernels

    torch.set_num_threads(2)
    out: dict = {"capability": torch.backends.cpu.get_cpu_capability(),
                 "native_bf16": cpu_has_native_kernels(torch.bfloat16), **_cpu_flags()}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(MATMUL, MATMUL, dtype=dtype), torch.randn(MATMUL, MATMUL, dtype=dtype)
            out[f"matmul_{name}"] = 2 * MATMUL**3 / _timed(lambda a=a, b=b: torch.mm(a, b), REPEATS, SLOW_S) / 1e9
            conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
            x = torch.randn(2, 320, CONV_LATENT, CONV_LATENT, dtype=dtype).to(memory_format=torch.channels_last)
            flops = 2 * 320 * 320 * 9 * CONV_LATENT * CONV_LATENT * 2
            out[f"conv_{name}"] = flops / _timed(lambda conv=conv, x=x: conv(x), REPEATS, SLOW_S) / 1e9
            print(f"{name}: matmul {out[f'matmul_{name}']:.1f} GFLOP/s, conv {out[f'conv_{name}']:.1f} GFLOP/s",
                  flush=True)
        t = torch.tensor([500.0, 500.0])
        for name, dtype, channels_last in (("fp32", torch.float32, False), ("fp32_channels_last", torch.float32, True),
                                           ("bf16", torch.bfloat16, True)):
            unet = load_model(args["ckpt"], dtype=dtype, channels_last=channels_last).unet
            gen = torch.Generator().manual_seed(0)
            latent = torch.randn(2, 4, UNET_LATENT, UNET_LATENT, generator=gen).to(dtype)
            context = torch.randn(2, 77, 768, generator=gen).to(dtype)
            out[f"unet_{name}"] = _timed(lambda u=unet, x=latent, c=context: u(x, t, encoder_hidden_states=c),
                                           REPEATS, SLOW_S)
            print(f"{name}: UNet call {out[f'unet_{name}']:.2f} s", flush=True)
            del unet
    return {**out, **_load()}


def section(ckpt: Path, results: dict, worker_of, cpu: str) -> None:
    """Adds (or replaces) this host's row; the rows of other hosts stay."""
    rows = dict(results.get("precision_by_cpu", {}))
    rows[cpu] = worker_of(Path(__file__), "measure", ckpt=str(ckpt))
    results["precision_by_cpu"] = rows


def section_lines(r: dict) -> list[str]:
    rows = r.get("precision_by_cpu")
    if not rows:
        return []
    lines = [
        "## Where bf16 pays: float32 and bfloat16 by CPU",
        "",
        "On a CPU whose oneDNN kernels run bf16 natively (AVX-512, AMX), bf16 is the fast precision: a 256² job "
        "took 0.47× the fp32 job's time on the AMX host (\"Precision and layout\"). Without them (AVX2 only) PyTorch "
        "runs bf16 products through slow fallbacks; there `load_model` (and so `--precision bf16`) logs a warning, "
        "and float32 is the fast precision. Each row is one host (`make bench` adds or replaces the row of the host "
        "it runs on); the UNet call is "
        "SD1.5-sized, 256², batch 2 (bf16: channels-last); GFLOP/s of a 1024² matmul and a 320→320 3×3 convolution "
        "over a 32² latent (batch 2, channels-last). `.venv/bin/python bench/run.py --sections kernels`.",
        "",
        "| CPU | vector level | native bf16 | matmul fp32 / bf16 | conv fp32 / bf16 | UNet call fp32 | fp32 channels-last "
        "| bf16 | bf16 / fp32 | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cpu, row in rows.items():
        lines.append(
            f"| {cpu} | {row['capability']} | {'yes' if row['native_bf16'] else 'no'} | "
            f"{row['matmul_fp32']:.0f} / {row['matmul_bf16']:.0f} GFLOP/s | "
            f"{row['conv_fp32']:.0f} / {row['conv_bf16']:.0f} GFLOP/s | {row['unet_fp32']:.2f} s | "
            f"{_seconds(row.get('unet_fp32_channels_last'))} | {row['unet_bf16']:.2f} s | {row['unet_bf16'] / row['unet_fp32']:.2f}× | {row['loadavg_1min']:.2f} |")
    return [*lines, ""]


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(globals()[sys.argv[1]](json.loads(sys.argv[2]))))
