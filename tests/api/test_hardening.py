"""Hardening, part two (issue 17): memory amplification, output size, duplicate task ids, auth, shutdown,
disk, prompts, formats — each as the hostile client sent it."""

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.api.conftest import REPO, b64_image, free_port, start
from tests.pipeline.helpers import source_image


def zeros_png(size: int) -> str:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 0).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def base(**kw):
    return {"init_images": [b64_image(source_image())], "width": 64, "height": 64, "steps": 2, **kw}


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    server = start(tmp_path_factory, "--ckpt", "tiny", "--max-request-pixels", str(8 * 2**20), "--max-pixels",
                   str(4096 * 4096), "--max-queue", "2")
    yield server
    server.stop()


def rss(server) -> float:
    return server.get("/sdapi/v1/memory").json()["ram"]["used"] / 2**20


def test_small_bodies_of_huge_images_are_refused_from_their_headers(limited):
    assert limited.post("/sdapi/v1/img2img", json=base()).status_code == 200
    before = rss(limited)
    body = base(init_images=[zeros_png(4096)] * 8, batch_size=8)  # a few hundred KB that decode to 128 MP
    assert len(json.dumps(body)) < 2**20
    r = limited.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 413 and "--max-request-pixels" in r.json()["detail"]
    assert rss(limited) - before < 50  # nothing was decoded
    ok = limited.post("/sdapi/v1/img2img", json=base(init_images=[zeros_png(2048)], width=64, height=64))
    assert ok.status_code == 200  # 4 MP in, 4 kP out: within the budget, decoded when the job ran
    assert rss(limited) - before < 100  # and freed afterwards


def test_the_output_counts(limited):
    r = limited.post("/sdapi/v1/img2img", json=base(width=8192, height=8192))
    assert r.status_code == 413 and "--max-pixels" in r.json()["detail"]
    r = limited.post("/sdapi/v1/img2img", json=base(width=2048, height=2048, batch_size=2, n_iter=2))
    assert r.status_code == 413 and "width × height × batch_size × n_iter" in r.json()["detail"]


def long_job(task_id):
    return base(init_images=[b64_image(source_image(128, 128))], width=128, height=128, steps=300,
                denoising_strength=1.0, force_task_id=task_id)


def test_a_task_id_in_use_is_409_and_the_queue_counts_jobs(limited):
    results = []

    def send(task_id):
        results.append(limited.post("/sdapi/v1/img2img", json=long_job(task_id)))

    first = threading.Thread(target=send, args=("dup",))
    first.start()
    deadline = time.time() + 60
    while limited.post("/internal/progress", json={"id_task": "dup"}).json()["active"] is not True:
        assert time.time() < deadline
        time.sleep(0.1)
    threads = [threading.Thread(target=send, args=("dup",)) for _ in range(6)]
    threads += [threading.Thread(target=send, args=(f"other-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    assert limited.get("/internal/pending-tasks").json()["size"] <= 2  # --max-queue 2, whatever the ids
    limited.post("/sdapi/v1/interrupt")
    for task_id in ("other-0", "other-1", "other-2", "other-3"):
        limited.post("/sdapi/v1/interrupt", json={"id_task": task_id})
    for t in [first, *threads]:
        t.join(120)
    codes = sorted(r.status_code for r in results)
    assert codes.count(409) >= 6 and codes.count(503) >= 2, codes  # 6 duplicates, and the queue was full
    assert all(c in (200, 409, 503) for c in codes), codes


@pytest.mark.parametrize("api_auth", ["admin", "user:pass,", "user:pass,guest:", ":secret", "a:b,a:c"])
def test_malformed_api_auth_is_refused_at_start(api_auth, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-m", "retouch", "serve", "--ckpt", "tiny", "--port", str(free_port()),
                          "--api-auth", api_auth], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "--api-auth" in out.stderr and "Traceback" not in out.stderr


def test_sigterm_during_a_job_exits_promptly_and_answers(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("shutdown-out")
    server = start(tmp_path_factory, "--ckpt", "tiny", "--outdir", str(outdir))
    results = []
    job = threading.Thread(target=lambda: results.append(
        requests.post(server.url + "/sdapi/v1/img2img", json={**long_job("long"), "save_images": True}, timeout=120)))
    job.start()
    queued = threading.Thread(target=lambda: results.append(
        requests.post(server.url + "/sdapi/v1/img2img", json=long_job("queued"), timeout=120)))
    deadline = time.time() + 60
    while server.post("/internal/progress", json={"id_task": "long"}).json()["active"] is not True:
        assert time.time() < deadline
        time.sleep(0.1)
    queued.start()
    time.sleep(0.5)
    stopped = time.time()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)
    assert time.time() - stopped < 15
    job.join(30), queued.join(30)
    assert sorted(r.status_code for r in results) == [200, 409]  # the running job answered, the queued one too
    assert all(not name.startswith(".") for name in os.listdir(outdir))  # no half-written file


def test_unwritable_outdir_is_a_start_up_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-m", "retouch", "serve", "--ckpt", "tiny", "--port", str(free_port()),
                          "--outdir", str(blocker / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "--outdir: cannot write" in out.stderr


def test_saving_into_a_folder_that_went_away_is_507_before_any_work(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("vanishing")
    server = start(tmp_path_factory, "--ckpt", "tiny", "--outdir", str(outdir))
    try:
        outdir.rmdir()
        outdir.write_text("now a file")  # the folder cannot be made again
        r = server.post("/sdapi/v1/img2img", json=base(save_images=True))
        assert r.status_code == 507 and "save_images: cannot write" in r.json()["detail"]
        assert server.post("/sdapi/v1/img2img", json=base()).status_code == 200  # not saving still works
    finally:
        server.stop()


def test_deep_and_long_prompts_are_422_not_500(limited):
    for prompt in ("[" * 600 + "a" + "]" * 600, "(a " * 20000, "x" * 40000):
        started = time.time()
        r = limited.post("/sdapi/v1/img2img", json=base(prompt=prompt))
        assert r.status_code == 422 and "prompt" in r.json()["detail"], r.text[:200]
        assert time.time() - started < 10


def test_only_common_formats_and_no_addresses_in_errors(limited):
    eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n").decode()
    r = limited.post("/sdapi/v1/img2img", json=base(init_images=[eps]))
    assert r.status_code == 422 and "PNG, JPEG, WebP, BMP, TIFF or GIF" in r.json()["detail"]
    assert " at 0x" not in r.text
    gif = io.BytesIO()
    Image.new("P", (64, 64), 3).save(gif, format="GIF")
    assert limited.post("/sdapi/v1/img2img", json=base(init_images=[base64.b64encode(gif.getvalue()).decode()])
                        ).status_code == 200


def test_a_failed_save_answers_507_with_the_images(tmp_path):
    """A backend whose job ran but could not save (disk full): the answer says so and carries the images."""
    import uvicorn

    from retouch.server.app import ServerConfig, create_app
    from retouch.serving.local import LocalBackend
    from retouch.serving.values import JobOutcome

    class DiskFullBackend(LocalBackend):
        async def run(self, request):
            image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
            return JobOutcome([image], "{}", "0", save_error="could not save images: No space left on device",
                              disk_full=True)

    config = ServerConfig(ckpt="tiny")
    from retouch.serving.models import ModelManager

    app = create_app(DiskFullBackend(ModelManager(ckpt="tiny")), config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        r = requests.post(f"http://127.0.0.1:{port}/sdapi/v1/img2img", json=base(), timeout=60)
        assert r.status_code == 507 and "No space left" in r.json()["detail"] and len(r.json()["images"]) == 1
    finally:
        server.should_exit = True
        thread.join(10)
