"""Test-wide set-up: offline, no network, a private cache, shared fixtures."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETOUCH_SHARED_DIR", REPO.parent / "shared"))  # the reference data
MODELS = SHARED / "models"
ORACLE = SHARED / "oracle"

_real_connect = socket.socket.connect
_real_create_connection = socket.create_connection


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_create_connection(address, *args, **kwargs):
    if not _is_loopback(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_create_connection(address, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Any connection to a non-loopback address fails the test that makes it."""
    socket.socket.connect = _guarded_connect
    socket.create_connection = _guarded_create_connection
    yield
    socket.socket.connect = _real_connect
    socket.create_connection = _real_create_connection


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """retouch's cache (tiny model, hash cache) in a per-session folder."""
    path = tmp_path_factory.mktemp("retouch-cache")
    old = os.environ.get("RETOUCH_CACHE_DIR")
    os.environ["RETOUCH_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RETOUCH_CACHE_DIR", None)
    else:
        os.environ["RETOUCH_CACHE_DIR"] = old


def need_shared():
    if not (MODELS / "tiny-sd1.safetensors").is_file():
        pytest.skip("../shared/models is not beside the checkout")


@pytest.fixture(scope="session")
def tiny_sd1():
    need_shared()
    from retouch import load_model

    return load_model(MODELS / "tiny-sd1.safetensors")


@pytest.fixture(scope="session")
def tiny_sd1_inpainting():
    need_shared()
    from retouch import load_model

    return load_model(MODELS / "tiny-sd1-inpainting.safetensors")


@pytest.fixture(scope="session")
def bundled_tiny():
    """The tiny SD1-architecture model retouch generates itself (no ../shared needed)."""
    from retouch import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def bundled_tiny_inpainting():
    """Its 9-channel inpainting variant."""
    from retouch import load_model

    return load_model("tiny-inpainting")
