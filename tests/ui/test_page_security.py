"""The page's routes hold the API's limits (issue 22): no file outside the page's own upload folder is ever read or
served, no request body or upload escapes the size, time and disk limits, and what is refused leaves nothing
behind. A real ``retouch serve`` with the page; requests as a hostile client sends them (no browser needed)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image, PngImagePlugin

from tests.api.conftest import start
from tests.api.test_malformed import png_header_claiming

SECRET = "retouch-test-secret-7f3a"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    s = start(tmp_path_factory, "--webui", "--ckpt", "tiny", "--body-timeout", "2", "--max-body-mb", "8",
              "--max-upload-storage-mb", "2", "--max-connections", "40")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("private") / "secret.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", SECRET)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)  # a real image: it would have been read had it been asked
    return path


def png_bytes(text: str | None = None, size=(16, 16)) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def upload(server, data: bytes, name="a.png") -> requests.Response:
    return requests.post(server.url + "/gradio_api/upload", files={"files": (name, data, "image/png")}, timeout=60)


def call(server, api_name: str, data: list) -> tuple[int, str]:
    """A Gradio API call (``/gradio_api/call/<name>``): the status of the call, and the event's stream if it ran."""
    r = requests.post(f"{server.url}/gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    if r.status_code != 200:
        return r.status_code, r.text
    stream = requests.get(f"{server.url}/gradio_api/call/{api_name}/{r.json()['event_id']}", timeout=60)
    return 200, stream.text


def file_data(path: str, **extra) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, **extra}


def upload_folder(server) -> Path:
    r = upload(server, png_bytes())
    assert r.status_code == 200, r.text
    return Path(r.json()[0]).parent.parent


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_path_the_client_names_is_never_read_nor_served(guarded, secret_file, tmp_path):
    # the reported pair: /gradio_api/call/read copied any readable file into the cache, /gradio_api/file= served it
    folder = upload_folder(guarded)
    before = files_in(folder)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block the event loop for good
    link = folder / "link" / "secret.png"  # a link inside the upload folder that leads out of it
    link.parent.mkdir()
    link.symlink_to(secret_file)
    for value in [file_data(str(secret_file)), {"path": str(secret_file)}, file_data(str(fifo)),
                  file_data("/dev/zero"), file_data(str(link)), file_data(f"{folder}/../{secret_file.name}"),
                  file_data(str(folder)), {"path": None, "url": "data:image/png;base64," + base64.b64encode(
                      png_bytes(SECRET)).decode(), "meta": {"_type": "gradio.FileData"}}]:
        status, text = call(guarded, "read", [value])
        assert status == 403 and SECRET not in text, (value, status, text[:300])
        assert "not a file uploaded to this page" in text or "inline data is not accepted" in text
    for named in (str(secret_file), f"{folder}/link/secret.png", "http://127.0.0.1:1/x.png"):
        r = requests.get(f"{guarded.url}/gradio_api/file={named}", timeout=30)
        assert r.status_code == 403 and SECRET not in r.text, (named, r.text[:200])
    link.unlink()
    assert files_in(folder) == before - {link}  # nothing was copied in
    assert guarded.get("/internal/ping").status_code == 200


def test_the_page_reads_its_own_uploads(guarded):
    path = upload(guarded, png_bytes("a red cat\nSteps: 3, Seed: 5")).json()[0]
    status, text = call(guarded, "read", [file_data(path)])
    assert status == 200 and "event: complete" in text and "a red cat" in text, text[:500]
    served = requests.get(f"{guarded.url}/gradio_api/file={path}", timeout=30)
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"


def test_only_the_routes_the_page_uses_exist(guarded):
    for method, path in [("GET", "/gradio_api/vibe-code"), ("POST", "/gradio_api/vibe-edit"),
                         ("GET", "/gradio_api/proxy=http://127.0.0.1:1/"), ("GET", "/gradio_api/file/etc/passwd"),
                         ("POST", "/gradio_api/process_recording"), ("GET", "/monitoring"),
                         ("GET", "/gradio_api/run-history/buckets")]:
        r = requests.request(method, guarded.url + path, timeout=30)
        assert r.status_code == 404, (method, path, r.status_code)
    assert requests.get(guarded.url + "/", timeout=30).status_code == 200
    assert guarded.get("/sdapi/v1/options").status_code == 200


def test_an_image_over_max_pixels_is_refused_from_its_header(guarded):
    bomb = base64.b64decode(png_header_claiming(12000, 12000))  # 419 KB in the report: +1 GB and a 2.9 s stall
    path = upload(guarded, bomb).json()[0]
    status, text = call(guarded, "read", [file_data(path)])
    assert status == 413 and "12000x12000" in text and "--max-pixels" in text, text[:300]


def test_uploads_hold_the_body_size_and_disk_limits(guarded):
    folder = upload_folder(guarded)
    before = files_in(folder)
    huge = socket.create_connection(("127.0.0.1", guarded.port))  # 300 MB declared: refused before one byte is read
    huge.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
                 b"Content-Length: 300000000\r\n\r\n")
    huge.settimeout(10)
    assert huge.recv(4096).startswith(b"HTTP/1.1 413")

    def chunks():
        yield b"--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
        yield b"x" * 1000

    r = requests.post(guarded.url + "/gradio_api/upload", data=chunks(), timeout=30,
                      headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 411  # an upload declares its length
    first = upload(guarded, os.urandom(1_200_000), "one.bin")
    assert first.status_code == 200
    second = upload(guarded, os.urandom(1_200_000), "two.bin")  # 2.4 MB > --max-upload-storage-mb 2
    assert second.status_code == 507 and "--max-upload-storage-mb" in second.json()["detail"]
    assert files_in(folder) == before | {Path(first.json()[0])}


def test_a_slow_upload_is_cut_off_and_leaves_no_partial_file(guarded):
    folder = upload_folder(guarded)
    before = files_in(folder)
    slow = socket.create_connection(("127.0.0.1", guarded.port))
    slow.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
                 b"Content-Length: 300000\r\n\r\n--XX\r\nContent-Disposition: form-data; name=\"files\"; "
                 b"filename=\"a.png\"\r\n\r\n" + b"y" * 100_000)
    time.sleep(0.5)
    assert len(files_in(folder)) > len(before)  # Gradio is writing its partial file …
    slow.settimeout(10)
    assert slow.recv(4096).startswith(b"HTTP/1.1 408")  # … --body-timeout 2 cuts the upload off …
    time.sleep(0.3)
    assert files_in(folder) == before  # … and the partial file is gone


def test_slow_uploads_cannot_hold_every_connection(guarded):
    held = []
    for _ in range(40):  # --max-connections 40
        s = socket.create_connection(("127.0.0.1", guarded.port))
        s.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=XX\r\nContent-Length: 1000\r\n\r\n--XX\r\n")
        held.append(s)
    time.sleep(3)  # past --body-timeout: every one of them was answered 408 and closed
    assert guarded.get("/internal/ping").status_code == 200
    for s in held:
        s.settimeout(5)
        assert s.recv(64).startswith(b"HTTP/1.1 408")


def test_page_json_bodies_are_small_and_checked(guarded):
    big = json.dumps({"data": ["x" * (2 << 20)], "fn_index": 0, "session_hash": "s"})
    r = requests.post(guarded.url + "/gradio_api/queue/join", data=big, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413  # the page sends files by upload: its JSON is small
    r = requests.post(guarded.url + "/gradio_api/queue/join", data=b"x" * (9 << 20), timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "--max-body-mb" in r.json()["detail"]  # the API's limit holds here too
    r = requests.post(guarded.url + "/gradio_api/queue/join", data='{"data": [NaN]}', timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_errors_on_the_page_name_no_server_path(guarded):
    status, text = call(guarded, "read", [{"meta": {"_type": "gradio.FileData"}, "size": 3}])  # no path at all
    assert "event: error" in text and "/tmp" not in text and "0x" not in text, text[:300]


def test_the_event_loop_answers_while_the_page_is_hammered(guarded):
    stop, times = threading.Event(), []

    def ping():
        while not stop.is_set():
            started = time.perf_counter()
            guarded.get("/internal/ping")
            times.append(time.perf_counter() - started)
            time.sleep(0.02)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        bomb = upload(guarded, base64.b64decode(png_header_claiming(12000, 12000))).json()[0]
        started = time.perf_counter()
        while time.perf_counter() - started < 3:
            call(guarded, "read", [file_data(bomb)])
            call(guarded, "read", [file_data("/dev/zero")])
            requests.post(guarded.url + "/gradio_api/queue/join", data="[" * 50_000, timeout=30,
                          headers={"Content-Type": "application/json"})
    finally:
        stop.set()
        pinger.join()
    times.sort()
    assert len(times) >= 10 and times[int(len(times) * 0.99)] < 0.1, times[-5:]


def test_a_file_that_is_no_image_is_refused_naming_the_formats(guarded):
    path = upload(guarded, b"\x89PNG\r\n\x1a\n" + b"broken" * 10).json()[0]  # a PNG signature, then garbage
    status, text = call(guarded, "read", [file_data(path)])
    assert status == 422 and "not an image this page reads" in text and " at 0x" not in text, text[:400]
