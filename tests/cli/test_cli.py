"""The command line, run as a user runs it (a subprocess)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.pipeline.helpers import source_image


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "retouch", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture
def init_png(tmp_path):
    path = tmp_path / "in.png"
    source_image(64, 64).save(path)
    return path


def test_img2img_writes_the_image_and_prints_the_infotext(init_png, tmp_path):
    out = tmp_path / "out"
    result = run("img2img", str(init_png), "--prompt", "a red cat", "--ckpt", "tiny",
                 "--width", "64", "--height", "64", "--steps", "6", "--seed", "5", "--sampler-name", "Euler a",
                 "--set", "CLIP_stop_at_last_layers=2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    saved = out / "00000-5.png"
    assert saved.is_file() and str(saved) in result.stdout
    infotext = Image.open(saved).info["parameters"]
    assert infotext in result.stdout
    assert "Steps: 6, Sampler: Euler a" in infotext and "Clip skip: 2" in infotext and "Model: retouch-tiny-v1" in infotext


def test_same_result_as_the_library(init_png, tmp_path, bundled_tiny):
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    out = tmp_path / "out"
    result = run("img2img", str(init_png), "--prompt", "x", "--ckpt", "tiny",
                 "--width", "64", "--height", "64", "--steps", "4", "--seed", "1", "-o", str(out))
    assert result.returncode == 0, result.stderr
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, prompt="x", init_images=[Image.open(init_png)], width=64,
                                         height=64, steps=4, seed=1)
    library = process_images(p).images[0]
    assert (np.array(Image.open(out / "00000-1.png").convert("RGB")) == np.array(library)).all()


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "0"], "--steps: steps must be between 1"),
    (["--width", "-8"], "--width: width must be between 8"),
    (["--denoising-strength", "-1"], "--denoising-strength: denoising_strength must be >= 0"),
    (["--sampler-name", "Eulr"], "--sampler-name: sampler_name: unknown sampler 'Eulr'"),
    (["--set", "bogus_option=1"], "--set: override_settings: unknown option 'bogus_option'"),
    (["--set", "novalue"], "--set: expected OPTION=VALUE"),
])
def test_bad_input_exits_2_with_one_line_naming_the_flag(init_png, tmp_path, args, message):
    result = run("img2img", str(init_png), "--ckpt", "tiny", "-o", str(tmp_path), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_missing_and_broken_images(tmp_path):
    result = run("img2img", str(tmp_path / "nope.png"), "-o", str(tmp_path))
    assert result.returncode == 2 and "INIT_IMAGE: no such file" in result.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run("img2img", str(broken), "-o", str(tmp_path))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_argparse_type_errors_exit_2(init_png, tmp_path):
    result = run("img2img", str(init_png), "--steps", "many", "-o", str(tmp_path))
    assert result.returncode == 2 and "--steps" in result.stderr


def test_batch_from_folders_with_per_image_masks(tmp_path):
    inputs, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs.mkdir(), masks.mkdir()
    for name in ("a", "b", "c"):
        source_image(64, 64, seed=ord(name)).save(inputs / f"{name}.png")
    for name in ("a", "b"):
        Image.new("L", (64, 64), 255).save(masks / f"{name}.png")
    result = run("img2img", "--input-dir", str(inputs), "--mask-dir", str(masks), "--output-dir", str(out),
                 "--ckpt", "tiny", "--width", "64", "--height", "64", "--steps", "3",
                 "--inpaint-full-res", "--inpainting-fill", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00000-a.png", "00001-b.png"]
    assert "no mask for c.png" in result.stderr


def test_help_lists_generated_flags():
    result = run("img2img", "--help")
    for option in ("--denoising-strength", "--inpainting-fill", "--mask-blur-x", "--cfg-scale", "--s-churn"):
        assert option in result.stdout
