"""A real local Ray, started by ``retouch cluster`` — only inside ``../shared/tools/netns-run`` (a private network
namespace with only loopback). ``make test`` runs this folder that way; elsewhere these tests are skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.api.conftest import free_port
from tests.conftest import MODELS, REPO, need_shared


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NETNS_RUN") == "1":
        return
    skip = pytest.mark.skip(reason="starts Ray: run under ../shared/tools/netns-run (make test does)")
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(skip)


class Cluster:
    """``retouch cluster`` in a subprocess, with its own Ray."""

    def __init__(self, *args: str, cache_dir: str, timeout: float = 300):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RETOUCH_CACHE_DIR": cache_dir}
        self.process = subprocess.Popen([sys.executable, "-m", "retouch", "cluster", "--port", str(self.port),
                                         "--nowebui", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=env, text=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cluster exited: {self.process.stdout.read()[-4000:]}")
            try:
                requests.get(self.url + "/internal/ping", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the cluster did not start")

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=120, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 300)
        return requests.post(self.url + path, **kw)

    def state(self) -> dict:
        return self.get("/internal/cluster").json()

    def stop(self) -> int | None:
        self.process.terminate()  # the CLI shuts Serve and its own Ray down (never `ray stop`)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Two replicas, one model each, a short queue; the reference checkpoints of ../shared, and one separate VAE
    (``other.safetensors``: tiny-sd1's with its last bias changed)."""
    need_shared()
    from tests.api.test_vae_api import write_vae

    vaes = tmp_path_factory.mktemp("vaes")
    write_vae(vaes / "other.safetensors", "decoder.conv_out.bias")
    c = Cluster("--ckpt-dir", str(MODELS), "--vae-dir", str(vaes), "--ckpt", "tiny-sd1.safetensors", "--min-replicas", "2",
                "--models-per-replica", "1", "--max-queue", "2", "--outdir", str(tmp_path_factory.mktemp("out")),
                cache_dir=str(tmp_path_factory.mktemp("cluster-cache")))
    yield c
    c.stop()
