"""Upscalers: A1111's list and names, its tiling, spandrel-read models, and the exact pixels of the reference cases."""

import sys

import numpy as np
import pytest
from PIL import Image

from retouch.imageops.resize import resize_image
from retouch.imageops.tiles import combine_grid, split_grid
from retouch.options import Options
from retouch.upscalers import Kind, UpscalerFolders, Upscalers, find_upscaler, find_upscalers
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import assert_oracle_pixels


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_the_list_is_a1111s():
    """None, Lanczos, Nearest, then every model by lower-cased name — the named ones listed even without a file
    (A1111 lists them, and scripts pick upscalers by index)."""
    need_shared()
    names = [u.name for u in find_upscalers(UpscalerFolders(esrgan=MODELS / "ESRGAN"))]
    assert names == ["None", "Lanczos", "Nearest", "DAT x2", "DAT x3", "DAT x4", "LDSR", "R-ESRGAN 4x+",
                     "R-ESRGAN 4x+ Anime6B", "ScuNET GAN", "ScuNET PSNR", "SwinIR 4x", "tiny-esrgan-x4"]
    without = [u.name for u in find_upscalers(UpscalerFolders())]
    assert "ESRGAN_4x" in without and "tiny-esrgan-x4" not in without
    fewer = [u.name for u in find_upscalers(UpscalerFolders(), Options(realesrgan_enabled_models=("R-ESRGAN 2x+",),
                                                                        dat_enabled_models=()))]
    assert "R-ESRGAN 2x+" in fewer and "R-ESRGAN 4x+" not in fewer and "DAT x2" not in fewer


def test_unknown_and_missing_upscalers_say_what_to_do():
    upscalers = find_upscalers(UpscalerFolders())
    with pytest.raises(ValueError, match="hr_upscaler: could not find upscaler named 'Bicubic'; the upscalers are: "
                                         "None, Lanczos, Nearest"):
        find_upscaler(upscalers, "Bicubic", "hr_upscaler")
    with pytest.raises(ValueError, match="SwinIR 4x is not on disk.*--swinir-models-path"):
        find_upscaler(upscalers, "SwinIR 4x", "upscaler_1")
    with pytest.raises(ValueError, match="LDSR.*not supported"):
        find_upscaler(upscalers, "LDSR")
    assert find_upscaler(upscalers, "Lanczos").kind is Kind.LANCZOS


@pytest.mark.parametrize(("size", "tile", "overlap"), [((300, 200), 128, 16), ((64, 64), 192, 8), ((513, 97), 64, 8)])
def test_split_and_combine_give_the_image_back(size, tile, overlap):
    image = _image(*size)
    grid = split_grid(image, tile, tile, overlap)
    assert all(t.image.size == (tile, tile) for row in grid.rows for t in row.tiles)
    assert np.array_equal(np.array(combine_grid(grid)), np.array(image))


def test_a_small_image_gets_one_tile_reaching_past_its_corner():
    """A1111's old split_grid: the tile ends at the image's far edge; what lies before the image is black."""
    grid = split_grid(_image(64, 40), 192, 192, 8)
    (row,) = grid.rows
    (tile,) = row.tiles
    assert (tile.x, row.y) == (-128, -152)
    assert np.array(tile.image)[:152, :].max() == 0 and np.array(tile.image)[:, :128].max() == 0


def test_resize_enlarges_through_the_upscaler_only_when_enlarging():
    calls = []

    def enlarge(image, scale):
        calls.append(scale)
        return image.resize((int(image.width * scale), int(image.height * scale)), Image.NEAREST)

    image = _image(40, 30)
    assert resize_image(0, image, 100, 60, enlarge).size == (100, 60)
    assert calls == [2.5]  # max(100/40, 60/30)
    resize_image(0, image, 20, 15, enlarge)
    assert calls == [2.5]  # shrinking: Lanczos alone
    resize_image(0, image.convert("L"), 100, 60, enlarge)
    assert calls == [2.5]  # greyscale never goes through an upscaler (A1111)


@pytest.fixture(scope="module")
def reference_upscalers():
    need_shared()
    return Upscalers(find_upscalers(UpscalerFolders(esrgan=MODELS / "ESRGAN")))


@pytest.mark.parametrize(("case", "name"), [("240", "Lanczos"), ("242", "tiny-esrgan-x4")])
def test_reference_upscales_are_exact(reference_upscalers, case, name):
    """A1111's extras ×2 of the reference picture with Lanczos and with the tiny ESRGAN (tiled, spandrel-read):
    every pixel equal."""
    source = Image.open(ORACLE / "inputs" / "src_a_64x64.png").convert("RGB")
    ours = reference_upscalers.upscale(source, 2.0, reference_upscalers.find(name))
    theirs = Image.open(ORACLE / "cases" / f"{case}_out0.png").convert("RGB")
    assert_oracle_pixels(np.array(ours), np.array(theirs))


def test_tiling_options_change_only_the_tiling(reference_upscalers):
    """ESRGAN_tile 0 runs the model on the whole picture; small tiles blend their seams: both stay close."""
    source = Image.open(ORACLE / "inputs" / "src_a_64x64.png").convert("RGB")
    info = reference_upscalers.find("tiny-esrgan-x4")
    whole = np.array(reference_upscalers.upscale(source, 2.0, info, Options(ESRGAN_tile=0))).astype(int)
    tiled = np.array(reference_upscalers.upscale(source, 2.0, info, Options(ESRGAN_tile=32,
                                                                              ESRGAN_tile_overlap=8))).astype(int)
    assert whole.shape == tiled.shape == (128, 128, 3)
    assert 0 < np.abs(whole - tiled).mean() < 20


def test_spandrel_leaves_no_torchvision_behind(reference_upscalers):
    """spandrel imports torchvision, which retouch never installs: a stand-in is used for the import only."""
    reference_upscalers.upscale(_image(16, 16), 2.0, reference_upscalers.find("tiny-esrgan-x4"))
    assert "torchvision" not in sys.modules
