"""A1111's "Outpainting mk2": extend the picture side by side, each new strip first filled with noise shaped like the
picture's own spectrum and matched to its colours, then inpainted (``scripts/outpainting_mk_2.py``, whose noise
comes from parlance-zz's g-diffuser)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from retouch.imageops.grid import image_grid
from retouch.params import Job
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun
from retouch.scripts.poor_mans_outpainting import DIRECTIONS, layout


def _fft2(data: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Per-channel orthonormal (i)FFT, shifted before and after, as g-diffuser's helpers."""
    transform = np.fft.ifft2 if inverse else np.fft.fft2
    out = np.zeros(data.shape, dtype=np.complex128)
    for c in range(data.shape[2]):
        out[:, :, c] = np.fft.ifftshift(transform(np.fft.fftshift(data[:, :, c]), norm="ortho"))
    return out


def _window(width: int, height: int, std: float = 3.14) -> np.ndarray:
    """The noise's low-pass window (g-diffuser's mode 1: a Cauchy-like fall-off, not a Gaussian)."""
    scale_x, scale_y = width / min(width, height), height / min(width, height)
    x = (np.arange(width) / width * 2.0 - 1.0) * scale_x
    window = np.zeros((width, height))
    for y in range(height):
        fy = (y / height * 2.0 - 1.0) * scale_y
        window[:, y] = (1 / ((x ** 2 + 1.0) * (fy ** 2 + 1.0))) ** (std / 3.14)
    return window


def match_histograms(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each column (channel) of ``source`` given ``reference``'s distribution by quantile mapping (what
    ``skimage.exposure.match_histograms(..., channel_axis=1)`` does for float data)."""
    out = np.empty_like(source)
    for c in range(source.shape[1]):
        values, inverse, counts = np.unique(source[:, c], return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(reference[:, c], return_counts=True)
        quantiles = np.cumsum(counts) / source.shape[0]
        ref_quantiles = np.cumsum(ref_counts) / reference.shape[0]
        out[:, c] = np.interp(quantiles, ref_quantiles, ref_values)[inverse]
    return out


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float, color_variation: float) -> np.ndarray:
    """``image`` (float, [0, 1], (W, H, 3) as A1111 indexes it) with its masked part replaced by noise of the
    picture's spectrum and colours (g-diffuser's ``get_matched_noise``; its generator is seeded 0)."""
    width, height, channels = image.shape
    grey_mask = np.sum(mask, axis=2) / 3.0
    fill_mask, reference_mask = grey_mask > 1e-6, grey_mask < 1e-3
    windowed = image * (1.0 - np.repeat(grey_mask[:, :, None], 3, axis=2))
    windowed /= np.max(windowed)
    windowed += np.average(image) * mask
    spectrum = _fft2(windowed)
    magnitude = np.absolute(spectrum)
    phase = spectrum / magnitude
    noise = np.random.default_rng(0).random((width, height, channels))
    grey = np.sum(noise, axis=2) / 3.0
    noise *= color_variation
    for c in range(channels):
        noise[:, :, c] += (1.0 - color_variation) * grey
    noise_spectrum = _fft2(noise)
    window = _window(width, height)
    for c in range(channels):
        noise_spectrum[:, :, c] *= window
    shaped = _fft2(np.real(_fft2(noise_spectrum, inverse=True)))
    shaped[:, :, :] = np.absolute(shaped) ** 2 * (magnitude ** noise_q) * phase
    result = np.real(_fft2(shaped, inverse=True))
    result -= np.min(result)
    result /= np.max(result)
    result[fill_mask, :] = match_histograms(result[fill_mask, :] ** 1.0, image[reference_mask, :])
    return np.clip(image * (1.0 - mask) + result * mask, 0.0, 1.0)


@dataclasses.dataclass
class _Side:
    pixels: int
    left: bool = False
    right: bool = False
    top: bool = False
    bottom: bool = False


def _expand(run: ScriptRun, params: Any, images: list[Image.Image], side: _Side, args: dict[str, Any],
            state: dict[str, Any]) -> list[Image.Image]:
    """One side's strip for every picture of the batch: noise-filled, cropped to at most the job's size, inpainted,
    pasted back (A1111's ``expand``)."""
    blur, horizontal = args["mask_blur"], side.left or side.right
    grow_w, grow_h = (side.pixels, 0) if horizontal else (0, side.pixels)
    outputs: list[Image.Image] = []
    crops: list[Image.Image] = []
    mask: Image.Image | None = None
    size = (0, 0, 0, 0)
    for picture in images:
        res_w, res_h = picture.width + grow_w, picture.height + grow_h
        canvas = Image.new("RGB", (math.ceil(res_w / 64) * 64, math.ceil(res_h / 64) * 64))
        canvas.paste(picture, (grow_w if side.left else 0, grow_h if side.top else 0))
        mask = Image.new("RGB", canvas.size, "white")
        ImageDraw.Draw(mask).rectangle((side.pixels + blur if side.left else 0, side.pixels + blur if side.top else 0,
                                        mask.width - side.pixels - blur if side.right else res_w,
                                        mask.height - side.pixels - blur if side.bottom else res_h), fill="black")
        noised = matched_noise(np.asarray(canvas) / 255.0, np.asarray(mask) / 255.0, args["noise_q"],
                               args["color_variation"])
        output = Image.fromarray(np.clip(noised * 255.0, 0.0, 255.0).astype(np.uint8), mode="RGB")
        width = min(params.width, picture.width + grow_w) if horizontal else canvas.width
        height = min(params.height, picture.height + grow_h) if not horizontal else canvas.height
        crop = (0 if side.left else output.width - width, 0 if side.top else output.height - height,
                width if side.left else output.width, height if side.top else output.height)
        mask = mask.crop(crop)
        outputs.append(output)
        crops.append(output.crop(crop))
        size = (width, height, res_w, res_h)
    width, height, res_w, res_h = size
    assert mask is not None
    latent = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(latent).rectangle((side.pixels + blur * 2 if side.left else 0, side.pixels + blur * 2 if side.top else 0,
                                      mask.width - side.pixels - blur * 2 if side.right else res_w,
                                      mask.height - side.pixels - blur * 2 if side.bottom else res_h), fill="black")
    job = dataclasses.replace(state["params"], width=width, height=height, init_images=crops, image_mask=mask,
                              latent_mask=latent)
    result = run.generate(job)
    state["last"] = (job, result)
    state.setdefault("info", result.infotexts[0])
    made = result.images[result.index_of_first_image:]
    for n, output in enumerate(outputs):
        output.paste(made[n], (0 if side.left else output.width - made[n].width,
                               0 if side.top else output.height - made[n].height))
        outputs[n] = output.crop((0, 0, res_w, res_h))
    return outputs


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    params = job.params
    source = params.init_images[0]
    _, _, left, right, up, down = layout(source.width, source.height, args["pixels"], args["direction"])
    base = dataclasses.replace(params, n_iter=1, mask_blur_x=args["mask_blur"] * 4, mask_blur_y=args["mask_blur"] * 4,
                               inpaint_full_res=False, inpainting_fill=1, seed=job.seeds[0], subseed=job.subseeds[0])
    sides = [_Side(n, **{k: True}) for n, k in ((left, "left"), (right, "right"), (up, "top"), (down, "bottom"))
             if n > 0]
    run.control.job_count = params.n_iter * len(sides)
    state: dict[str, Any] = {"params": base}
    made: list[Image.Image] = []
    for _ in range(params.n_iter):
        pictures = [source] * params.batch_size
        for side in sides:
            if run.control.interrupted:
                break
            pictures = _expand(run, params, pictures, side, args, state)
        made += pictures
    images = made
    if run.options.return_grid and len(made) > 1:
        images = [image_grid(made, background=run.options.grid_background_color), *made]
    last_params, last = state["last"]
    return ScriptOutcome(images, [state["info"]] * len(images), last_params, last, job.seeds[0], state["info"],
                         interrupted=run.control.interrupted)


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    params = job.params
    if not args["direction"] or any(d not in DIRECTIONS for d in args["direction"]):
        raise ValueError(f"script_args[3] (Outpainting mk2: direction) takes one or more of {', '.join(DIRECTIONS)}, "
                         f"got {args['direction']!r}")
    width, height = sizes[0] if sizes else (params.width, params.height)
    target_w, target_h, *sides = layout(width, height, args["pixels"], args["direction"])
    per_job = int(params.steps * min(params.denoising_strength, 0.999)) + 1
    jobs = params.n_iter * sum(1 for s in sides if s > 0)
    return jobs * params.batch_size * per_job, target_w * target_h


OUTPAINTING_MK2 = Script("Outpainting mk2", (
    ScriptArg("info", object, None),
    ScriptArg("pixels", int, 128, lo=8, hi=256),
    ScriptArg("mask_blur", int, 8, lo=0, hi=64),
    ScriptArg("direction", list, list(DIRECTIONS)),
    ScriptArg("noise_q", float, 1.0, lo=0.0, hi=4.0),
    ScriptArg("color_variation", float, 0.05, lo=0.0, hi=1.0),
), run, cost)
