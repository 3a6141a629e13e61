"""Markdown for ``docs/benchmarks.md`` from the raw benchmark results."""

from __future__ import annotations


def _s(x: dict, unit: str = "s", digits: int = 2) -> str:
    return f"{x['median']:.{digits}f} {unit} ({x['min']:.{digits}f}–{x['max']:.{digits}f}, n={x['n']})"


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Reproduce with `make bench` (everything, about 15 minutes here) or "
        "`.venv/bin/python bench/run.py --quick` (tiny model only). Raw numbers: `docs/benchmarks.json`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; Python {m['python']}, "
        f"torch {m['torch']}, {m['threads']} threads; measured {m['date']}. Times are medians "
        "(min–max, n runs). Each engine runs in its own process. The SD1.5-sized model has SD1.5's exact "
        "architecture with random weights, written in the original LDM layout.",
        "",
    ]
    t = r.get("tiny")
    if t:
        lines += [
            "## Tiny model (64×64, Euler, 20 steps, denoising 0.75)",
            "",
            "| measure | value |", "| --- | --- |",
            f"| in-process latency (`process_images`) | {_s(t['latency'], 's', 3)} |",
            f"| over HTTP (`POST /sdapi/v1/img2img`, PNG in and out) | {_s(t['http_latency'], 's', 3)} |",
            f"| HTTP overhead | {(t['http_latency']['median'] - t['latency']['median']) * 1000:.0f} ms |",
        ]
        for batch, ips in t["throughput"].items():
            lines.append(f"| throughput, batch {batch} | {ips:.1f} images/s |")
        lines.append("")
    if "overhead" in r:
        lines += [
            "## Overhead: `process_images` vs its own network calls (SD1.5-sized, fp32)",
            "",
            "End-to-end time divided by the time spent inside the UNet, text encoder and VAE calls of the same "
            "run (20 steps, denoising 0.75 → 16 UNet calls). Goal ≤ 1.03.",
            "",
            "| size | sampler | end to end | in networks | ratio | UNet calls | peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in r["overhead"]:
            lines.append(f"| {row['size']}² | {row['sampler']} | {_s(row['total'])} | {_s(row['network'])} | "
                         f"{row['ratio']['median']:.4f} | {row['calls']['unet']} | {row['peak_rss_mb']:.0f} MB |")
        lines.append("")
    d = r.get("diffusers")
    if d:
        ratio = d["ours"]["median"] / d["diffusers"]["median"]
        lines += [
            f"## Against diffusers' `StableDiffusionImg2ImgPipeline` ({d['size']}², fp32, Euler)",
            "",
            "Same weights (converted folder), same dtype and threads, same number of UNet evaluations "
            f"(ours {d['ours_unet_calls']}, diffusers {d['diffusers_unet_calls']}; diffusers with 22 steps × 0.75). "
            "Goal: wall time and peak RSS ≤ diffusers'.",
            "",
            "| engine | wall time | peak RSS |", "| --- | --- | --- |",
            f"| retouch | {_s(d['ours'])} | {d['ours_peak_rss_mb']:.0f} MB |",
            f"| diffusers | {_s(d['diffusers'])} | {d['diffusers_peak_rss_mb']:.0f} MB |",
            f"| ratio retouch / diffusers | {ratio:.3f} | {d['ours_peak_rss_mb'] / d['diffusers_peak_rss_mb']:.3f} |",
            "",
        ]
    load = r.get("load")
    if load:
        lines += [
            "## Model load (SD1.5-sized single file → first ready)",
            "",
            "First row: the file just written or read by the previous step (page cache warm in both cases; "
            "dropping the page cache needs privileges this machine does not give). Goal: faster than "
            "diffusers' `from_single_file(config=local)`, load peak ≤ 1.2× the resident model.",
            "",
            "| attempt | retouch | diffusers | retouch peak RSS | diffusers peak RSS | resident weights |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for i, (ours, theirs) in enumerate(zip(load["ours"], load["diffusers"], strict=True)):
            lines.append(f"| {i + 1} | {ours['load']:.1f} s | {theirs['load']:.1f} s | {ours['peak_rss_mb']:.0f} MB | "
                         f"{theirs['peak_rss_mb']:.0f} MB | {ours['weights_mb']:.0f} MB |")
        lines.append("")
    p = r.get("precision")
    if p:
        base = p["rows"]["fp32"]["time"]
        lines += [
            f"## Precision and layout ({p['size']}², Euler, 20 steps, SD1.5-sized)",
            "",
            "Pixel deviation from the fp32 result of the same seed, in 8-bit levels.",
            "",
            "| variant | time | speed-up | max |Δ| | mean |Δ| |", "| --- | --- | --- | --- | --- |",
        ]
        for name, row in p["rows"].items():
            lines.append(f"| {name} | {row['time']:.1f} s | {base / row['time']:.2f}× | {row['max_diff']} | "
                         f"{row['mean_diff']:.2f} |")
        lines.append("")
    tv = r.get("tiled")
    if tv:
        lines += [
            f"## Tiled VAE decode ({tv['size']}², SD1.5-sized VAE, fp32)",
            "",
            "| decode | time |", "| --- | --- |",
            f"| untiled | {tv['untiled']['time']:.1f} s |", f"| tiled (512 px tiles, 25 % overlap) | {tv['tiled']['time']:.1f} s |",
            "",
            f"Difference tiled vs untiled: max {tv['max_diff']:.0f}, mean {tv['mean_diff']:.2f} levels "
            "(random weights amplify the per-tile GroupNorm statistics; real VAEs are smoother).",
            "",
        ]
    secs = r.get("section_seconds", {})
    lines.append("Time per section: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
                 + f"; total {r.get('wall_time_s', 0):.0f} s.")
    return "\n".join(lines) + "\n"
