"""Real servers on 127.0.0.1 in subprocesses (no TestClient)."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import MODELS, REPO, need_shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``retouch serve`` in a subprocess: the API only, unless ``--webui`` is among the arguments."""

    def __init__(self, *args: str, cache_dir: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RETOUCH_CACHE_DIR": cache_dir}
        self.log = Path(cache_dir) / "server.log"  # everything the server printed
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retouch", "serve", "--port", str(self.port),
                 *([] if "--webui" in args else ["--nowebui"]), *(a for a in args if a != "--webui")],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text(errors='replace')}")
            try:
                requests.get(self.url + "/internal/ping", timeout=1, auth=self.auth)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    auth = None

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=120, auth=self.auth, **kw)

    def post(self, path, **kw):
        return requests.post(self.url + path, timeout=300, auth=self.auth, **kw)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(tmp_path_factory, *args, auth=None):
    cache = str(tmp_path_factory.mktemp("server-cache"))
    server = Server.__new__(Server)
    server.auth = auth
    Server.__init__(server, *args, cache_dir=cache)
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A server on the bundled tiny models (``tiny``, ``tiny-inpainting``, ``tiny-pix2pix``)."""
    s = start(tmp_path_factory, "--ckpt", "tiny", "--outdir", str(tmp_path_factory.mktemp("server-out")))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def oracle_server(tmp_path_factory):
    """A server on the reference checkpoints of ../shared (for parity with A1111's outputs)."""
    need_shared()
    s = start(tmp_path_factory, "--ckpt", str(MODELS / "tiny-sd1.safetensors"), "--ckpt-dir", str(MODELS),
              "--lora-dir", str(MODELS / "lora"), "--embeddings-dir", str(MODELS / "embeddings"),
              "--outdir", str(tmp_path_factory.mktemp("server-out")))
    yield s
    s.stop()


def b64_file(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def b64_image(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
