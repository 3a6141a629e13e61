"""``retouch upscale``: A1111's Extras upscaling from the command line, the reference pixels exactly."""

import numpy as np
from PIL import Image

from tests.cli.test_cli import run
from tests.conftest import MODELS, ORACLE, need_shared


def test_upscale_with_a_model_gives_a1111s_pixels(tmp_path):
    need_shared()
    result = run("upscale", str(ORACLE / "inputs" / "src_a_64x64.png"), "--upscaler", "tiny-esrgan-x4",
                 "--esrgan-models-path", str(MODELS / "ESRGAN"), "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "00000-src_a_64x64.png"
    assert str(saved) in result.stdout and "Postprocess upscale by: 2.0, Postprocess upscaler: tiny-esrgan-x4" in \
        result.stdout
    ours = np.array(Image.open(saved).convert("RGB"))
    assert np.array_equal(ours, np.array(Image.open(ORACLE / "cases" / "242_out0.png").convert("RGB")))
    assert Image.open(saved).info["postprocessing"].startswith("Postprocess upscale by: 2.0")


def test_upscale_to_a_size_and_bad_names(tmp_path):
    need_shared()
    result = run("upscale", str(ORACLE / "inputs" / "src_a_64x64.png"), "--width", "100", "--height", "60",
                 "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Image.open(next(tmp_path.iterdir())).size == (100, 60)
    bad = run("upscale", str(ORACLE / "inputs" / "src_a_64x64.png"), "--upscaler", "Bicubic", "-o", str(tmp_path))
    assert bad.returncode == 2 and "upscaler_1: could not find upscaler named 'Bicubic'" in bad.stderr
    half = run("upscale", str(ORACLE / "inputs" / "src_a_64x64.png"), "--width", "100", "-o", str(tmp_path))
    assert half.returncode == 2 and "--width/--height: give both" in half.stderr
