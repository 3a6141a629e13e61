"""Parity with the real A1111 v1.10.1 on the public oracle cases, through process_images."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ORACLE
from tests.pipeline.helpers import build_from_request, oracle, pixels, run_capturing

# Final latents: A1111's own float32 result lies ~1e-4 from a float64 run of the same computation
# (different conv/attention kernels sum in another order); ours lies as far, on the other side.
LATENT_TOL = 3e-4


def model_for(request, tiny_sd1, tiny_sd1_inpainting):
    checkpoint = request.get("override_settings", {}).get("sd_model_checkpoint")
    return tiny_sd1_inpainting if checkpoint == "tiny-sd1-inpainting" else tiny_sd1


@pytest.mark.parametrize("case", ["002", "004", "005", "014", "016", "019", "025"])
def test_oracle_case(case, tiny_sd1, tiny_sd1_inpainting):
    request, recorded = oracle(case)
    p = build_from_request(request, model_for(request, tiny_sd1, tiny_sd1_inpainting))
    processed, samples = run_capturing(p)
    reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png"))
    assert np.abs(pixels(processed.images[0]) - reference).max() <= 2
    assert (samples - recorded["samples"]).abs().max() <= LATENT_TOL
    assert (p.init_latent - recorded["init_latent"]).abs().max() <= 1e-5
    expected_info = (ORACLE / "cases" / f"{case}_infotext0.txt").read_text()
    assert processed.infotexts[0].rsplit("Version: ", 1)[0] == expected_info.rsplit("Version: ", 1)[0]
    assert processed.images[0].info["parameters"] == processed.infotexts[0]
    if "mask" in recorded:
        assert np.array_equal(p.mask.numpy(), recorded["mask"].reshape(p.mask.shape).numpy())
        assert np.array_equal(p.nmask.numpy(), recorded["nmask"].reshape(p.nmask.shape).numpy())
    assert (p.image_conditioning - recorded["image_conditioning"]).abs().max() <= 1e-5


@pytest.mark.parametrize("case", ["002", "014", "025"])
def test_info_json_matches_a1111(case, tiny_sd1, tiny_sd1_inpainting):
    request, _ = oracle(case)
    p = build_from_request(request, model_for(request, tiny_sd1, tiny_sd1_inpainting))
    processed, _ = run_capturing(p)
    ours = json.loads(processed.js())
    theirs = json.loads((ORACLE / "cases" / f"{case}_info.json").read_text())
    assert set(ours) == set(theirs)
    for key in theirs:
        if key in ("job_timestamp", "version", "infotexts"):
            continue
        assert ours[key] == theirs[key], key
