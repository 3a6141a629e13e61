"""Bad weight files: each gives a CheckpointError (a ValueError) naming the file and the problem."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import retouch
from retouch import load_model
from retouch.models import CheckpointError
from retouch.models.detect import detect_ldm_config
from tests.conftest import MODELS, need_shared


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: no such file"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_safetensors(tmp_path):
    need_shared()
    bad = tmp_path / "half.safetensors"
    data = (MODELS / "tiny-sd1.safetensors").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half\.safetensors: not a valid safetensors file"):
        load_model(bad)


def test_garbage_files(tmp_path):
    for name in ("junk.safetensors", "junk.ckpt"):
        (tmp_path / name).write_bytes(b"hello, this is not a model" * 10)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_model(tmp_path / name)


def test_unknown_suffix(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="unknown weight file type '.gguf'"):
        load_model(tmp_path / "model.gguf")


def test_diffusers_layout_single_file_is_explained(tmp_path):
    f = tmp_path / "unet.safetensors"
    save_file({"down_blocks.0.resnets.0.conv1.weight": torch.zeros(2, 2, 3, 3)}, f)
    with pytest.raises(CheckpointError, match="unet.safetensors: not a Stable Diffusion checkpoint.*diffusers-layout"):
        load_model(f)


@pytest.mark.parametrize(("key", "what"), [
    ("conditioner.embedders.0.model.ln_final.weight", "an SDXL refiner"),
    ("model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias", "SD3"),
    ("model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale", "Flux"),
])
def test_unsupported_families(tmp_path, key, what):
    f = tmp_path / "other.safetensors"
    save_file({key: torch.zeros(2), "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1)}, f)
    with pytest.raises(CheckpointError, match=f"other.safetensors: not supported: {what}"):
        load_model(f)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_malicious_ckpt_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load"):
        load_model(evil)
    assert not marker.exists()


def test_ckpt_with_yaml_loads_like_safetensors(tmp_path, tiny_sd1):
    from safetensors.torch import load_file

    state = load_file(MODELS / "tiny-sd1.safetensors")
    torch.save({"state_dict": state, "global_step": 1}, tmp_path / "copy.ckpt")
    yaml_text = (MODELS / "tiny-sd1.yaml").read_text().replace(
        "version: tiny-clip-vit-large-patch14", f"version: {MODELS / 'tiny-clip-vit-large-patch14'}")
    (tmp_path / "copy.yaml").write_text(yaml_text)
    model = load_model(tmp_path / "copy.ckpt")
    assert model.name == "copy" and len(model.short_hash) == 10
    assert torch.equal(model.get_learned_conditioning(["a cat"]), tiny_sd1.get_learned_conditioning(["a cat"]))


def test_without_yaml_unknown_shapes_are_refused(tmp_path):
    need_shared()
    shutil.copy(MODELS / "tiny-sd1.safetensors", tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="tiny.safetensors: not supported: a UNet with cross-attention width 32"):
        load_model(tmp_path / "tiny.safetensors")


def test_yaml_that_does_not_fit_the_weights(tmp_path):
    need_shared()
    shutil.copy(MODELS / "tiny-sd1-inpainting.safetensors", tmp_path / "m.safetensors")
    shutil.copy(MODELS / "tiny-sd1.yaml", tmp_path / "m.yaml")
    shutil.copytree(MODELS / "tiny-clip-vit-large-patch14", tmp_path / "tiny-clip-vit-large-patch14")
    with pytest.raises(CheckpointError, match="the UNet takes 9 input channels but the config"):
        load_model(tmp_path / "m.safetensors")


def test_yaml_naming_an_unknown_text_encoder(tmp_path):
    need_shared()
    shutil.copy(MODELS / "tiny-sd1.safetensors", tmp_path / "m.safetensors")
    text = (MODELS / "tiny-sd1.yaml").read_text().replace("tiny-clip-vit-large-patch14", "someone/clip")
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(CheckpointError, match="names the text encoder 'someone/clip'.*nothing is downloaded"):
        load_model(tmp_path / "m.safetensors")


def shapes(in_channels=4, context=768, open_clip=False):
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, in_channels, 3, 3),
             "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(320, context)}
    if open_clip:
        state["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = torch.empty(3072, 1024)
    return state


@pytest.mark.parametrize(("state", "v", "expected"), [
    (shapes(), False, "v1-inference.yaml"),
    (shapes(9), False, "v1-inpainting-inference.yaml"),
    (shapes(8), False, "instruct-pix2pix.yaml"),
    (shapes(4, 1024, True), False, "v2-inference.yaml"),
    (shapes(4, 1024, True), True, "v2-inference-v.yaml"),
    (shapes(9, 1024, True), False, "v2-inpainting-inference.yaml"),
])
def test_family_detection(tmp_path, state, v, expected):
    assert detect_ldm_config(tmp_path / "m.safetensors", state, lambda _: v) == expected


def test_family_detection_rejects_odd_channel_counts(tmp_path):
    with pytest.raises(CheckpointError, match="SD1 UNet with 5 input channels"):
        detect_ldm_config(tmp_path / "m.safetensors", shapes(5), lambda _: False)


@pytest.mark.slow
def test_sd15_sized_checkpoint_without_yaml_loads_and_runs(tmp_path):
    from retouch.models.tiny import write_sd15_sized_checkpoint

    path = write_sd15_sized_checkpoint(tmp_path / "sd15-random.safetensors")
    model = load_model(path)
    assert model.family == "SD1" and model.config_source == "bundled v1-inference.yaml"
    assert list(model.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert model.text_encoder.width == 768
    cond = model.get_learned_conditioning(["a photo of a cat"])
    assert cond.shape == (1, 77, 768) and torch.isfinite(cond).all()
    with torch.inference_mode():
        out = model.unet(torch.randn(1, 4, 8, 8), torch.tensor([500]), encoder_hidden_states=cond).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    del model

    # Loading never holds the (fp16) file next to the (fp32) model: in a fresh process, the peak while
    # loading stays within 20 % of the weights above what the imports alone take. (VmHWM, not
    # ru_maxrss: Linux carries ru_maxrss over from this parent process into the child.)
    script = (
        "import resource, sys, torch\n"
        "import retouch.models.components\n"
        "from retouch import load_model\n"
        "base = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
        "m = load_model(sys.argv[1])\n"
        "w = sum(p.numel() * p.element_size() for n in (m.unet, m.vae, m.text_encoder.transformer)"
        " for p in n.parameters())\n"
        "peak = [int(x.split()[1]) * 1024 for x in open('/proc/self/status') if x.startswith('VmHWM:')][0]\n"
        "print(base, peak, w)\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(retouch.__file__).parents[1])})
    base, peak, weights = map(int, out.stdout.split()[-3:])
    assert weights > 4e9  # fp32 SD1.5: UNet 3.4 GB + VAE 0.3 GB + CLIP 0.5 GB
    assert peak - base <= 1.2 * weights, (base, peak, weights)


def test_safetensors_are_read_lazily_and_exactly(tmp_path):
    from safetensors.torch import load_file

    from retouch.models.checkpoint import SafetensorsFile, read_state_dict

    tensors = {f"t{i}": torch.randn(64, 32, generator=torch.Generator().manual_seed(i)).to(dtype)
               for i, dtype in enumerate((torch.float16, torch.float32, torch.bfloat16, torch.float16))}
    tensors["steps"] = torch.arange(5)
    path = tmp_path / "w.safetensors"
    save_file(tensors, path)
    lazy = read_state_dict(path)
    assert isinstance(lazy, SafetensorsFile) and len(lazy) == 5 and "t2" in lazy and "nope" not in lazy
    expected = load_file(path)
    for window in (0, 1 << 30):  # 0: the file is reopened before every read
        state = SafetensorsFile(path, window=window)
        assert sorted(state) == sorted(expected)
        for key in reversed(list(state)):
            assert state[key].dtype == expected[key].dtype and torch.equal(state[key], expected[key])
    with pytest.raises(KeyError):
        lazy["nope"]
