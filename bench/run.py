"""``make bench``: retouch's speed and memory, measured as ratios against references run the same way.

Writes ``docs/benchmarks.md`` (tables + the commands) and ``docs/benchmarks.json`` (raw numbers).
Each engine runs in its own process. Weights: the bundled tiny model, and a random-weight checkpoint
with SD1.5's exact architecture written (once) to the cache in the original LDM layout.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKERS = REPO / "bench" / "workers.py"


def worker(name: str, **args) -> dict:
    return worker_of(WORKERS, name, **args)


def worker_of(script: str | Path, name: str, **args) -> dict:
    """Run ``name`` of a worker script (``python SCRIPT NAME JSON``) in a fresh process; its last line's JSON."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'bench'}", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(script), name, json.dumps(args)], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def prepare_sd15(cache: Path) -> tuple[Path, Path]:
    """The SD1.5-sized random checkpoint (LDM layout) and the same weights as a diffusers folder, made (once)
    in a worker process so that this process stays small."""
    cache.mkdir(parents=True, exist_ok=True)
    ckpt = cache / "sd15-random.safetensors"
    folder = cache / "sd15-random-diffusers"
    if not ckpt.is_file() or not (folder / "model_index.json").is_file():
        print("writing the SD1.5-sized random checkpoint and its diffusers folder …", flush=True)
        worker("prepare_sd15", ckpt=str(ckpt), folder=str(folder))
    return ckpt, folder


# (size, precision, sampler). The 256² fp32 Euler job is run by the diffusers section, interleaved with
# diffusers' runs, and reused here and as the precision reference. The others run in bf16 with a
# channels-last UNet, in one process: fp32 at 512² would take ~4 min a run, and faster networks make time
# spent outside them weigh more, not less.
OVERHEAD_CASES = ((256, "fp32", "Euler"), (256, "bf16", "DPM++ 2M"), (512, "bf16", "Euler"))
REFERENCE_IMAGE = "reference-256-fp32-euler.png"


def overhead_section(ckpt: Path, results: dict, runs: int, keep: dict) -> None:
    missing = [(size, precision, sampler) for size, precision, sampler in OVERHEAD_CASES
               if (size, precision, sampler) not in keep]
    for precision in sorted({precision for _, precision, _ in missing}):
        jobs = [[size, sampler] for size, p, sampler in missing if p == precision]
        r = worker("overhead", ckpt=str(ckpt), jobs=jobs, precision=precision, channels_last=precision == "bf16")
        for run in r["runs"]:
            keep[(run["size"], precision, run["sampler"])] = {"runs": [run], "peak_rss_mb": r["peak_rss_mb"]}
    rows = []
    for size, precision, sampler in OVERHEAD_CASES:
        r = keep[(size, precision, sampler)]
        ratios = [run["total"] / run["network"] for run in r["runs"]]
        rows.append({"size": size, "precision": precision, "sampler": sampler,
                     "total": stats([x["total"] for x in r["runs"]]),
                     "network": stats([x["network"] for x in r["runs"]]), "ratio": stats(ratios),
                     "calls": r["runs"][0]["calls"], "peak_rss_mb": r["peak_rss_mb"]})
        print(f"overhead {size}² {precision} {sampler}: ratio {statistics.median(ratios):.4f}", flush=True)
    results["overhead"] = rows


def diffusers_section(ckpt: Path, folder: Path, results: dict, size: int, runs: int, keep: dict,
                      inpaint: bool = False) -> None:
    """Each engine in its own fresh process per run, alternating, so that drift in this shared VM's speed
    falls on both (measured one after the other, the same code differed by ±8 % between the two sides).
    Both sides also report the time spent inside their networks: the same diffusers UNet/VAE/CLIP code runs
    in both, so the time *outside* them is the engines' own difference, free of the VM's noise."""
    ours, theirs = [], []
    for attempt in range(runs):
        save = str(ckpt.parent / REFERENCE_IMAGE) if attempt == 0 and not inpaint else None
        ours.append(worker("overhead", ckpt=str(ckpt), size=size, sampler="Euler", runs=1, inpaint=inpaint,
                           save_image=save))
        # diffusers runs int(steps·strength) UNet steps: 22 × 0.75 → 16, as our 20 × 0.75 → 16
        theirs.append(worker("diffusers_img2img", folder=str(folder), size=size, steps=22, strength=0.75, runs=1,
                             inpaint=inpaint))
    if not inpaint:
        keep[(size, "fp32", "Euler")] = {"runs": [r["runs"][0] for r in ours],
                                         "peak_rss_mb": max(r["peak_rss_mb"] for r in ours)}

    def outside(rows: list[dict]) -> dict:
        return stats([r["runs"][0]["total"] - r["runs"][0]["network"] for r in rows if "network" in r["runs"][0]])

    results["diffusers_inpaint" if inpaint else "diffusers"] = {
        "size": size, "pipeline": "inpaint" if inpaint else "img2img",
        "ours": stats([r["runs"][0]["total"] for r in ours]), "ours_outside": outside(ours),
        "ours_peak_rss_mb": max(r["peak_rss_mb"] for r in ours), "ours_unet_calls": ours[0]["runs"][0]["calls"]["unet"],
        "diffusers": stats([r["runs"][0]["total"] for r in theirs]), "diffusers_outside": outside(theirs),
        "diffusers_peak_rss_mb": max(r["peak_rss_mb"] for r in theirs),
        "diffusers_unet_calls": theirs[0]["runs"][0]["unet_calls"], "interleaved": True}
    print("diffusers:", results["diffusers_inpaint" if inpaint else "diffusers"], flush=True)


def evict_from_page_cache(path: Path) -> bool:
    """Ask the kernel to drop the file's cached pages (no privileges needed), for a cold-cache load."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def load_section(ckpt: Path, folder: Path, results: dict) -> None:
    rows = {"ours": [], "diffusers": []}
    for attempt in ("cold", "warm"):
        for engine, name, kwargs in (("ours", "load_ours", {}), ("diffusers", "load_diffusers", {"config": str(folder)})):
            cold = attempt == "cold" and evict_from_page_cache(ckpt)
            rows[engine].append({**worker(name, ckpt=str(ckpt), **kwargs), "cold": cold})
        print(f"load ({attempt}): ours {rows['ours'][-1]['load']:.1f}s, "
              f"diffusers {rows['diffusers'][-1]['load']:.1f}s", flush=True)
    results["load"] = rows


def precision_section(ckpt: Path, results: dict, size: int, keep: dict) -> None:
    # the fp32 reference is the diffusers section's run of the same job (ours, fp32), when there is one
    fp32 = keep.get((size, "fp32", "Euler"))
    reference = ckpt.parent / REFERENCE_IMAGE if fp32 else None
    rows = worker("precision", ckpt=str(ckpt), size=size, runs=1, reference=str(reference) if reference else None)
    if fp32:
        rows = {"fp32": {"time": statistics.median(r["total"] for r in fp32["runs"]), "max_diff": 0,
                         "mean_diff": 0.0}, **rows}
    results["precision"] = {"size": size, "rows": rows}
    print("precision:", results["precision"], flush=True)


def tiled_section(ckpt: Path, results: dict, size: int) -> None:
    import numpy as np

    out = {"size": size}
    for mode, name in (("never", "untiled"), ("always", "tiled")):
        out[name] = worker("vae_decode", ckpt=str(ckpt), size=size, mode=mode, save=str(ckpt.parent / f"{name}.npy"))
    diff = np.abs(np.load(ckpt.parent / "untiled.npy").astype(int) - np.load(ckpt.parent / "tiled.npy").astype(int))
    out.update(max_diff=int(diff.max()), mean_diff=float(diff.mean()),
               border_rows_mean_diff=_seam_profile(diff, size))
    results["tiled"] = out
    print("tiled:", results["tiled"], flush=True)


def _seam_profile(diff, size: int) -> dict:
    """Mean |Δ| on the image rows where tiles are blended vs all rows (the layout "auto" picks on this
    machine: tiles of at most 768 px)."""
    from retouch.models.tiling import TILE_SIZES, tile_layout

    rows = diff.mean(axis=(0, 1, 3))
    tile, starts = tile_layout(size // 8, TILE_SIZES[0])
    seams = [y for start in starts[1:] for y in range(start * 8, (start * 8 + 8 * (tile - (starts[1] - starts[0]))))]
    return {"seam_rows": float(rows[seams].mean()) if seams else 0.0, "all_rows": float(rows.mean()),
            "tile_px": tile * 8, "tiles_per_side": len(starts)}


def large_section(ckpt: Path, results: dict, size: int) -> None:
    results["large"] = worker("large_img2img", ckpt=str(ckpt), size=size, steps=3, denoise=0.5)
    print("large:", results["large"], flush=True)


def tiny_section(results: dict) -> None:
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np
    import requests
    import torch
    from PIL import Image

    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(2)
    model = load_model("tiny")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))

    def job(batch):
        return StableDiffusionProcessingImg2Img(sd_model=model, prompt="a cat", init_images=[img], width=64,
                                                height=64, steps=20, sampler_name="Euler", seed=1, batch_size=batch)

    process_images(job(1))
    latency = []
    for _ in range(6):
        start = time.perf_counter()
        process_images(job(1))
        latency.append(time.perf_counter() - start)
    throughput: dict = {}
    for mode in ("batched", "deterministic"):
        for batch in (1, 2, 4, 8):
            times = []
            for _ in range(3):
                p = job(batch)
                p.override_settings = {"deterministic_batches": mode == "deterministic"}
                start = time.perf_counter()
                process_images(p)
                times.append(time.perf_counter() - start)
            throughput.setdefault(mode, {})[str(batch)] = batch / statistics.median(times)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    server = subprocess.Popen([sys.executable, "-m", "retouch", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                requests.get(url + "/internal/ping", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        body = {"init_images": [base64.b64encode(buffer.getvalue()).decode()], "prompt": "a cat", "width": 64,
                "height": 64, "steps": 20, "sampler_name": "Euler", "seed": 1}
        requests.post(url + "/sdapi/v1/img2img", json=body, timeout=300)
        http, overhead = [], []
        for _ in range(6):
            start = time.perf_counter()
            response = requests.post(url + "/sdapi/v1/img2img", json=body, timeout=300)
            response.raise_for_status()
            http.append(time.perf_counter() - start)
            overhead.append(http[-1] - server_timing(response)["job"])
    finally:
        server.terminate()
        server.wait(10)
    results["tiny"] = {"latency": stats(latency), "http_latency": stats(http), "http_overhead": stats(overhead),
                       "throughput": throughput}
    print("tiny:", results["tiny"], flush=True)


def batch_section(ckpt: Path, results: dict) -> None:
    """Images/s for batch 1, 2, 4, 8 on the SD1.5-sized model at 256² (bf16, channels-last UNet, Euler,
    8 steps × 0.75), A1111's batched calls vs deterministic batches."""
    r = worker("batch_throughput", ckpt=str(ckpt), size=256, steps=8, batches=[1, 2, 4, 8], precision="bf16",
               channels_last=True)
    results["batch"] = {**r, "size": 256, "precision": "bf16", "steps": 8}
    print("batch:", r["images_per_s"], flush=True)


def lora_section(ckpt: Path, results: dict, cache: Path) -> None:
    """Issue 11: a rank-32 LoRA on every attention and conv layer of the SD1.5-sized model, 512² bf16."""
    r = worker("lora", ckpt=str(ckpt), lora_dir=str(cache / "lora"), size=512, precision="bf16")
    r["overhead_ratio"] = r["per_job_s"] / r["plain_job_s"]
    r["extra_rss_mb"] = r["rss_lora_mb"] - r["rss_plain_mb"]
    results["lora"] = r
    print(f"lora: read {r['read_s']:.2f} s, patch {r['patch_s']:.2f} s, per job {r['per_job_s'] * 1000:.2f} ms "
          f"({r['overhead_ratio']:.2e} of a job), +{r['extra_rss_mb']:.0f} MB (patched layers {r['patched_mb']:.0f} MB)",
          flush=True)


def cluster_section(ckpt: Path, results: dict) -> None:
    """Issue 14: 1 vs 2 replicas, overhead against retouch serve, memory per replica — inside netns-run (it
    starts Ray)."""
    netns = REPO.parent / "shared" / "tools" / "netns-run"
    if not netns.is_file():
        print(f"cluster: skipped ({netns} not found: Ray is started only inside it)", flush=True)
        return
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(netns), sys.executable, str(REPO / "bench" / "cluster_bench.py"),
                          json.dumps({"ckpt": str(ckpt)})], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cluster bench failed:\n{out.stderr[-3000:]}")
    results["cluster"] = json.loads(out.stdout.strip().splitlines()[-1])
    print("cluster:", results["cluster"]["throughput"], flush=True)


def page_section(results: dict) -> None:
    """The web page's cost over the same API job (Chromium driving ``retouch serve``; bench/page_bench.py)."""
    from page_bench import measure

    results["page"] = measure()
    print("page:", {k: (v["page_median"], v["api_median"]) for k, v in results["page"].items()
                    if isinstance(v, dict)}, flush=True)


def soak_section(results: dict, total: int = 1000) -> None:
    """1,000 mixed requests against one server (valid jobs, malformed and hostile bodies, options, png-info,
    progress); the server's RSS every 50 requests."""
    import random

    import requests

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    server = subprocess.Popen([sys.executable, "-m", "retouch", "serve", "--port", str(port), "--max-job-steps", "40"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url)
        image = _png_b64(64)
        valid = {"init_images": [image], "width": 64, "height": 64, "steps": 4, "prompt": "a cat"}
        kinds = [
            ("job", lambda: requests.post(url + "/sdapi/v1/img2img", json={**valid, "seed": random.randrange(99)})),
            ("nan", lambda: requests.post(url + "/sdapi/v1/img2img", data='{"init_images": [], "cfg_scale": NaN}',
                                          headers={"Content-Type": "application/json"})),
            ("bad image", lambda: requests.post(url + "/sdapi/v1/img2img", json={**valid, "init_images": ["QUJD"]})),
            ("too many steps", lambda: requests.post(url + "/sdapi/v1/img2img", json={**valid, "steps": 500})),
            ("options", lambda: requests.post(url + "/sdapi/v1/options", json={"jpeg_quality": random.randint(1, 100)})),
            ("poison", lambda: requests.post(url + "/sdapi/v1/options", data='{"eta_noise_seed_delta": Infinity}',
                                             headers={"Content-Type": "application/json"})),
            ("png-info", lambda: requests.post(url + "/sdapi/v1/png-info", json={"image": image})),
            ("progress", lambda: requests.get(url + "/sdapi/v1/progress")),
        ]
        rss, statuses, started = [], {}, time.perf_counter()
        for i in range(total):
            name, send = random.Random(i).choice(kinds)
            status = send().status_code
            statuses.setdefault(name, {}).setdefault(str(status), 0)
            statuses[name][str(status)] += 1
            if i % 50 == 0 or i == total - 1:
                rss.append([i, requests.get(url + "/sdapi/v1/memory").json()["ram"]["used"] / 2**20])
    finally:
        server.terminate()
        server.wait(10)
    results["soak"] = {"requests": total, "seconds": time.perf_counter() - started, "rss_mb": rss,
                       "statuses": statuses}
    print("soak:", {"rss first/last/max": (rss[0][1], rss[-1][1], max(r for _, r in rss))}, flush=True)


def _wait_for(url: str) -> None:
    import requests

    for _ in range(600):
        try:
            requests.get(url + "/internal/ping", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _png_b64(size: int) -> str:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def server_timing(response) -> dict[str, float]:
    """The ``Server-Timing`` header (``name;dur=ms, …``) in seconds."""
    out = {}
    for part in response.headers.get("Server-Timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur) / 1000
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu += f" ({torch.backends.cpu.get_cpu_capability()})"  # one model name covers AVX2-only and AVX-512 hosts
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": platform.python_version(),
            "torch": torch.__version__, "threads": 2, "date": time.strftime("%Y-%m-%d")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model only (seconds)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--sections", default="tiny,diffusers,overhead,load,precision,tiled,batch,lora,cluster,page,"
                                              "txt2img,limits,fastpaths,kernels",  # + large,inpaint,soak,sdxl,scripts,compile,fastest,tome
                        help="comma-separated subset; results of other sections already in the JSON are kept")
    parser.add_argument("--sdxl-precisions", default="bf16,fp32", help="precisions of the SDXL section ('none': its load comparison only)")
    args = parser.parse_args()
    started_run = time.time()
    sys.path.insert(0, str(REPO / "src"))
    from compile_bench import fastest_section
    from compile_bench import section as compile_section
    from fast_paths import section as fast_paths_section
    from limits_bench import section as limits_section
    from precision_bench import section as precision_by_cpu_section
    from report import render  # bench/report.py
    from scripts_bench import section as scripts_section
    from sdxl_bench import prepare_sdxl
    from sdxl_bench import section as sdxl_section
    from token_merging_bench import section as token_merging_section
    from txt2img_bench import section as txt2img_section

    from retouch.models.loader import cache_dir

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".json")
    sections = ["tiny"] if args.quick else args.sections.split(",")
    results: dict = json.loads(raw.read_text()) if raw.is_file() and not args.quick else {}
    results["machine"] = machine()
    times = results.setdefault("section_seconds", {})

    def save() -> None:
        raw.write_text(json.dumps(results, indent=1, default=str))
        out.write_text(render(results))

    ckpt = folder = None
    if set(sections) - {"tiny", "soak", "sdxl", "page", "fastpaths"}:
        ckpt, folder = prepare_sd15(cache_dir() / "bench")
    keep: dict = {}  # worker results shared between sections of this run
    steps = {
        "tiny": lambda: tiny_section(results),
        "overhead": lambda: overhead_section(ckpt, results, args.runs, keep),
        "diffusers": lambda: diffusers_section(ckpt, folder, results, 256, args.runs, keep),
        "inpaint": lambda: diffusers_section(ckpt, folder, results, 256, 1, keep, inpaint=True),
        "load": lambda: load_section(ckpt, folder, results),
        "precision": lambda: precision_section(ckpt, results, 256, keep),
        "tiled": lambda: tiled_section(ckpt, results, 1024),
        "batch": lambda: batch_section(ckpt, results),
        "lora": lambda: lora_section(ckpt, results, cache_dir() / "bench"),
        "sdxl": lambda: sdxl_section(cache_dir() / "bench", results, worker_of, args.runs,  # ~40 min: bench-extra
                                     tuple(p for p in args.sdxl_precisions.split(",") if p != "none")),
        "cluster": lambda: cluster_section(ckpt, results),
        "page": lambda: page_section(results),
        "txt2img": lambda: txt2img_section(ckpt, folder, results, worker_of),
        "limits": lambda: limits_section(ckpt, results, worker_of),
        "limits-fp32": lambda: limits_section(ckpt, results, worker_of, "fp32"),  # ~3 min, on request
        "fastpaths": lambda: fast_paths_section(results),
        "compile": lambda: compile_section(ckpt, results, worker_of),  # ~12 min: `make bench-extra`
        "compile-fp32": lambda: compile_section(ckpt, results, worker_of, "fp32"),  # ~16 min, on request
        "fastest": lambda: fastest_section(ckpt, folder, results, worker_of,  # ~12 min: `make bench-extra`
                                           sdxl=prepare_sdxl(cache_dir() / "bench", worker_of)),
        "scripts": lambda: scripts_section(ckpt, cache_dir() / "bench", results, worker_of),  # ~15 min: `make bench-extra`
        "large": lambda: large_section(ckpt, results, 2048),  # ~25 min: `make bench-extra`
        "soak": lambda: soak_section(results),  # ~2 min: `make bench-extra`
        "tome": lambda: token_merging_section(ckpt, results, worker_of),  # ~8 min: `make bench-extra`
        "kernels": lambda: precision_by_cpu_section(ckpt, results, worker_of, results["machine"]["cpu"]),  # 1–6 min
    }
    for name in sections:
        started = time.time()
        steps[name]()
        times[name] = time.time() - started
        results.setdefault("section_cpu", {})[name] = results["machine"]["cpu"]  # shared VMs change host
        save()  # partial results survive a failing later section
    results["wall_time_s"] = sum(times.values())
    if args.sections == parser.get_default("sections") and not args.quick:
        results["make_bench_wall_s"] = time.time() - started_run  # the whole default run, preparation included
    save()
    print(f"wrote {out} and {raw}; sections took {results['wall_time_s']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
