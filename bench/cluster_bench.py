"""The cluster's numbers (issue 14), run inside ``../shared/tools/netns-run`` (it starts Ray):

* throughput with 1 and 2 replicas (one thread each) on the tiny model and on the SD1.5-sized one at 256²;
* per-request overhead against ``retouch serve`` (the same tiny request, one at a time);
* memory per replica (RSS of each Serve replica process).

``python bench/cluster_bench.py '{"ckpt": …}'`` prints one JSON object on its last line.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: str, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "retouch", command, "--port", str(port), "--nowebui", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            requests.get(url + "/internal/ping", timeout=2)
            return process, url
        except requests.RequestException:
            if process.poll() is not None:
                raise RuntimeError(f"retouch {command} exited") from None
            time.sleep(1)
    raise RuntimeError(f"retouch {command} did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()


def png(size: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((size, size), 40).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def body(size: int, steps: int, seed: int) -> dict:
    return {"init_images": [png(size)], "prompt": "a watercolor painting of a forest", "negative_prompt": "blurry",
            "width": size, "height": size, "steps": steps, "denoising_strength": 0.5, "sampler_name": "Euler",
            "seed": seed}


def throughput(url: str, requests_n: int, clients: int, size: int, steps: int) -> float:
    """Requests per second for ``requests_n`` jobs sent by ``clients`` concurrent clients (after one warm-up)."""
    assert requests.post(url + "/sdapi/v1/img2img", json=body(size, steps, 0), timeout=3600).status_code == 200
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(lambda i: requests.post(url + "/sdapi/v1/img2img", json=body(size, steps, i + 1),
                                                      timeout=3600).status_code, range(requests_n)))
    assert set(codes) == {200}, codes
    return requests_n / (time.perf_counter() - started)


def latency(url: str, n: int = 15) -> float:
    request = body(64, 4, 1)
    requests.post(url + "/sdapi/v1/img2img", json=request, timeout=600)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        assert requests.post(url + "/sdapi/v1/img2img", json=request, timeout=600).status_code == 200
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def replica_rss_mb() -> list[float]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any("ServeReplica:retouch:Worker" in part for part in p.info["cmdline"] or []):
            out.append(p.memory_info().rss / 2**20)
    return sorted(out)


def main(args: dict) -> dict:
    results: dict = {"throughput": {}, "replica_rss_mb": {}}
    cases = {"tiny": (["--ckpt", "tiny"], 64, 20, 8), "sd15-256": (["--ckpt", args["ckpt"]], 256, 8, 4)}
    for name, (flags, size, steps, n) in cases.items():
        for replicas in (1, 2):
            process, url = start("cluster", *flags, "--min-replicas", str(replicas), "--threads-per-replica", "1")
            try:
                rate = throughput(url, n, 2 * replicas, size, steps)
                results["throughput"][f"{name}/{replicas}"] = rate
                results["replica_rss_mb"][f"{name}/{replicas}"] = replica_rss_mb()
                if name == "tiny" and replicas == 1:
                    results["cluster_latency_s"] = latency(url)
            finally:
                stop(process)
            print(f"{name} × {replicas}: {rate:.3f} requests/s", file=sys.stderr, flush=True)
    process, url = start("serve", "--ckpt", "tiny", "--threads", "1")
    try:
        results["serve_latency_s"] = latency(url)
        results["serve_tiny_throughput"] = throughput(url, 8, 2, 64, 20)
    finally:
        stop(process)
    return results


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
