"""Benchmark workers. Each runs in its own process (``python bench/workers.py NAME JSON``) so that
peak RSS and warm-up are measured per engine; each prints one JSON object on its last line."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def source(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], -1) + rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


class NetworkTimer:
    """Wraps the model's network entry points and sums the time spent inside them."""

    def __init__(self, model):
        self.total = 0.0
        self.calls = {"unet": 0, "text": 0, "vae_encode": 0, "vae_decode": 0}
        for name, owner, attr in (("unet", model, "apply_model"), ("text", model.text_encoder, "encode"),
                                  ("vae_encode", model.vae, "encode"), ("vae_decode", model.vae, "decode")):
            setattr(owner, attr, self._wrap(name, getattr(owner, attr)))

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start
                self.calls[name] += 1

        return timed


def overhead(args: dict) -> dict:
    """process_images end to end vs the sum of its own network calls, same run."""
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(args.get("threads", 2))
    model = load_model(args["ckpt"], dtype=DTYPES[args.get("precision", "fp32")],
                       channels_last=args.get("channels_last", False))
    runs = []
    image = None
    for _ in range(args["runs"]):
        timer = NetworkTimer(model)
        p = StableDiffusionProcessingImg2Img(
            sd_model=model, prompt="a watercolor painting of a forest", negative_prompt="blurry",
            init_images=[source(args["size"])], width=args["size"], height=args["size"], steps=20,
            denoising_strength=0.75, sampler_name=args["sampler"], seed=1, batch_size=args.get("batch", 1))
        start = time.perf_counter()
        processed = process_images(p)
        total = time.perf_counter() - start
        runs.append({"total": total, "network": timer.total, "calls": timer.calls})
        image = processed.images[0]
        # unwrap for the next run
        model = _unwrapped(model)
    if args.get("save_image"):
        image.save(args["save_image"])
    return {"runs": runs, "peak_rss_mb": peak_rss_mb()}


def _unwrapped(model):
    for owner, attr in ((model, "apply_model"), (model.text_encoder, "encode"), (model.vae, "encode"),
                        (model.vae, "decode")):
        if attr in vars(owner):
            delattr(owner, attr)
    return model


def diffusers_img2img(args: dict) -> dict:
    """diffusers' StableDiffusionImg2ImgPipeline on the same weights (diffusers folder), same UNet calls."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.set_num_threads(args.get("threads", 2))
    folder = Path(args["folder"])
    start = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    calls = {"unet": 0}
    forward = unet.forward

    def counting(*a, **k):
        calls["unet"] += 1
        return forward(*a, **k)

    unet.forward = counting
    runs = []
    for _ in range(args["runs"]):
        calls["unet"] = 0
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt="a watercolor painting of a forest", negative_prompt="blurry", image=source(args["size"]),
                 strength=args["strength"], num_inference_steps=args["steps"], guidance_scale=7.0,
                 generator=torch.Generator().manual_seed(1))
        runs.append({"total": time.perf_counter() - start, "unet_calls": calls["unet"]})
    return {"runs": runs, "load": load, "peak_rss_mb": peak_rss_mb()}


def load_ours(args: dict) -> dict:
    from retouch import load_model

    start = time.perf_counter()
    model = load_model(args["ckpt"])
    ready = time.perf_counter() - start
    with torch.inference_mode():
        model.get_learned_conditioning(["warm"])
    resident = sum(p.numel() * p.element_size() for net in (model.unet, model.vae, model.text_encoder.transformer)
                   for p in net.parameters()) / 2**20
    return {"load": ready, "peak_rss_mb": peak_rss_mb(), "weights_mb": resident}


def load_diffusers(args: dict) -> dict:
    from diffusers import StableDiffusionImg2ImgPipeline

    start = time.perf_counter()
    StableDiffusionImg2ImgPipeline.from_single_file(args["ckpt"], config=args["config"], local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)
    return {"load": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def precision(args: dict) -> dict:
    """Speed and pixel deviation of bf16 / channels-last against fp32, same seed."""
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(args.get("threads", 2))
    results = {}
    reference = None
    for name, kwargs in (("fp32", {}), ("bf16", {"dtype": torch.bfloat16}),
                         ("bf16 + channels_last", {"dtype": torch.bfloat16, "channels_last": True}),
                         ("bf16, bf16 VAE", {"dtype": torch.bfloat16, "vae_dtype": torch.bfloat16})):
        model = load_model(args["ckpt"], **kwargs)
        times = []
        for _ in range(args["runs"]):
            p = StableDiffusionProcessingImg2Img(sd_model=model, prompt="a watercolor painting",
                                                 init_images=[source(args["size"])], width=args["size"],
                                                 height=args["size"], steps=20, denoising_strength=0.75,
                                                 sampler_name="Euler", seed=1)
            start = time.perf_counter()
            image = np.array(process_images(p).images[0]).astype(int)
            times.append(time.perf_counter() - start)
        if reference is None:
            reference = image
        diff = np.abs(image - reference)
        results[name] = {"time": statistics.median(times), "max_diff": int(diff.max()),
                         "mean_diff": float(diff.mean())}
        del model
    return results


def tiled_vae(args: dict) -> dict:
    from retouch import load_model

    torch.set_num_threads(args.get("threads", 2))
    model = load_model(args["ckpt"])
    z = torch.randn(1, 4, args["size"] // 8, args["size"] // 8, generator=torch.Generator().manual_seed(0)) * 0.8
    out = {}
    with torch.inference_mode():
        for mode in ("never", "always"):
            model.vae_tiling = mode
            start = time.perf_counter()
            pixels = model.decode_first_stage(z)
            out[mode] = {"time": time.perf_counter() - start}
            out[mode]["image"] = torch.clamp((pixels + 1) * 127.5, 0, 255).floor()
    diff = (out["never"].pop("image") - out["always"].pop("image")).abs()
    return {"untiled": out["never"], "tiled": out["always"], "max_diff": float(diff.max()),
            "mean_diff": float(diff.mean()), "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    name, payload = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(globals()[name](payload)))
