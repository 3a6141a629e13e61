"""A1111's X/Y/Z plot and Prompt matrix over HTTP: parity with A1111 (212, 217), the grid's parts and order, the
axes that switch checkpoints and seeds, and bad requests answered before any work."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from retouch.imageops.grid import image_grid
from tests.api.conftest import b64_file, start
from tests.conftest import MODELS, ORACLE, need_shared
from tests.pipeline.helpers import pixels

XYZ_DEFAULTS = [1, "", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, True]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_shared()
    s = start(tmp_path_factory, "--ckpt", str(MODELS / "tiny-sd1.safetensors"), "--ckpt-dir", str(MODELS),
              "--max-pixels", str(512 * 512), "--max-job-steps", "200")
    yield s
    s.stop()


def _case(case):
    request = dict(json.loads((ORACLE / "cases" / f"{case}.json").read_text())["request"])
    request["init_images"] = [b64_file(ORACLE / "inputs" / n) for n in request["init_images"]]
    return request


def _images(response):
    return [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in response.json()["images"]]


def _xyz(**changes):
    args = list(XYZ_DEFAULTS)
    names = ["x_type", "x_values", "x_dropdown", "y_type", "y_values", "y_dropdown", "z_type", "z_values",
             "z_dropdown", "draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_x",
             "vary_y", "vary_z", "margin", "csv_mode"]
    for name, value in changes.items():
        args[names.index(name)] = value
    return {"init_images": [b64_file(ORACLE / "inputs" / "src_a_64x64.png")], "prompt": "a red cat", "width": 64,
            "height": 64, "steps": 3, "seed": 11, "denoising_strength": 0.6, "script_name": "X/Y/Z plot",
            "script_args": args}


def _check_info(response, case):
    info = json.loads(response.json()["info"])
    theirs = json.loads((ORACLE / "cases" / f"{case}_info.json").read_text())
    for key in theirs:
        if key in ("job_timestamp", "version"):
            continue
        if key == "infotexts":
            assert [t.rsplit("Version", 1)[0] for t in info[key]] == [t.rsplit("Version", 1)[0] for t in theirs[key]]
        else:
            assert info[key] == theirs[key], key


def test_xyz_plot_as_a1111(server):
    """212: X Steps 4,8 × Y CFG Scale 3,7 with the legend, the grid only: the grid's size and every cell as A1111's
    (the legend's glyphs: a few pixels apart at this 5-px font, see test_legend), A1111's info and infotexts (the
    grid's with Script, X/Y Type and Values, then each cell's)."""
    r = server.post("/sdapi/v1/img2img", json=_case("212"))
    assert r.status_code == 200, r.text
    (ours,) = _images(r)
    reference = Image.open(ORACLE / "cases" / "212_out0.png").convert("RGB")
    assert ours.size == reference.size
    diff = np.abs(pixels(ours) - pixels(reference))
    assert diff[9:, 48:].max() <= 2 and (diff.max(axis=-1) > 2).sum() <= 40
    _check_info(r, "212")


def test_prompt_matrix_as_a1111(server):
    """217: 'a red cat|sitting|on a blue mat': four pictures as A1111's, then the grid. At this 5-px legend font
    FreeType 2.14 (Pillow 12) inks the dot of 'sitting' one pixel higher than A1111's 2.13, so the grid's top
    margin is one pixel taller; its cells are A1111's."""
    r = server.post("/sdapi/v1/img2img", json=_case("217"))
    assert r.status_code == 200, r.text
    images = _images(r)
    assert len(images) == 5
    for i, ours in enumerate(images[1:], 1):
        reference = Image.open(ORACLE / "cases" / f"217_out{i}.png").convert("RGB")
        assert np.abs(pixels(ours) - pixels(reference)).max() <= 2
    grid, reference = images[0], Image.open(ORACLE / "cases" / "217_out0.png").convert("RGB")
    assert grid.width == reference.width and grid.height - reference.height in (0, 1)
    top = grid.height - 128
    assert np.abs(pixels(grid)[top:, 48:] - pixels(reference)[9:, 48:]).max() <= 2
    _check_info(r, "217")


def test_sub_grids_lone_images_and_a_z_axis(server):
    """X Seed 1,2 × Z Denoising 0.3,0.6 with sub-grids and every picture: the grids first (the main one with both
    sub-grids side by side under the Z labels), then the cells; each cell is the plain img2img of its values."""
    request = _xyz(x_type=1, x_values="1,2", z_type=25, z_values="0.3,0.6", include_lone_images=True,
                   include_sub_grids=True)
    r = server.post("/sdapi/v1/img2img", json=request)
    assert r.status_code == 200, r.text
    images, info = _images(r), json.loads(r.json()["info"])
    assert len(images) == len(info["infotexts"]) == 7
    main, sub0, sub1, cells = images[0], images[1], images[2], images[3:]
    assert sub0.size == (128, 64 + sub0.height - 64) and main.width == 2 * sub0.width
    assert main.height > sub0.height  # the Z labels above
    texts = info["infotexts"]
    assert "Script: X/Y/Z plot, X Type: Seed, X Values: \"1,2\", Fixed X Values: \"1, 2\", Z Type: Denoising" in texts[0]
    assert "X Type: Seed" in texts[1] and "Z Type" not in texts[1] and "Denoising strength: 0.6" in texts[2]
    assert all("Script" not in t for t in texts[3:])
    assert info["all_seeds"] == [1, 1, 1, 2, 1, 2] and info["index_of_first_image"] == 1
    single = server.post("/sdapi/v1/img2img", json={**{k: v for k, v in request.items() if "script" not in k},
                                                      "seed": 2, "denoising_strength": 0.6})
    assert np.array_equal(pixels(_images(single)[0]), pixels(cells[3]))
    assert np.array_equal(pixels(sub1)[-64:, -64:], pixels(cells[3]))


def test_without_legend_the_grid_is_the_cells(server):
    request = _xyz(x_type="Steps", x_values="2-3", y_type="CFG Scale", y_values="4,6", draw_legend=False,
                   include_lone_images=True)
    r = server.post("/sdapi/v1/img2img", json=request)
    assert r.status_code == 200, r.text
    grid, *cells = _images(r)
    assert len(cells) == 4 and np.array_equal(pixels(grid), pixels(image_grid(cells, 1, n_rows=2)))
    assert [t.split("Steps: ")[1][0] for t in json.loads(r.json()["info"])["infotexts"][1:]] == ["2", "3", "2", "3"]


def test_checkpoint_axis_and_varied_seeds(server):
    """A dropdown axis (csv_mode off) naming two checkpoints: each cell runs on its own; 'Vary seeds for X'."""
    request = _xyz(x_type=10, x_values="", x_dropdown=["tiny-sd1", "tiny-sd1-b"], csv_mode=False, vary_x=True)
    r = server.post("/sdapi/v1/img2img", json=request)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "X Type: Checkpoint name, X Values: \"tiny-sd1,tiny-sd1-b\"" in info["infotexts"][0]
    assert "Model: tiny-sd1," in info["infotexts"][1] and "Model: tiny-sd1-b," in info["infotexts"][2]
    assert "Seed: 11," in info["infotexts"][1] and "Seed: 12," in info["infotexts"][2]


@pytest.mark.parametrize("changes, status, detail", [
    ({"x_type": 99}, 422, "script_args[0] (X/Y/Z plot: x_type) must be an index below 42"),
    ({"x_type": 4, "x_values": "4,x"}, 422, "x_values, Steps): Steps takes int values"),
    ({"x_type": 7, "x_values": "green,blue"}, 422, "Prompt S/R did not find 'green'"),
    ({"x_type": 9, "x_values": "Euler,Nope"}, 422, "cell Nope: sampler_name"),
    ({"x_type": 10, "x_values": "nope"}, 422, "could not find checkpoint with name 'nope'"),
    ({"x_type": 32, "x_values": "CodeFormer"}, 422, "Face restore axis is not supported"),
    ({"x_type": 4, "x_values": "150,150,150"}, 413, "--max-job-steps"),
    ({"x_type": 41, "x_values": "512x512,512x520"}, 413, "--max-pixels"),
])
def test_bad_plots_are_refused_before_any_work(server, changes, status, detail):
    r = server.post("/sdapi/v1/img2img", json=_xyz(**changes))
    assert r.status_code == status and detail in r.json()["detail"], r.text[:300]


def test_prompt_matrix_limits(server):
    base = {"init_images": [b64_file(ORACLE / "inputs" / "src_a_64x64.png")], "width": 64, "height": 64, "steps": 3,
            "script_name": "prompt matrix"}
    r = server.post("/sdapi/v1/img2img", json={**base, "prompt": "a" + "|b" * 13})
    assert r.status_code == 422 and "at most 12 variable parts" in r.json()["detail"]
    r = server.post("/sdapi/v1/img2img", json={**base, "prompt": "a" + "|b" * 10})
    assert r.status_code == 413
    r = server.post("/sdapi/v1/img2img", json={**base, "prompt": "a|b", "script_args": [False, False, "sideways"]})
    assert r.status_code == 422 and "prompt_type" in r.json()["detail"]
