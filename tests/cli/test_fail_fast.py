"""A bad flag is told before diffusers (and, for most flags, torch) is imported: the one-line error comes at once, not after
the seconds those imports take (7 s on a 2-core CPU), and no model machinery runs for a command that cannot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from retouch.cli import main
code = main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)}))
"""

SAMPLERS = ["torch"]  # a job's sampler is resolved against the samplers themselves, which are torch code
CASES = [  # (argv, the error, what was imported by then)
    (["img2img", "missing.png", "--prompt", "a"], "INIT_IMAGE: no such file", []),
    (["img2img", "{image}", "--prompt", "a", "--steps", "0"], "--steps: steps must be between 1", []),
    (["img2img", "{image}", "--prompt", "a", "--script-args", "[1]"], "--script-args: give --script too", SAMPLERS),
    (["txt2img", "--prompt", "a", "--width", "7"], "--width: width must be between 8", []),
    (["txt2img", "--prompt", "a", "-o", "{file}"], "-o/--outdir:", SAMPLERS),
    (["serve", "--api-auth", "admin"], "--api-auth: entry 1 ('admin') must be USER:PASSWORD", []),
    (["serve", "--max-queue", "0"], "--max-queue: must be positive, got 0", []),
    (["serve", "--batch-root", "{missing}"], "--batch-root:", []),
]


@pytest.mark.parametrize(("argv", "message", "imported"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_a_bad_flag_is_told_before_diffusers_is_imported(tmp_path, argv, message, imported):
    image, file = tmp_path / "in.png", tmp_path / "a-file"
    from PIL import Image

    Image.new("RGB", (64, 64), "gray").save(image)
    file.write_text("not a folder")
    argv = [a.format(image=image, file=file, missing=tmp_path / "missing") for a in argv]
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 2
    assert message in out.stderr
    assert result["heavy"] == imported


def test_a_good_command_still_gets_its_model_machinery(tmp_path):
    """The lazy package attributes resolve: ``retouch.models.load_model``, ``retouch.upscalers.Upscalers``."""
    import retouch.models
    import retouch.upscalers
    from retouch.models.loader import load_model
    from retouch.upscalers.run import Upscalers

    assert retouch.models.load_model is load_model
    assert retouch.upscalers.Upscalers is Upscalers
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        retouch.models.nothing  # noqa: B018
