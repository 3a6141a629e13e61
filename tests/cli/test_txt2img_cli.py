"""``retouch txt2img``, run as a user runs it (a subprocess): the same pixels and infotext as the library."""

import numpy as np
from PIL import Image

from retouch import load_model
from retouch.params import Txt2ImgParams
from retouch.pipeline import generate
from tests.cli.test_cli import run
from tests.conftest import MODELS, need_shared

ARGS = ("--prompt", "a red cat", "--width", "64", "--height", "64", "--steps", "3", "--seed", "21",
        "--sampler-name", "Euler")


def test_txt2img_with_hires_fix_equals_the_library(tmp_path):
    out = tmp_path / "out"
    result = run("txt2img", *ARGS, "--ckpt", "tiny", "--enable-hr", "--hr-scale", "1.5", "--hr-upscaler",
                 "Latent (bicubic)", "--denoising-strength", "0.6", "--hr-second-pass-steps", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    saved = out / "00000-21.png"
    assert saved.is_file() and str(saved) in result.stdout
    image = Image.open(saved)
    assert image.size == (96, 96)
    expected = generate(Txt2ImgParams(prompt="a red cat", width=64, height=64, steps=3, seed=21, sampler_name="Euler",
                                      enable_hr=True, hr_scale=1.5, hr_upscaler="Latent (bicubic)",
                                      denoising_strength=0.6, hr_second_pass_steps=2), load_model("tiny"))
    assert np.array_equal(np.array(image.convert("RGB")), np.array(expected.images[0]))
    assert image.info["parameters"] == expected.infotexts[0]
    assert "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent (bicubic)" in result.stdout


def test_refiner_and_model_upscaler_from_the_folders(tmp_path):
    need_shared()
    result = run("txt2img", *ARGS, "--ckpt", str(MODELS / "tiny-sd1.safetensors"), "--refiner-checkpoint",
                 "tiny-sd1-b", "--refiner-switch-at", "0.5", "--enable-hr", "--hr-upscaler", "tiny-esrgan-x4",
                 "--esrgan-models-path", str(MODELS / "ESRGAN"), "--no-save")
    assert result.returncode == 0, result.stderr
    assert "Refiner: tiny-sd1-b [9a6d492510], Refiner switch at: 0.5" in result.stdout
    assert "Hires upscaler: tiny-esrgan-x4" in result.stdout


def test_bad_values_name_the_flag_before_loading():
    result = run("txt2img", *ARGS, "--enable-hr", "--hr-sampler-name", "Euler z", "--no-save")
    assert result.returncode == 2 and "--hr-sampler-name: hr_sampler_name: unknown sampler 'Euler z'" in result.stderr
    result = run("txt2img", *ARGS, "--enable-hr", "--hr-upscaler", "Bicubic", "--no-save")
    assert result.returncode == 2 and "hr_upscaler: could not find upscaler named 'Bicubic'" in result.stderr
    result = run("txt2img", *ARGS, "--esrgan-models-path", "/nonexistent", "--no-save")
    assert result.returncode == 2 and "--esrgan-models-path: not a folder" in result.stderr
