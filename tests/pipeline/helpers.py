"""Shared helpers for pipeline tests: oracle cases and a quick job builder."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from retouch.processing import StableDiffusionProcessingImg2Img, process_images_with_result
from tests.conftest import ORACLE

REQUEST_ONLY = ("init_images", "mask", "override_settings", "override_settings_restore_afterwards")


def oracle(case: str):
    request = json.loads((ORACLE / "cases" / f"{case}.json").read_text())["request"]
    tensors = load_file(ORACLE / "intermediates" / f"{case}_tensors.safetensors")
    return request, tensors


def build_from_request(request: dict, model, **extra) -> StableDiffusionProcessingImg2Img:
    kwargs = {k: v for k, v in request.items() if k not in REQUEST_ONLY}
    kwargs["init_images"] = [Image.open(ORACLE / "inputs" / name) for name in request["init_images"]]
    if request.get("mask"):
        kwargs["mask"] = Image.open(ORACLE / "inputs" / request["mask"])
    kwargs.update(extra)
    return StableDiffusionProcessingImg2Img(sd_model=model, do_not_save_samples=True, do_not_save_grid=True, **kwargs)


def run_capturing(p):
    """process_images, also returning the first batch's final latents (after the mask blend)."""
    processed, result = process_images_with_result(p)
    return processed, result.latents[0]


def pixels(image) -> np.ndarray:
    return np.array(image.convert("RGB")).astype(int)


def source_image(w=64, h=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
