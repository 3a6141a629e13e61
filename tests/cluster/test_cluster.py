"""The A1111 API on a real local Ray Serve cluster: same pixels as the library, checkpoint affinity, full queues,
interrupts by task id across replicas, a replica killed mid-job, and an unmodified A1111 client."""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.api.test_server import oracle_request
from tests.conftest import MODELS, ORACLE
from tests.pipeline.helpers import build_from_request, oracle, pixels, source_image

SD1, SD1_INPAINT = "tiny-sd1.safetensors", "tiny-sd1-inpainting.safetensors"


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def job(checkpoint: str = SD1, steps: int = 4, size: int = 64, **extra) -> dict:
    return {"init_images": [b64_png(source_image(size, size))], "prompt": "a cat", "steps": steps, "width": size,
            "height": size, "seed": 3, "override_settings": {"sd_model_checkpoint": checkpoint}, **extra}


def in_background(cluster, body: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        out["response"] = cluster.post("/sdapi/v1/img2img", json=body, timeout=600)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def wait_until(predicate, timeout: float = 120.0, what: str = "a condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("case", ["002", "014", "150"])
def test_reference_cases_give_the_librarys_pixels(cluster, case):
    from retouch import load_model
    from retouch.processing import process_images

    request, api = oracle_request(case)
    r = cluster.post("/sdapi/v1/img2img", json=api)
    assert r.status_code == 200, r.text
    ours = decode(r.json()["images"][0])
    name = (request.get("override_settings") or {}).get("sd_model_checkpoint", "tiny-sd1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a replica (--threads-per-replica 1): the same float summation order
    try:
        library = process_images(build_from_request(oracle(case)[0], load_model(MODELS / f"{name}.safetensors")))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(pixels(ours), pixels(library.images[0]))  # exactly what retouch serve / the library give
    reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png"))
    assert np.abs(pixels(ours) - reference).max() <= 2
    expected = (ORACLE / "cases" / f"{case}_infotext0.txt").read_text()
    assert ours.info["parameters"].rsplit("Version", 1)[0] == expected.rsplit("Version", 1)[0]


def test_each_request_gets_the_vae_it_names(cluster):
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    (listed,) = cluster.get("/sdapi/v1/sd-vae").json()
    assert listed["model_name"] == "other.safetensors"
    job = {"prompt": "a red cat", "steps": 3, "denoising_strength": 0.6, "seed": 7, "width": 64, "height": 64,
           "sampler_name": "Euler"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a replica
    try:
        expected = {vae: pixels(process_images(StableDiffusionProcessingImg2Img(
            sd_model=load_model(MODELS / SD1, vae=vae and listed["filename"]), init_images=[source_image(64, 64)],
            **job)).images[0]) for vae in (None, "other.safetensors")}
    finally:
        torch.set_num_threads(threads)
    for setting in ("other.safetensors", "None", "other.safetensors"):
        r = cluster.post("/sdapi/v1/img2img", json={**job, "init_images": [b64_png(source_image(64, 64))],
                                                    "override_settings": {"sd_vae": setting}})
        assert r.status_code == 200, r.text
        assert np.array_equal(pixels(decode(r.json()["images"][0])), expected[setting if setting != "None" else None])
    r = cluster.post("/sdapi/v1/img2img", json={**job, "init_images": [b64_png(source_image(64, 64))],
                                                "override_settings": {"sd_vae": "missing.safetensors"}})
    assert r.status_code == 422 and "unknown VAE 'missing.safetensors'" in r.text


def test_the_local_server_and_the_cluster_run_the_same_job(cluster, tmp_path_factory):
    # one run_job for both: the same request gives the same pixels and infotext on `serve` and on a Ray replica
    from tests.api.conftest import start
    from tests.api.test_vae_api import write_vae

    vaes = tmp_path_factory.mktemp("local-vaes")
    write_vae(vaes / "other.safetensors", "decoder.conv_out.bias")
    local = start(tmp_path_factory, "--ckpt-dir", str(MODELS), "--vae-dir", str(vaes), "--ckpt", SD1, "--threads", "1")
    try:
        for extra in ({}, {"override_settings": {"sd_vae": "other.safetensors"}},
                      {"override_settings": {"sd_model_checkpoint": SD1_INPAINT}, "mask": b64_png(source_image(64, 64, 5)),
                       "inpainting_fill": 1, "sampler_name": "DPM++ 2M", "scheduler": "Karras"}):
            body = {**job(), **extra, "override_settings": {**job()["override_settings"], **extra.get("override_settings", {})}}
            ours, theirs = (server.post("/sdapi/v1/img2img", json=body) for server in (local, cluster))
            assert ours.status_code == theirs.status_code == 200, (ours.text[:200], theirs.text[:200])
            local_image, cluster_image = decode(ours.json()["images"][0]), decode(theirs.json()["images"][0])
            assert np.array_equal(pixels(local_image), pixels(cluster_image)), extra
            assert local_image.info["parameters"] == cluster_image.info["parameters"]
    finally:
        local.stop()


def holders(cluster) -> dict[str, str]:
    """Which replica holds each checkpoint (one model per replica): the replica of its latest load, unless a
    later load on that replica evicted it."""
    held: dict[str, str] = {}
    for load in cluster.state()["loads"]:
        held = {name: replica for name, replica in held.items() if replica != load["replica"]}
        held[load["checkpoint"]] = load["replica"]
    return held


def run_jobs(cluster, checkpoints) -> list[dict]:
    """Run one job per checkpoint, one at a time; the model loads they caused."""
    before = len(cluster.state()["loads"])
    for checkpoint in checkpoints:
        r = cluster.post("/sdapi/v1/img2img", json=job(checkpoint))
        assert r.status_code == 200, r.text
    return cluster.state()["loads"][before:]


def test_checkpoint_affinity_loads_each_checkpoint_once(cluster):
    run_jobs(cluster, [SD1, SD1_INPAINT])  # make both resident (one per replica: each holds one model)
    held = holders(cluster)
    assert held[SD1] != held[SD1_INPAINT], cluster.state()["loads"]  # the second did not evict the first
    # alternating, one at a time: without affinity, about every other request would reload
    assert run_jobs(cluster, [SD1, SD1_INPAINT] * 4) == []
    assert len({load["replica"] for load in cluster.state()["loads"]}) == 2


def test_a_new_checkpoint_evicts_the_least_recently_used_one_in_the_cluster(cluster):
    """Every replica is full: a job on a third checkpoint goes where the checkpoint used longest ago is (Serve's
    own router picks one of the full replicas at random, and may evict the one just used)."""
    sd2 = "tiny-sd2-v.safetensors"
    run_jobs(cluster, [SD1, SD1_INPAINT])
    for lru, recent in [(SD1, SD1_INPAINT), (SD1_INPAINT, SD1), (SD1, SD1_INPAINT)]:
        run_jobs(cluster, [lru, recent])  # `lru` was used longer ago
        held = holders(cluster)
        evicted_from = held[lru]
        (load,) = run_jobs(cluster, [sd2])
        assert (load["checkpoint"], load["replica"]) == (sd2, evicted_from)
        assert holders(cluster)[recent] == held[recent]  # the checkpoint just used is still there
        (load,) = run_jobs(cluster, [lru])  # back again: now in place of `recent`, used before sd2 was
        assert load["replica"] == held[recent]


def test_interrupt_by_task_id_reaches_the_replica_running_it(cluster):
    long, other = "task(cluster-long)", "task(cluster-other)"
    thread, out = in_background(cluster, job(steps=150, size=256, n_iter=20, force_task_id=long))
    try:
        wait_until(lambda: cluster.post("/internal/progress", json={"id_task": long}).json()["active"],
                   what="the long task to run")
        other_thread, other_out = in_background(cluster, job(SD1_INPAINT, force_task_id=other))
        wait_until(lambda: cluster.get("/sdapi/v1/progress").json()["state"]["job_count"] > 0, what="progress")
        progress = cluster.post("/internal/progress", json={"id_task": long}).json()
        assert progress["active"] and not progress["completed"]
        assert cluster.post("/sdapi/v1/interrupt", json={"id_task": long}).status_code == 200
        thread.join(120)
        assert not thread.is_alive()
        response = out["response"]
        assert response.status_code == 200 and len(response.json()["images"]) < 20  # stopped early
        other_thread.join(300)
        assert other_out["response"].status_code == 200 and len(other_out["response"].json()["images"]) == 1
        assert cluster.post("/internal/progress", json={"id_task": long}).json()["completed"]
        assert cluster.post("/sdapi/v1/interrupt", json={"id_task": "task(unknown)"}).status_code == 404
    finally:
        cluster.post("/sdapi/v1/interrupt")
        thread.join(120)


def test_a_task_interrupted_while_it_waits_is_cancelled_not_run(cluster):
    """As ``retouch serve``: a queued task that is interrupted never starts and is answered 409 at once."""
    busy = {"task(busy-sd1)": SD1, "task(busy-inpainting)": SD1_INPAINT}  # one per replica (each holds one model)
    waiting = "task(waiting)"
    threads = [in_background(cluster, job(checkpoint, steps=150, size=256, n_iter=20, force_task_id=task))
               for task, checkpoint in busy.items()]
    try:
        wait_until(lambda: all(cluster.post("/internal/progress", json={"id_task": t}).json()["active"] for t in busy),
                   what="both replicas to be busy")
        thread, out = in_background(cluster, job(force_task_id=waiting))
        wait_until(lambda: cluster.post("/internal/progress", json={"id_task": waiting}).json()["queued"],
                   what="the third task to wait")
        assert cluster.post("/sdapi/v1/interrupt", json={"id_task": waiting}).status_code == 200
        for task in busy:  # the replicas come free; the cancelled task must still not run
            cluster.post("/sdapi/v1/interrupt", json={"id_task": task})
        thread.join(120)
        assert not thread.is_alive()
        response = out["response"]
        assert response.status_code == 409 and "interrupted before it started" in response.json()["detail"]
        assert waiting not in {t["id"] for t in cluster.state()["running"]}
    finally:
        cluster.post("/sdapi/v1/interrupt")
        for t, _ in threads:
            t.join(120)


def test_full_queues_answer_503_with_retry_after(cluster):
    # 2 replicas × (1 running + 1 waiting) + a queue of 2: ten long requests cannot all be held
    threads = [in_background(cluster, job(steps=150, size=256, n_iter=5, force_task_id=f"task(full-{i})"))
               for i in range(10)]
    try:
        refused = wait_until(lambda: [o["response"] for _, o in threads
                                      if "response" in o and o["response"].status_code == 503],
                             what="a refused request")
        assert refused[0].headers.get("Retry-After") and "queue is full" in refused[0].json()["detail"]
    finally:
        for i in range(10):
            cluster.post("/sdapi/v1/interrupt", json={"id_task": f"task(full-{i})"})
        cluster.post("/sdapi/v1/interrupt")
        for thread, _ in threads:
            thread.join(300)
    statuses = sorted(o["response"].status_code for _, o in threads)
    # running ones finish (interrupted: 200), waiting ones are cancelled (409), refused ones got 503 at once
    assert 503 in statuses and set(statuses) <= {200, 409, 503}, statuses
    assert cluster.post("/sdapi/v1/img2img", json=job()).status_code == 200  # and it serves again


def test_a_replica_killed_mid_job_is_retried_on_another(cluster):
    task = "task(killed)"
    thread, out = in_background(cluster, job(steps=60, size=128, force_task_id=task))
    running = wait_until(lambda: [t for t in cluster.state()["running"] if t["id"] == task], what="the task to start")
    os.kill(running[0]["pid"], signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive()  # never a hang
    response = out["response"]
    assert response.status_code in (200, 503), response.text
    if response.status_code == 200:  # retried once, elsewhere: the whole job
        assert "Steps: 60" in response.json()["info"]
    else:
        assert response.headers.get("Retry-After")
    # Serve replaces the replica; the cluster keeps serving
    wait_until(lambda: cluster.post("/sdapi/v1/img2img", json=job()).status_code == 200, timeout=240,
               what="the cluster to serve again")


def test_webuiapi_works_unchanged(cluster):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=cluster.port, sampler="Euler a", steps=4)
    assert any(m["model_name"] == "tiny-sdxl" for m in api.get_sd_models())
    result = api.img2img(images=[source_image()], prompt="a cat", width=64, height=64, seed=3, cfg_scale=7)
    assert result.image.size == (64, 64) and result.info["seed"] == 3
    assert "Model: tiny-sd1" in result.info["infotexts"][0]


def test_serve_run_deploys_the_same_app_the_ray_way(cluster, tmp_path):
    """``serve run retouch.cluster:app …``: the HTTP app as a Serve ingress deployment, same answers."""
    import subprocess
    import sys

    import requests

    from tests.conftest import REPO

    serve_cli = os.path.join(os.path.dirname(sys.executable), "serve")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RETOUCH_CACHE_DIR": str(tmp_path)}
    process = subprocess.Popen([serve_cli, "run", "retouch.cluster:app", f"ckpt_dir={MODELS}",
                                "ckpt=tiny-sd1.safetensors", "min_replicas=1", "max_replicas=1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = "http://127.0.0.1:8000"  # Serve's own HTTP proxy, inside this private network namespace

    def up():
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            return requests.get(url + "/internal/ping", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(up, timeout=240, what="serve run")
        body = job()
        theirs = requests.post(url + "/sdapi/v1/img2img", json=body, timeout=300)
        ours = cluster.post("/sdapi/v1/img2img", json=body)
        assert theirs.status_code == 200 and ours.status_code == 200, theirs.text
        assert np.array_equal(pixels(decode(theirs.json()["images"][0])), pixels(decode(ours.json()["images"][0])))
        assert requests.post(url + "/sdapi/v1/img2img", json={**body, "steps": 0}, timeout=60).status_code == 422
    finally:
        process.send_signal(signal.SIGINT)  # serve run shuts its application and its own Ray down
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
