"""Two git revisions of retouch, measured alternately on this machine: did a change make anything slower?

    .venv/bin/python bench/compare.py BEFORE AFTER [--label NAME] [--rounds 10] [--overhead]

Each revision is checked out into a temporary worktree. The tiny-model latency (64², Euler, 20 steps,
denoising 0.75; wall and CPU time) is measured in rounds that alternate the two revisions, each round a
fresh process, so that this VM's drift (±30 % between rounds here) falls on both. ``--overhead`` also
runs ``bench/run.py --sections overhead`` (SD1.5-sized model, end to end / network time) in each tree.
The result is stored under ``comparisons[NAME]`` in ``docs/benchmarks.json`` and shown in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

_LATENCY = """
import json, sys, time
import numpy as np, torch
from PIL import Image
torch.set_num_threads(2)
from retouch import load_model
from retouch.processing import StableDiffusionProcessingImg2Img, process_images
model = load_model("tiny")
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
def job():
    return StableDiffusionProcessingImg2Img(sd_model=model, prompt="a cat", init_images=[image], width=64,
                                            height=64, steps=20, sampler_name="Euler", seed=1)
for _ in range(3):
    process_images(job())
wall, cpu = [], []
for _ in range(int(sys.argv[1])):
    t, c = time.perf_counter(), time.process_time()
    process_images(job())
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def worktree(rev: str, root: Path) -> Path:
    path = root / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(path), rev], check=True,
                   capture_output=True)
    return path


def latency(tree: Path, runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([PYTHON, "-c", _LATENCY, str(runs)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def overhead(tree: Path, out: Path) -> list[dict]:
    subprocess.run([PYTHON, str(tree / "bench" / "run.py"), "--sections", "overhead", "--runs", "1", "--out",
                    str(out)], check=True, cwd=tree, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    rows = json.loads(out.with_suffix(".json").read_text())["overhead"]
    return [{"case": f"{r['size']}² {r['precision']} {r['sampler']}", "ratio": r["ratio"]["median"]} for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--label", default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=12, help="timed jobs per round")
    parser.add_argument("--overhead", action="store_true")
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {"before": {"wall": [], "cpu": []}, "after": {"wall": [], "cpu": []}}
    result: dict = {"before": args.before, "after": args.after, "rounds": args.rounds, "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": worktree(args.before, Path(tmp)), "after": worktree(args.after, Path(tmp))}
        try:
            for _ in range(args.rounds):
                for side, tree in trees.items():
                    got = latency(tree, args.runs)
                    for key in ("wall", "cpu"):
                        samples[side][key] += got[key]
            if args.overhead:
                result["overhead"] = {side: overhead(tree, Path(tmp) / f"{side}.md") for side, tree in trees.items()}
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    for side in ("before", "after"):
        result[side + "_latency"] = {k: statistics.median(v) for k, v in samples[side].items()}
    print(json.dumps(result, indent=1))
    store(args.label or f"{args.before}..{args.after}", result)
    return 0


def store(label: str, result: dict) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from report import render

    raw = REPO / "docs" / "benchmarks.json"
    data = json.loads(raw.read_text())
    data.setdefault("comparisons", {})[label] = result
    raw.write_text(json.dumps(data, indent=1, default=str))
    (REPO / "docs" / "benchmarks.md").write_text(render(data))


if __name__ == "__main__":
    sys.exit(main())
