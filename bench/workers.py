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
    """This process's peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries that over ``execve`` from the
    parent, so a worker started by a process holding a model would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def source(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], -1) + rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def job(size: int, sampler: str, inpaint: bool = False) -> dict:
    """The benchmark job: 20 steps, denoising 0.75 (16 UNet calls), CFG 7, one seed; inpainting: the centre
    square, blur 4, masked content "original", whole picture."""
    out = {"prompt": "a watercolor painting of a forest", "negative_prompt": "blurry", "init_images": [source(size)],
           "width": size, "height": size, "steps": 20, "denoising_strength": 0.75, "sampler_name": sampler, "seed": 1}
    if inpaint:
        out.update(mask=centre_mask(size), mask_blur=4, inpainting_fill=1, inpaint_full_res=False)
    return out


def centre_mask(size: int) -> Image.Image:
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return Image.fromarray(mask)


class NetworkTimer:
    """Wraps the model's network entry points and sums the time spent inside them."""

    def __init__(self, model=None, entry_points=None):
        """``entry_points``: ``(name, owner, attribute)`` triples; default: retouch's ``Model``."""
        if entry_points is None:
            entry_points = (("unet", model, "apply_model"), ("vae_encode", model.vae, "encode"),
                            ("vae_decode", model.vae, "decode"),
                            *((f"text{prefix}", encoder, "encode_pooled") for prefix, encoder in model.text_encoders))
        self.calls = {name: 0 for name, _, _ in entry_points}
        self.reset()
        for name, owner, attr in entry_points:
            setattr(owner, attr, self._wrap(name, getattr(owner, attr)))

    def reset(self) -> None:
        self.total = 0.0
        self.calls = dict.fromkeys(self.calls, 0)

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start
                self.calls[name] += 1

        return timed


def prepare_sd15(args: dict) -> dict:
    """Write the SD1.5-sized random checkpoint (LDM layout) and convert it to a diffusers folder."""
    from retouch import load_model
    from retouch.models.tiny import write_sd15_sized_checkpoint

    ckpt, folder = Path(args["ckpt"]), Path(args["folder"])
    if not ckpt.is_file():
        write_sd15_sized_checkpoint(ckpt)
    model = load_model(ckpt)
    model.unet.save_pretrained(folder / "unet")
    model.vae.save_pretrained(folder / "vae")
    model.text_encoder.transformer.save_pretrained(folder / "text_encoder")
    model.text_encoder.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1}))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionImg2ImgPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
        "requires_safety_checker": False}))
    return {"ckpt": str(ckpt), "folder": str(folder)}


def overhead(args: dict) -> dict:
    """process_images end to end vs the sum of its own network calls, same run."""
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(args.get("threads", 2))
    model = load_model(args["ckpt"], dtype=DTYPES[args.get("precision", "fp32")],
                       channels_last=args.get("channels_last", False))
    runs = []
    image = None
    # several jobs may share one process (and one model load): [[size, sampler], …]
    for size, sampler in args.get("jobs") or [[args["size"], args["sampler"]]] * args["runs"]:
        timer = NetworkTimer(model)
        p = StableDiffusionProcessingImg2Img(sd_model=model, batch_size=args.get("batch", 1),
                                             **job(size, sampler, args.get("inpaint", False)))
        start = time.perf_counter()
        processed = process_images(p)
        total = time.perf_counter() - start
        runs.append({"total": total, "network": timer.total, "calls": timer.calls, "size": size, "sampler": sampler})
        image = processed.images[0]
        # unwrap for the next run
        model = _unwrapped(model)
    if args.get("save_image"):
        image.save(args["save_image"])
    return {"runs": runs, "peak_rss_mb": peak_rss_mb()}


def _unwrapped(model):
    for owner, attr in ((model, "apply_model"), (model.vae, "encode"), (model.vae, "decode"),
                        *((encoder, "encode_pooled") for _, encoder in model.text_encoders)):
        if attr in vars(owner):
            delattr(owner, attr)
    return model


def diffusers_img2img(args: dict) -> dict:
    """diffusers' StableDiffusionImg2ImgPipeline (or InpaintPipeline) on the same weights (diffusers folder)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
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
    inpaint = args.get("inpaint", False)
    pipeline = StableDiffusionInpaintPipeline if inpaint else StableDiffusionImg2ImgPipeline
    pipe = pipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    size = args["size"]
    extra = {"mask_image": centre_mask(size), "height": size, "width": size} if inpaint else {}
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    timer = NetworkTimer(entry_points=(("unet", unet, "forward"), ("vae_encode", vae, "encode"),
                                       ("vae_decode", vae, "decode"), ("text", text, "forward")))
    runs = []
    for _ in range(args["runs"]):
        timer.reset()
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt="a watercolor painting of a forest", negative_prompt="blurry", image=source(size),
                 strength=args["strength"], num_inference_steps=args["steps"], guidance_scale=7.0,
                 generator=torch.Generator().manual_seed(1), **extra)
        runs.append({"total": time.perf_counter() - start, "network": timer.total, "unet_calls": timer.calls["unet"]})
    return {"runs": runs, "load": load, "peak_rss_mb": peak_rss_mb()}


def load_ours(args: dict) -> dict:
    import retouch.models.components  # noqa: F401 - diffusers/transformers imported before the baseline
    from retouch import load_model

    baseline, faults = current_rss_mb(), _minor_faults()  # the interpreter with torch, diffusers, transformers
    start = time.perf_counter()
    model = load_model(args["ckpt"])
    ready, faults = time.perf_counter() - start, _minor_faults() - faults
    with torch.inference_mode():
        model.get_learned_conditioning(["warm"])
    return {"load": ready, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline, "weights_mb": _weights_mb(model),
            "faults": faults}


def load_diffusers(args: dict) -> dict:
    from diffusers import StableDiffusionImg2ImgPipeline

    baseline = current_rss_mb()
    start = time.perf_counter()
    StableDiffusionImg2ImgPipeline.from_single_file(args["ckpt"], config=args["config"], local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)
    return {"load": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline}


def precision(args: dict) -> dict:
    """Speed and pixel deviation of bf16 / channels-last against fp32, same seed."""
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(args.get("threads", 2))
    results = {}
    reference = np.array(Image.open(args["reference"])).astype(int) if args.get("reference") else None
    variants = (("fp32", {}),) if reference is None else ()
    for name, kwargs in variants + (("bf16", {"dtype": torch.bfloat16}),
                         ("bf16 + channels_last", {"dtype": torch.bfloat16, "channels_last": True}),
                         ("bf16, bf16 VAE", {"dtype": torch.bfloat16, "vae_dtype": torch.bfloat16})):
        model = load_model(args["ckpt"], **kwargs)
        times = []
        for _ in range(args["runs"]):
            p = StableDiffusionProcessingImg2Img(sd_model=model, **job(args["size"], "Euler"))
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


def vae_decode(args: dict) -> dict:
    """One fp32 VAE decode of a fixed random latent, tiled or not; peak RSS above the loaded model."""
    import retouch.models.components  # noqa: F401 - imports before the baseline
    from retouch import load_model

    torch.set_num_threads(args.get("threads", 2))
    model = load_model(args["ckpt"])
    model.vae_tiling = args["mode"]
    z = torch.randn(1, 4, args["size"] // 8, args["size"] // 8, generator=torch.Generator().manual_seed(0)) * 0.8
    with torch.inference_mode():
        model.decode_first_stage(z[:, :, :8, :8])  # warm-up
        before = current_rss_mb()
        start = time.perf_counter()
        pixels = model.decode_first_stage(z)
        elapsed = time.perf_counter() - start
    image = torch.clamp((pixels + 1) * 127.5, 0, 255).floor().to(torch.uint8).numpy()
    np.save(args["save"], image)
    return {"time": elapsed, "peak_rss_mb": peak_rss_mb(), "before_mb": before, "extra_mb": peak_rss_mb() - before}


def large_img2img(args: dict) -> dict:
    """A 2048² img2img on the SD1.5-sized model: bf16 UNet, fp32 VAE tiled automatically (> 1 MP)."""
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(args.get("threads", 2))
    model = load_model(args["ckpt"], dtype=torch.bfloat16, channels_last=True)
    timer = NetworkTimer(model)
    unet_times = []
    apply_model = model.apply_model

    def timed_unet(*a, **k):
        start = time.perf_counter()
        try:
            return apply_model(*a, **k)
        finally:
            unet_times.append(time.perf_counter() - start)

    model.apply_model = timed_unet
    size = args["size"]
    p = StableDiffusionProcessingImg2Img(
        sd_model=model, prompt="a watercolor painting of a forest", negative_prompt="blurry",
        init_images=[source(size)], width=size, height=size, steps=args["steps"],
        denoising_strength=args["denoise"], sampler_name="Euler", seed=1)
    start = time.perf_counter()
    processed = process_images(p)
    total = time.perf_counter() - start
    if args.get("save_image"):
        processed.images[0].save(args["save_image"])
    return {"total": total, "network": timer.total, "calls": timer.calls, "unet_call_seconds": unet_times,
            "tiler": "retouch's evenly spread tiles, chosen automatically: an untiled pass would not fit",
            "size": list(processed.images[0].size), "comments": processed.comments,
            "peak_rss_mb": peak_rss_mb(), "weights_mb": _weights_mb(model)}


def batch_throughput(args: dict) -> dict:
    """Images per second for batch sizes × the two batch modes (A1111's batched calls, deterministic batches)."""
    from retouch import Img2ImgParams, Options, generate, load_model

    torch.set_num_threads(args.get("threads", 2))
    model = load_model(args["ckpt"], dtype=DTYPES[args.get("precision", "fp32")],
                       channels_last=args.get("channels_last", False))
    size = args["size"]

    def run(batch: int, exact: bool) -> float:
        params = Img2ImgParams(prompt="a watercolor painting of a forest", negative_prompt="blurry",
                               init_images=[source(size)], width=size, height=size, steps=args["steps"],
                               denoising_strength=0.75, sampler_name="Euler", seed=1, batch_size=batch)
        start = time.perf_counter()
        generate(params, model, options=Options(deterministic_batches=exact))
        return time.perf_counter() - start

    run(1, False)  # warm-up
    out: dict = {}
    for exact in (False, True):
        mode = "deterministic" if exact else "batched"
        for batch in args["batches"]:
            times = [run(batch, exact) for _ in range(args.get("runs", 1))]
            out.setdefault(mode, {})[str(batch)] = batch / statistics.median(times)
    return {"images_per_s": out, "peak_rss_mb": peak_rss_mb()}


def lora(args: dict) -> dict:
    """A rank-32 LoRA over every attention and conv layer of the SD1.5-sized model: what applying it costs the
    first time, what it costs a job once its patched weights are kept, and the memory they hold."""
    from retouch import Img2ImgParams, Options, generate, load_model
    from retouch.networks.synthetic import write_random_network
    from retouch.pipeline.networks import JobNetworks

    torch.set_num_threads(args.get("threads", 2))
    folder = Path(args["lora_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    model = load_model(args["ckpt"], dtype=DTYPES[args["precision"]], channels_last=True, lora_dir=folder)
    path = folder / "rank32.safetensors"
    if not path.is_file():
        write_random_network(path, model.extra_networks.layers, rank=32, scale=0.01)
        model.loras.refresh()
    size = args["size"]

    def run(prompt: str) -> float:
        params = Img2ImgParams(**{**job(size, "Euler"), "prompt": prompt})
        start = time.perf_counter()
        generate(params, model, options=Options())
        return time.perf_counter() - start

    plain = run("a watercolor painting of a forest")
    rss_plain = current_rss_mb()
    prompt = "a watercolor painting of a forest <lora:rank32:0.8>"
    start = time.perf_counter()
    found = model.loras.lookup("rank32")
    assert found is not None, "the bench LoRA rank32 was not written"
    network = model.extra_networks.load(found)
    read_s = time.perf_counter() - start
    first = run(prompt)
    stats = model.extra_networks.patcher.stats
    rss_lora = current_rss_mb()
    per_job = []
    for _ in range(args.get("repeats", 20)):  # what a job with the same LoRA adds once its weights are kept
        start = time.perf_counter()
        networks = JobNetworks(model.extra_networks, Options())
        networks.prepare([prompt])
        _, activation = networks.batch([prompt])
        with model.extra_networks.patcher.applied(activation.networks):
            pass
        per_job.append(time.perf_counter() - start)
    factors = sum(t.numel() * t.element_size() for m in network.modules.values() for t in m.w.values())
    return {"size": size, "precision": args["precision"], "layers": stats.layers, "file_mb": path.stat().st_size / 2**20,
            "plain_job_s": plain, "first_lora_job_s": first, "read_s": read_s, "patch_s": stats.seconds,
            "per_job_s": statistics.median(per_job), "patched_mb": stats.bytes / 2**20, "factors_mb": factors / 2**20,
            "rss_plain_mb": rss_plain, "rss_lora_mb": rss_lora, "peak_rss_mb": peak_rss_mb()}


def prepare_sdxl(args: dict) -> dict:
    """Write the SDXL-sized random checkpoint (original layout, no yaml) and the same weights as a diffusers folder."""
    from retouch import load_model
    from retouch.models import diffusers_folder
    from retouch.models.tiny import write_sdxl_sized_checkpoint

    ckpt, folder = Path(args["ckpt"]), Path(args["folder"])
    if not ckpt.is_file():
        write_sdxl_sized_checkpoint(ckpt)
    diffusers_folder.save(load_model(ckpt, dtype=torch.float16, vae_dtype=torch.float16), folder)
    return {"ckpt": str(ckpt), "folder": str(folder), "peak_rss_mb": peak_rss_mb()}


def sdxl_ours(args: dict) -> dict:
    """One SDXL img2img job through process_images: wall time, time inside the networks, UNet calls, peak RSS."""
    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingImg2Img, process_images

    torch.set_num_threads(args.get("threads", 2))
    start = time.perf_counter()
    model = load_model(args["ckpt"], dtype=DTYPES[args["precision"]], channels_last=args["precision"] == "bf16")
    load = time.perf_counter() - start
    timer = NetworkTimer(model)
    params = {**job(args["size"], "Euler"), "steps": args["steps"], "denoising_strength": args["strength"]}
    start = time.perf_counter()
    process_images(StableDiffusionProcessingImg2Img(sd_model=model, **params))
    return {"total": time.perf_counter() - start, "network": timer.total, "unet_calls": timer.calls["unet"],
            "load": load, "peak_rss_mb": peak_rss_mb(), "weights_mb": _weights_mb(model)}


def sdxl_diffusers(args: dict) -> dict:
    """diffusers' StableDiffusionXLImg2ImgPipeline on the same weights (diffusers folder), the same job."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

    torch.set_num_threads(args.get("threads", 2))
    dtype = DTYPES[args["precision"]]
    start = time.perf_counter()
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(args["folder"], torch_dtype=dtype, local_files_only=True)
    pipe.vae.to(torch.float32)  # as ours on CPU: the VAE in fp32 ...
    _decode_in_fp32(pipe.vae)  # ... for the decode too (the pipeline casts it to the prompt dtype after encoding)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    if args["precision"] == "bf16":  # as ours with channels_last=True
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - start
    timer = NetworkTimer(entry_points=(("unet", pipe.unet, "forward"), ("vae_encode", pipe.vae, "encode"),
                                       ("vae_decode", pipe.vae, "decode"), ("text", pipe.text_encoder, "forward"),
                                       ("text_2", pipe.text_encoder_2, "forward")))
    size = args["size"]
    start = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt="a watercolor painting of a forest", negative_prompt="blurry", image=source(size),
             strength=args["strength"], num_inference_steps=args["steps"], guidance_scale=7.0,
             generator=torch.Generator().manual_seed(1), height=size, width=size)
    return {"total": time.perf_counter() - start, "network": timer.total, "unet_calls": timer.calls["unet"],
            "load": load, "peak_rss_mb": peak_rss_mb()}


def _decode_in_fp32(vae) -> None:
    """Keep diffusers' VAE in fp32 through the decode: its SDXL img2img pipeline encodes in fp32 (``force_upcast``)
    and then casts the VAE to the prompt dtype, so a bf16 run would decode in bf16 while ours decodes in fp32."""
    decode = vae.decode

    def fp32_decode(latents, *args, **kwargs):
        vae.to(torch.float32)
        return decode(latents.to(torch.float32), *args, **kwargs)

    vae.decode = fp32_decode


def load_floor(args: dict) -> dict:
    """The least any loader does: every tensor of the file cast to fp32 into new memory, nothing else (no key
    renaming, no networks). Most of it is the kernel giving out and zeroing fresh pages."""
    from safetensors import safe_open

    start, faults = time.perf_counter(), _minor_faults()
    handle = safe_open(args["ckpt"], framework="pt", device="cpu")
    names = handle.keys()
    kept = [handle.get_tensor(name).to(torch.float32, copy=True) for name in names]
    return {"load": time.perf_counter() - start, "faults": _minor_faults() - faults,
            "mb": sum(t.numel() * t.element_size() for t in kept) / 2**20}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def load_diffusers_sdxl(args: dict) -> dict:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    baseline, faults = current_rss_mb(), _minor_faults()
    start = time.perf_counter()
    # torch_dtype: every network in fp32 as ours (without it diffusers leaves the OpenCLIP encoder in the file's fp16)
    StableDiffusionXLImg2ImgPipeline.from_single_file(args["ckpt"], config=args["config"], local_files_only=True,
                                                      torch_dtype=torch.float32)
    return {"load": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline,
            "faults": _minor_faults() - faults}


def _weights_mb(model) -> float:
    nets = (model.unet, model.vae, *(encoder.transformer for _, encoder in model.text_encoders))
    return sum(p.numel() * p.element_size() for net in nets for p in net.parameters()) / 2**20


if __name__ == "__main__":
    name, payload = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(globals()[name](payload)))
