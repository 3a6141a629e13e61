"""Freed blocks are reused within a job (no fresh pages from the kernel) and returned to it when the job ends."""

import mmap

import pytest

from retouch.models import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")

# Run in a fresh interpreter: what glibc does with a block depends on what the process freed before.
PROBE = """
import json, resource, psutil, torch
from retouch.models.memory import reuse_freed_memory

def faults(runs=6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(runs):
        torch.ones(48 << 20, dtype=torch.uint8)  # well above glibc's mmap threshold; written once, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

rss = lambda: psutil.Process().memory_info().rss
out = {"outside": faults()}
with reuse_freed_memory():
    out["inside"] = faults()
base = rss()
with reuse_freed_memory():
    with reuse_freed_memory():  # nested (two jobs at once): kept until the last ends
        blocks = [torch.ones(32 << 20, dtype=torch.uint8) for _ in range(4)]
        del blocks
    out["kept"] = rss() - base
out["after"] = rss() - base
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
def test_within_a_job_freed_blocks_are_reused_instead_of_faulted_in_again(probe):
    pages = (48 << 20) // mmap.PAGESIZE
    assert probe["outside"] > pages * 5  # outside: the kernel hands out fresh pages every time (6 runs)
    assert probe["inside"] < pages * 2.5  # inside: faulted in once or twice (glibc may alternate), then reused


@glibc
def test_the_memory_kept_during_a_job_is_returned_when_it_ends(probe):
    assert probe["kept"] > 100 << 20  # freed, but kept while a job runs
    assert probe["after"] < 16 << 20  # returned when the last job ends
