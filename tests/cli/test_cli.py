"""The command line, run as a user runs it (a subprocess)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import MODELS, REPO, need_shared
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


def test_set_token_merging_is_an_override_as_in_a1111(init_png, tmp_path, bundled_tiny):
    """``--set token_merging_ratio`` is an override: it wins over ``token_merging_ratio_img2img`` (A1111's
    get_token_merging_ratio), and the job equals the library's with the same override."""
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    out = tmp_path / "out"
    overrides = {"token_merging_ratio": 0.5, "token_merging_ratio_img2img": 0.2}
    result = run("img2img", str(init_png), "--prompt", "x", "--ckpt", "tiny", "--width", "64", "--height", "64",
                 "--steps", "4", "--seed", "1", *(a for k, v in overrides.items() for a in ("--set", f"{k}={v}")),
                 "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "Token merging ratio: 0.5," in result.stdout
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, prompt="x", init_images=[Image.open(init_png)], width=64,
                                         height=64, steps=4, seed=1, override_settings=overrides)
    library = process_images(p)
    assert "Token merging ratio: 0.5," in library.info
    assert (np.array(Image.open(out / "00000-1.png").convert("RGB")) == np.array(library.images[0])).all()


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


def test_a_folder_batch_has_one_seed_and_takes_masks_from_the_mask_folder_itself(tmp_path):
    # A1111's process_batch: seed -1 is drawn once for the whole folder; masks are the files of the mask folder, not
    # of its subfolders (this command searched masks only by image suffix, and drew a seed per file)
    inputs, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    (inputs / "sub").mkdir(parents=True), (masks / "deeper").mkdir(parents=True)
    for name in ("a", "sub/b"):
        source_image(64, 64, seed=len(name)).save(inputs / f"{name}.png")
    Image.new("L", (64, 64), 255).save(masks / "a.mask", format="PNG")  # any file named <stem>.*, as A1111's glob
    Image.new("L", (64, 64), 255).save(masks / "b.png")
    Image.new("L", (64, 64), 255).save(masks / "deeper" / "a.png")
    result = run("img2img", "--input-dir", str(inputs), "--mask-dir", str(masks), "--output-dir", str(out),
                 "--ckpt", "tiny", "--width", "64", "--height", "64", "--steps", "2", "--seed", "-1")
    assert result.returncode == 0, result.stderr
    seeds = {Image.open(p).info["parameters"].split("Seed: ")[1].split(",")[0] for p in out.iterdir()}
    assert len(list(out.iterdir())) == 2 and len(seeds) == 1


def test_help_lists_generated_flags():
    result = run("img2img", "--help")
    for option in ("--denoising-strength", "--inpainting-fill", "--mask-blur-x", "--cfg-scale", "--s-churn"):
        assert option in result.stdout


def _bomb(path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))
    return path


def _broken_checkpoint(path):
    import json
    import struct

    header = json.dumps({"model.diffusion_model.input_blocks.0.0.weight": {
        "dtype": "F32", "shape": [320, 4, 3, 3], "data_offsets": [0, 46080]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
    return path


def _huge_yaml(folder):
    import shutil

    need_shared()
    shutil.copy(MODELS / "tiny-sd1.safetensors", folder / "huge.safetensors")
    shutil.copytree(MODELS / "tiny-clip-vit-large-patch14", folder / "tiny-clip-vit-large-patch14")
    text = (MODELS / "tiny-sd1.yaml").read_text().replace("model_channels: 32", "model_channels: 32000")
    (folder / "huge.yaml").write_text(text)  # a 144 GB UNet, if it were built
    return folder / "huge.safetensors"


@pytest.mark.parametrize(("case", "message"), [
    ("bomb", "INIT_IMAGE: "), ("folder", "is a folder, not an image"), ("unwritable", "-o/--outdir: cannot write"),
    ("threads", "--threads: must be at least 1"), ("seed abc", "argument --seed: invalid int value: 'abc'"),
    ("seed 1e400", "argument --seed: invalid int value: '1e400'"), ("seed huge", "--seed: seed must be between"),
    ("broken checkpoint", "not a valid safetensors file"), ("huge yaml", "the config expects (128000, 32000)"),
    ("eps", "cannot read"),
])
def test_every_bad_argument_is_exit_2_and_one_line(init_png, tmp_path, case, message):  # issue 17 #10
    args = {
        "bomb": lambda: [str(_bomb(tmp_path / "bomb.png"))],
        "folder": lambda: [str(tmp_path)],
        "unwritable": lambda: [str(init_png), "-o", str(init_png / "sub")],  # under a file: cannot be made
        "threads": lambda: [str(init_png), "--threads", "-1"],
        "seed abc": lambda: [str(init_png), "--seed", "abc"],
        "seed 1e400": lambda: [str(init_png), "--seed", "1e400"],
        "seed huge": lambda: [str(init_png), "--seed", str(10**30)],
        "broken checkpoint": lambda: [str(init_png), "--ckpt", str(_broken_checkpoint(tmp_path / "b.safetensors"))],
        "huge yaml": lambda: [str(init_png), "--ckpt", str(_huge_yaml(tmp_path))],
        "eps": lambda: [str(_eps(tmp_path / "x.eps"))],
    }[case]()
    outdir = [] if case == "unwritable" else ["-o", str(tmp_path / "out")]
    result = run("img2img", *args, "--steps", "2", "--width", "64", "--height", "64", *outdir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-500:]
    assert "Traceback" not in result.stderr


def _eps(path):
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    return path


def test_lora_embeddings_and_soft_inpainting_flags(init_png, tmp_path, bundled_tiny):
    import torch

    from retouch.networks.synthetic import write_random_network

    loras, embeddings = tmp_path / "loras", tmp_path / "embeddings"
    loras.mkdir()
    embeddings.mkdir()
    write_random_network(loras / "style.safetensors", bundled_tiny.extra_networks.layers, scale=0.3)
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}}, embeddings / "myemb.pt")
    mask = tmp_path / "mask.png"
    square = Image.new("L", (64, 64), 0)
    square.paste(255, (16, 16, 48, 48))
    square.save(mask)
    common = [str(init_png), "--ckpt", "tiny", "--width", "64", "--height", "64", "--steps", "3", "--no-save",
              "--lora-dir", str(loras), "--embeddings-dir", str(embeddings)]
    result = run("img2img", *common, "--prompt", "a myemb cat <lora:style:0.7>", "--mask", str(mask),
                 "--soft-inpainting", "--soft-inpainting-settings", "1.5,1")
    assert result.returncode == 0, result.stderr
    assert 'Lora hashes: "style: ' in result.stdout and 'TI hashes: "myemb: ' in result.stdout
    assert "Soft inpainting schedule bias: 1.5, Soft inpainting preservation strength: 1, " in result.stdout
    missing = run("img2img", *common, "--prompt", "<lora:nope:1>")
    assert missing.returncode == 0 and "Lora not found: nope" in missing.stderr
    for args, message in ((["--lora-dir", str(tmp_path / "none")], "--lora-dir: not a folder"),
                          (["--soft-inpainting-settings", "1"], "give --soft-inpainting too"),
                          (["--soft-inpainting", "--soft-inpainting-settings", "1,99"],
                           "preservation_strength must be in [0, 8], got 99")):
        bad = run("img2img", *common, *args)
        assert bad.returncode == 2 and message in bad.stderr
