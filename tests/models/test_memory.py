"""A job's freed memory goes back to the kernel when the last job ends; within a job the allocator keeps its
defaults (large blocks are returned as soon as they are freed, not kept in the heap)."""

import pytest

from retouch.models import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")

# Run in a fresh interpreter: what glibc does with a block depends on what the process freed before.
PROBE = """
import json, psutil, torch
from retouch.models.memory import return_free_memory_if_idle, return_freed_memory

rss = lambda: psutil.Process().memory_info().rss
MIB = 1 << 20

def churn():
    # 200 MiB in blocks below glibc's mmap threshold (from the heap); all freed but the last, which pins the
    # heap's top so that glibc cannot give the rest back by itself
    blocks = [torch.ones(64 << 10, dtype=torch.uint8) for _ in range(3200)]
    return blocks[-1]

out = {}
base = rss()
with return_freed_memory():
    with return_freed_memory():  # nested (two jobs at once): returned when the last ends
        pin = churn()
    out["kept"] = (rss() - base) / MIB
    big = torch.ones(64 << 20, dtype=torch.uint8)
    del big
    out["after_large_block"] = (rss() - base) / MIB
out["after"] = (rss() - base) / MIB
base = rss()
pin2 = churn()
out["without"] = (rss() - base) / MIB
return_free_memory_if_idle()  # as load_model does when it is done
out["returned_when_idle"] = (rss() - base) / MIB
with return_freed_memory():
    base = rss()
    pin3 = churn()
    return_free_memory_if_idle()  # a model loaded while a job runs: the job keeps its heap
    out["kept_while_a_job_runs"] = (rss() - base) / MIB
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(run.stdout.splitlines()[-1])


@glibc
def test_memory_freed_during_a_job_is_returned_when_the_last_job_ends(probe):
    assert probe["kept"] > 150  # the inner job ended, the outer one still runs: nothing returned yet
    assert probe["after"] < 16  # the last job ended: returned
    assert probe["without"] > 150  # what glibc would have kept without it


@glibc
def test_within_a_job_a_freed_large_block_goes_back_at_once(probe):
    assert probe["after_large_block"] - probe["kept"] < 8  # 64 MiB freed: not kept in the heap


def test_a_vae_pass_keeps_its_freed_blocks_only_when_its_widest_activation_is_large(tiny_sd1, monkeypatch):
    """Small passes map their large blocks from the kernel (a lower peak); one whose widest activation reaches
    LARGE_BLOCK keeps its freed blocks in the heap (faulting them in again would cost seconds)."""
    import torch

    from retouch.models import model as model_module

    seen: list[bool] = []
    real = model_module.keep_freed_blocks
    monkeypatch.setattr(model_module, "keep_freed_blocks", lambda when=True: seen.append(when) or real(when))
    latents = torch.zeros(1, 4, 8, 8)
    widest = tiny_sd1.vae.config.block_out_channels[1] * 64 * 64 * 4  # the decode's, fp32, 64² pixels
    for large_block, expected in ((widest + 1, False), (widest, True)):
        monkeypatch.setattr(model_module, "LARGE_BLOCK", large_block)
        tiny_sd1.decode_first_stage(latents)
        assert seen.pop() is expected


@glibc
def test_free_memory_is_returned_after_a_load_unless_a_job_runs(probe):
    assert probe["returned_when_idle"] < 16
    assert probe["kept_while_a_job_runs"] > 150


def test_opencv_is_imported_only_when_a_job_needs_it():
    """OpenCV adds 15 MB to a process: a plain img2img job does not import it, a blurred mask does."""
    import subprocess
    import sys

    code = ("import sys; from PIL import Image; import retouch.processing, retouch.server.app; a = 'cv2' in sys.modules; "
            "from retouch.imageops.masking import gaussian_blur_mask; gaussian_blur_mask(Image.new('L', (8, 8)), 2, 2); "
            "print(a, 'cv2' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.split() == ["False", "True"]
