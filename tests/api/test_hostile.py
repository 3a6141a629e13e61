"""Hostile input and load (issue 15): every class that used to end in a 500, a stall or a poisoned server.

Each test sends what a hostile client sent and asserts a 4xx that names the field, and that the server
still serves everyone afterwards.
"""

import json
import socket
import threading
import time

import pytest

from tests.api.conftest import b64_image, start
from tests.pipeline.helpers import source_image

GOOD = b64_image(source_image())


def base(**kw):
    return {"init_images": [GOOD], "width": 64, "height": 64, "steps": 2, **kw}


def post_raw(server, path, text: str):
    """POST a body exactly as written (Python's json.dumps would refuse some of these, or fix them)."""
    import requests

    return requests.post(server.url + path, data=text.encode("utf-8", "surrogatepass"),
                         headers={"Content-Type": "application/json"}, timeout=120, auth=server.auth)


def with_value(body: dict, path: str, token: str) -> str:
    """``body`` as JSON text with the value at ``path`` (dotted, [i] for list items) replaced by a raw token."""
    marker = "__RAW_VALUE__"
    target = body
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = marker
    else:
        target[last] = marker
    return json.dumps(body).replace(json.dumps(marker), token)


BAD_TOKENS = ["NaN", "Infinity", "-Infinity", '"\\ud800"', "1e400"]
FIELDS = ["prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "width", "height", "steps",
          "cfg_scale", "denoising_strength", "sampler_name", "scheduler", "batch_size", "n_iter", "eta",
          "s_churn", "image_cfg_scale", "mask_blur", "inpaint_full_res_padding", "initial_noise_multiplier",
          "styles[0]", "override_settings.eta_noise_seed_delta", "override_settings.emphasis",
          "override_settings.sd_model_checkpoint", "alwayson_scripts.x", "comments.note", "script_args[0]",
          "infotext", "init_images[0]", "mask", "force_task_id"]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_non_finite_numbers_and_lone_surrogates_are_422_naming_the_field(server, token):
    for field in FIELDS:
        body = base(styles=["x"], script_args=[1])
        r = post_raw(server, "/sdapi/v1/img2img", with_value(body, field, token))
        assert r.status_code == 422, (field, token, r.text)
        detail = r.json()["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)
        assert field.split("[")[0].split(".")[-1] in text, (field, token, text)
    assert server.get("/internal/ping").status_code == 200


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_the_other_routes_refuse_them_too(server, token):
    for path, body, field in [("/sdapi/v1/options", {"eta_noise_seed_delta": 0}, "eta_noise_seed_delta"),
                              ("/sdapi/v1/png-info", {"image": ""}, "image"),
                              ("/internal/progress", {"id_task": "x"}, "id_task"),
                              ("/sdapi/v1/interrupt", {"id_task": "x"}, "id_task")]:
        r = post_raw(server, path, with_value(body, field, token))
        assert r.status_code == 422 and field in r.text, (path, token, r.text)
    assert server.get("/sdapi/v1/options").status_code == 200


def test_options_are_checked_before_anything_is_stored(server):
    before = server.get("/sdapi/v1/options").json()
    attempts = [("eta_noise_seed_delta", "Infinity"), ("eta_noise_seed_delta", "1e40"), ("CLIP_stop_at_last_layers", "NaN"),
                ("img2img_background_color", '"zzz"'), ("sd_model_checkpoint", "123"), ("sd_model_checkpoint", "[1]"),
                ("sd_model_checkpoint", "true"), ("sd_model_checkpoint", '{"a": 1}'), ("jpeg_quality", '"high"'),
                ("samples_format", '"\\udc80"'), ("ui_reorder_list", '[{"x": 1}]'), ("live_preview_refresh_period", '"x"'),
                ("show_progress_every_n_steps", "1.5")]
    for name, token in attempts:
        r = post_raw(server, "/sdapi/v1/options", with_value({"jpeg_quality": 81}, name, token))
        assert r.status_code == 422 and name in r.text, (name, token, r.text)
    after = server.get("/sdapi/v1/options")
    assert after.status_code == 200 and after.json() == before  # nothing half-applied (jpeg_quality 81 neither)


def test_wrong_json_types_for_checkpoint_names_are_422(server):
    for value in (5, [1], {"a": 1}, True, 1.5):
        r = server.post("/sdapi/v1/img2img", json=base(override_settings={"sd_model_checkpoint": value}))
        assert r.status_code == 422 and "sd_model_checkpoint" in r.json()["detail"], (value, r.text)


@pytest.mark.parametrize("infotext", ['a cat\nSteps: 3, Sampler: "Euler a, Seed: 5, CFG scale: 7',
                                      'a cat\nSteps: 3, Sampler: "Euler \\q", Seed: 5, CFG scale: 7',
                                      'x\nSteps: 3, Lora hashes: "a: 1, Seed: 5, Size: 64x64'])
def test_infotexts_with_broken_quotes_parse_as_a1111(server, infotext):
    r = server.post("/sdapi/v1/img2img", json=base(infotext=infotext))
    assert r.status_code in (200, 422), r.text  # 422 only where a value cannot be used (never 500)
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", infotext)
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    import base64

    r = server.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()})
    assert r.status_code == 200 and r.json()["parameters"]["Steps"] == "3"
    assert r.json()["parameters"]["Seed"] == "5"  # the pair after the broken one still parses


def test_request_limits_are_answered_before_any_work(tmp_path_factory):
    server = start(tmp_path_factory, "--ckpt", "tiny", "--max-body-mb", "1", "--max-images", "4",
                   "--max-job-steps", "40")
    try:
        big = "x" * (2 * 2**20)
        r = server.post("/sdapi/v1/img2img", data=json.dumps(base(prompt=big)),
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "--max-body-mb" in r.json()["detail"]

        def chunks():
            yield b'{"prompt": "'
            for _ in range(40):
                yield b"y" * 65536
            yield b'"}'

        r = server.post("/sdapi/v1/img2img", data=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413  # no Content-Length: counted while reading
        r = server.post("/sdapi/v1/img2img", json=base(n_iter=3, batch_size=2))
        assert r.status_code == 422 and "--max-images" in r.json()["detail"]
        r = server.post("/sdapi/v1/img2img", json=base(n_iter=2, batch_size=2, steps=20))
        assert r.status_code == 422 and "--max-job-steps" in r.json()["detail"]
        assert server.post("/sdapi/v1/img2img", json=base(n_iter=2, batch_size=2, steps=10)).status_code == 200
    finally:
        server.stop()


def ping_times(server, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        server.get("/internal/ping")
        out.append(time.perf_counter() - started)
        time.sleep(0.02)


@pytest.mark.parametrize("what", ["prompt of spaces", "spaces then a word", "unclosed network tags",
                                  "prompt of brackets", "deep JSON", "many JSON values", "big image", "long infotext"])
def test_the_event_loop_keeps_answering_while_a_request_is_parsed(server, what):
    body = {
        "prompt of spaces": lambda: json.dumps(base(prompt=" " * 32_000)),
        # A1111's AND-weight pattern held the GIL 5 s on this; its network-tag pattern 1 s on the next
        "spaces then a word": lambda: json.dumps(base(prompt=" " * 32_000 + "a")),
        "unclosed network tags": lambda: json.dumps(base(prompt="<a:" * 10_900)),
        "prompt of brackets": lambda: json.dumps(base(prompt="[" * 64 + "a" + "]" * 64 + "(a " * 500 + "a:" * 5000)),
        "deep JSON": lambda: json.dumps(base()).replace('"steps": 2', '"steps": ' + "[" * 50_000 + "]" * 50_000),
        "many JSON values": lambda: json.dumps(base(styles=["s"] * 150_000)),
        "big image": lambda: json.dumps(base(init_images=[b64_image(source_image(2048, 2048))])),
        "long infotext": lambda: json.dumps(base(infotext="a" * 60_000 + "\nSteps: 2, " + "k" * 60_000)),
    }[what]()
    stop, times = threading.Event(), []
    pinger = threading.Thread(target=ping_times, args=(server, stop, times))
    pinger.start()
    try:
        started, posts = time.perf_counter(), 0
        while posts < 2 or time.perf_counter() - started < 3:
            r = post_raw(server, "/sdapi/v1/img2img", body)
            assert r.status_code < 500, r.text[:300]
            posts += 1
    finally:
        stop.set()
        pinger.join()
    times.sort()
    assert len(times) >= 10 and times[len(times) // 2] < 0.1, times[-5:]  # median ping under 100 ms
    # Parsing on the event loop would stall a ping on every post. A full garbage collection (Earley parsing of
    # the bracket prompt allocates millions of objects, once: schedules are cached) or a loaded machine can
    # pause every thread once.
    stalled = [t for t in times if t > 0.5]
    assert len(stalled) <= 3 and times[-1] < 3.0, (len(times), times[-5:])


def test_slow_and_idle_connections_are_dropped(tmp_path_factory):
    server = start(tmp_path_factory, "--ckpt", "tiny", "--header-timeout", "1", "--body-timeout", "1",
                   "--max-connections", "20")
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        time.sleep(0.5)
        closed = 0
        for s in idle:
            s.settimeout(3)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == 40  # beyond 20 at once, the rest after the header deadline
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"POST /sdapi/v1/options HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        slow.settimeout(5)
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        headers_only = socket.create_connection(("127.0.0.1", server.port))
        headers_only.sendall(b"GET /internal/ping HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        headers_only.settimeout(5)
        assert headers_only.recv(1) == b""
        assert server.get("/internal/ping").status_code == 200
    finally:
        server.stop()


def test_prompt_structure_is_capped_and_counted_in_the_jobs_cost(tmp_path_factory):
    server = start(tmp_path_factory, "--ckpt", "tiny", "--max-job-steps", "200")
    try:
        for prompt, named in [("a AND " * 5_000, "AND sub-prompts: 5001 sampling steps"),
                              ("a AND " * 100, "101 sub-prompts joined by AND; at most 64"),
                              ("<lora:x:1>" * 1_300, "extra-network tags"),
                              ("".join(f"<lora:m{i}:1>" for i in range(2_000)), "extra-network tags")]:
            r = server.post("/sdapi/v1/img2img", json=base(prompt=prompt, steps=1))
            assert r.status_code == 422 and named in r.json()["detail"], r.text[:300]
        # every AND part is a row of every UNet call: 4 parts × 60 steps = 240 > 200
        r = server.post("/sdapi/v1/img2img", json=base(prompt="a AND b AND c AND d", steps=60))
        assert r.status_code == 422 and "× AND sub-prompts: 240 sampling steps" in r.json()["detail"], r.text
        assert server.post("/sdapi/v1/img2img", json=base(prompt="a AND b", steps=60)).status_code == 200
    finally:
        server.stop()


def test_interrupt_lands_within_a_vae_pass_of_a_2048_job(server):
    # a 2048² encode is one network call of ~12 s on the tiny model; the interrupt answered after 23 s
    body = base(init_images=[b64_image(source_image(2048, 2048))], width=2048, height=2048, steps=20,
                force_task_id="task(big-interrupt)")
    answer = {}
    job = threading.Thread(target=lambda: answer.update(r=server.post("/sdapi/v1/img2img", json=body)))
    job.start()
    deadline = time.time() + 60
    while time.time() < deadline and server.get("/sdapi/v1/progress").json()["state"]["job"] != "task(big-interrupt)":
        time.sleep(0.05)
    time.sleep(0.5)  # inside the encode
    interrupted = time.perf_counter()
    assert server.post("/sdapi/v1/interrupt").status_code == 200
    job.join(120)
    waited = time.perf_counter() - interrupted
    assert answer["r"].status_code == 200 and answer["r"].json()["images"] == []  # stopped before sampling
    assert waited < 5, waited  # within a convolution, not after the whole pass (~12 s)


def test_the_embeddings_route_lists_the_loaded_model_and_loads_nothing(oracle_server):
    r = oracle_server.post("/sdapi/v1/img2img", json=base(override_settings={"sd_model_checkpoint": "tiny-sdxl"}))
    assert r.status_code == 200, r.text
    embeddings = oracle_server.get("/sdapi/v1/embeddings").json()
    assert embeddings["skipped"]  # the SD1 embeddings do not fit SDXL's encoders: listed as skipped
    # it used to load the default checkpoint (tiny-sd1) in the route's thread, under the next job's feet
    assert oracle_server.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-sdxl")


def test_the_event_loop_answers_while_checkpoints_switch(oracle_server):
    stop, times = threading.Event(), []
    pinger = threading.Thread(target=ping_times, args=(oracle_server, stop, times))
    pinger.start()
    try:
        for i in range(16):
            name = ("tiny-sd1", "tiny-sdxl", "tiny-sd1-b", "tiny-sd2-v")[i % 4]
            r = oracle_server.post("/sdapi/v1/img2img", json=base(override_settings={"sd_model_checkpoint": name}))
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        pinger.join()
    times.sort()
    # a full garbage collection over start-up's ~570,000 objects stopped every thread 0.27 s; they are frozen now
    assert len(times) >= 50 and times[int(len(times) * 0.99)] < 0.1 and times[-1] < 0.25, times[-5:]
