"""``retouch upscale``: A1111's Extras upscaling from the command line, the reference pixels exactly."""

import numpy as np
from PIL import Image

from tests.cli.test_cli import run
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import assert_oracle_pixels


def test_upscale_with_a_model_gives_a1111s_pixels(tmp_path):
    need_shared()
    result = run("upscale", str(ORACLE / "inputs" / "src_a_64x64.png"), "--upscaler", "tiny-esrgan-x4",
                 "--esrgan-models-path", str(MODELS / "ESRGAN"), "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "00000-src_a_64x64.png"
    assert str(saved) in result.stdout and "Postprocess upscale by: 2.0, Postprocess upscaler: tiny-esrgan-x4" in \
        result.stdout
    ours = np.array(Image.open(saved).convert("RGB"))
    assert_oracle_pixels(ours, np.array(Image.open(ORACLE / "cases" / "242_out0.png").convert("RGB")))
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


def test_img2img_script_from_the_command_line(tmp_path):
    """``--script "SD upscale" --script-args`` runs A1111's script (the upscaler named, as the API allows)."""
    need_shared()
    source = tmp_path / "in.png"
    Image.open(ORACLE / "inputs" / "src_a_64x64.png").save(source)
    out = tmp_path / "out"
    result = run("img2img", str(source), "--ckpt", "tiny", "--prompt", "a cat", "--width", "64", "--height", "64",
                 "--steps", "4", "--seed", "3", "--script", "SD upscale", "--script-args", '[null, 16, "Lanczos", 1.5]',
                 "-o", str(out))
    assert result.returncode == 0, result.stderr
    (saved,) = out.iterdir()
    assert Image.open(saved).size == (96, 96)
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in result.stdout
    bad = run("img2img", str(source), "--ckpt", "tiny", "--script", "nope", "--no-save")
    assert bad.returncode == 2 and "Script 'nope' not found" in bad.stderr
    bad = run("img2img", str(source), "--ckpt", "tiny", "--script", "loopback", "--script-args", "[2, 0.5, 'x']")
    assert bad.returncode == 2 and "--script-args: not JSON" in bad.stderr


def test_xyz_plot_and_prompt_matrix_from_the_command_line(tmp_path):
    """The X/Y/Z plot saves its grid with the grid's infotext; the prompt matrix its grid and every picture; a bad
    axis value is refused before any work."""
    source = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (120, 80, 40)).save(source)
    out = tmp_path / "xyz"
    args = '[4, "2,3", [], 0, "", [], 0, "", [], true, false, false, false, false, false, false, 0, true]'
    result = run("img2img", str(source), "--ckpt", "tiny", "--width", "64", "--height", "64", "--steps", "3",
                 "--seed", "3", "--prompt", "a cat", "--script", "x/y/z plot", "--script-args", args, "-o", str(out))
    assert result.returncode == 0, result.stderr
    (grid,) = out.iterdir()
    image = Image.open(grid)
    assert image.width == 128 and image.height > 64  # two cells under their labels
    assert 'Script: X/Y/Z plot, X Type: Steps, X Values: "2,3"' in image.info["parameters"]
    out = tmp_path / "matrix"
    result = run("img2img", str(source), "--ckpt", "tiny", "--width", "64", "--height", "64", "--steps", "3",
                 "--seed", "3", "--prompt", "a cat|red|blue", "--script", "prompt matrix", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list(out.iterdir())) == 5
    bad = run("img2img", str(source), "--ckpt", "tiny", "--script", "x/y/z plot", "--script-args",
              args.replace('"2,3"', '"2,x"'), "--no-save")
    assert bad.returncode == 2 and "Steps takes int values" in bad.stderr
