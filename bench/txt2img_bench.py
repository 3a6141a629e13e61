"""txt2img, hires fix and refiner benchmarks (issue 25), on the SD1.5-sized random checkpoint.

* txt2img end to end vs its own network calls, and vs diffusers' ``StableDiffusionPipeline`` on the same weights and
  precision (512², bf16, channels-last UNet, fp32 VAE, Euler), each engine in its own process, interleaved;
* the peak RSS of a 512→1024 hires-fix job beside a plain 512² job;
* the refiner's switch: a job whose refiner must be loaded vs the same job with the refiner already loaded, and the
  memory of both models held at once (the server's model manager).

Workers run as ``python bench/txt2img_bench.py NAME JSON``; :func:`section` drives them from ``bench/run.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SIZE, STEPS, PROMPT, NEGATIVE = 512, 12, "a watercolor painting of a forest", "blurry"
HIRES_STEPS = 4


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process)
def ours_txt2img(args: dict) -> dict:
    import torch
    from workers import DTYPES, NetworkTimer, peak_rss_mb

    from retouch import load_model
    from retouch.processing import StableDiffusionProcessingTxt2Img, process_images

    torch.set_num_threads(2)
    model = load_model(args["ckpt"], dtype=DTYPES[args["precision"]], channels_last=True)
    timer = NetworkTimer(model)
    p = StableDiffusionProcessingTxt2Img(sd_model=model, prompt=PROMPT, negative_prompt=NEGATIVE, width=SIZE,
                                         height=SIZE, steps=STEPS, sampler_name="Euler", seed=1,
                                         do_not_save_samples=True, do_not_save_grid=True)
    start = time.perf_counter()
    process_images(p)
    total = time.perf_counter() - start
    return {"total": total, "network": timer.total, "calls": timer.calls, "peak_rss_mb": peak_rss_mb()}


def diffusers_txt2img(args: dict) -> dict:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    from workers import DTYPES, NetworkTimer, _decode_in_fp32, peak_rss_mb

    torch.set_num_threads(2)
    folder, dtype = Path(args["folder"]), DTYPES[args["precision"]]
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=dtype)
    unet = unet.to(memory_format=torch.channels_last)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)  # fp32, as ours
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    _decode_in_fp32(vae)
    timer = NetworkTimer(entry_points=(("unet", unet, "forward"), ("vae_decode", vae, "decode"),
                                       ("text", text, "forward")))
    start = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS,
             guidance_scale=7.0, generator=torch.Generator().manual_seed(1))
    return {"total": time.perf_counter() - start, "network": timer.total, "unet_calls": timer.calls["unet"],
            "peak_rss_mb": peak_rss_mb()}


def hires_rss(args: dict) -> dict:
    """One job in a fresh process: plain 512² or 512→1024 with the hires fix (Latent, 2 second-pass steps)."""
    import torch
    from workers import DTYPES, current_rss_mb, peak_rss_mb

    from retouch import load_model
    from retouch.params import Txt2ImgParams
    from retouch.pipeline import generate

    torch.set_num_threads(2)
    model = load_model(args["ckpt"], dtype=DTYPES["bf16"], channels_last=True)
    loaded = current_rss_mb()
    params = Txt2ImgParams(prompt=PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE, steps=HIRES_STEPS,
                           sampler_name="Euler", seed=1, enable_hr=args["hires"], hr_scale=2.0,
                           hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.5)
    start = time.perf_counter()
    result = generate(params, model)
    return {"total": time.perf_counter() - start, "size": list(result.images[0].size), "loaded_rss_mb": loaded,
            "peak_rss_mb": peak_rss_mb()}


def refiner_switch(args: dict) -> dict:
    """The server's model manager: a 256² refiner job whose refiner is not loaded, then the same job again."""
    import torch
    from workers import DTYPES, current_rss_mb, peak_rss_mb

    from retouch.control import JobControl
    from retouch.params import Txt2ImgParams
    from retouch.pipeline import generate
    from retouch.serving.models import ModelManager

    torch.set_num_threads(2)
    models = ModelManager(ckpt=args["ckpt"], ckpt_dir=args["ckpt_dir"],
                          load_kwargs={"dtype": DTYPES["bf16"], "channels_last": True})
    model = models.get()
    one_model = current_rss_mb()
    params = Txt2ImgParams(prompt=PROMPT, width=256, height=256, steps=6, sampler_name="Euler", seed=1,
                           refiner_checkpoint=Path(args["refiner"]).stem, refiner_switch_at=0.5)
    plain = Txt2ImgParams(prompt=PROMPT, width=256, height=256, steps=6, sampler_name="Euler", seed=1)
    times = {}
    for name, job in (("no refiner", plain), ("refiner, first job (loads it)", params),
                      ("refiner, loaded", params)):
        start = time.perf_counter()
        result = generate(job, model, control=JobControl(), resources=models.resources(model, models.default, None))
        times[name] = time.perf_counter() - start
        assert job is plain or "Refiner:" in result.infotexts[0]
    return {"times": times, "one_model_rss_mb": one_model, "both_models_rss_mb": current_rss_mb(),
            "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------------------------
# The section (in bench/run.py's process)
def section(ckpt: Path, folder: Path, results: dict, worker) -> None:
    """``worker(script, name, **args)`` runs one worker of this file in a fresh process."""
    ours = worker(__file__, "ours_txt2img", ckpt=str(ckpt), precision="bf16")
    theirs = worker(__file__, "diffusers_txt2img", folder=str(folder), precision="bf16")
    print(f"txt2img 512² bf16: ours {ours['total']:.1f} s (ratio {ours['total'] / ours['network']:.4f}), "
          f"diffusers {theirs['total']:.1f} s", flush=True)
    plain = worker(__file__, "hires_rss", ckpt=str(ckpt), hires=False)
    hires = worker(__file__, "hires_rss", ckpt=str(ckpt), hires=True)
    print(f"hires: plain peak {plain['peak_rss_mb']:.0f} MB, 512→1024 peak {hires['peak_rss_mb']:.0f} MB", flush=True)
    refiner = ckpt.parent / "sd15-random-refiner.safetensors"  # the same weights under a second name
    if not refiner.exists():
        refiner.symlink_to(ckpt.name)
    switch = worker(__file__, "refiner_switch", ckpt=str(ckpt), ckpt_dir=str(ckpt.parent), refiner=str(refiner))
    print("refiner:", switch["times"], flush=True)
    results["txt2img"] = {"size": SIZE, "steps": STEPS, "ours": ours, "diffusers": theirs, "hires_plain": plain,
                          "hires": hires, "refiner": switch}


# ---------------------------------------------------------------------------------------------
# Markdown (bench/report.py)
def goal_rows(r: dict) -> list[tuple]:
    t = r.get("txt2img")
    if not t:
        return []
    ours, theirs = t["ours"], t["diffusers"]
    ratio, wall = ours["total"] / ours["network"], ours["total"] / theirs["total"]
    return [("txt2img end to end / network calls ≤ 1.03 (512², bf16)", f"{ratio:.4f}", ratio <= 1.03,
             "--sections txt2img"),
            ("txt2img wall time ≤ diffusers' `StableDiffusionPipeline` (512², bf16)", f"{wall:.3f}×", wall <= 1,
             "--sections txt2img")]


def section_lines(r: dict) -> list[str]:
    t = r.get("txt2img")
    if not t:
        return []
    ours, theirs, plain, hires, refiner = t["ours"], t["diffusers"], t["hires_plain"], t["hires"], t["refiner"]
    times = refiner["times"]
    first, loaded = times["refiner, first job (loads it)"], times["refiner, loaded"]
    return [
        f"## txt2img, hires fix and refiner (SD1.5-sized, {t['size']}², bf16 channels-last UNet, fp32 VAE, Euler)",
        "",
        "| measure | retouch | diffusers `StableDiffusionPipeline` |", "| --- | --- | --- |",
        f"| {t['steps']} steps, CFG 7: wall time | {ours['total']:.1f} s | {theirs['total']:.1f} s |",
        f"| … of which in the networks | {ours['network']:.1f} s (ratio {ours['total'] / ours['network']:.4f}) | "
        f"{theirs['network']:.1f} s |",
        f"| UNet calls | {ours['calls']['unet']} | {theirs['unet_calls']} |",
        f"| peak RSS | {ours['peak_rss_mb']:.0f} MB | {theirs['peak_rss_mb']:.0f} MB |",
        "",
        "| hires fix (4 steps, then Latent ×2 and 2 second-pass steps at 0.5) | wall time | peak RSS | RSS after "
        "loading |", "| --- | --- | --- | --- |",
        f"| plain 512² | {plain['total']:.1f} s | {plain['peak_rss_mb']:.0f} MB | {plain['loaded_rss_mb']:.0f} MB |",
        f"| 512 → 1024 | {hires['total']:.1f} s | {hires['peak_rss_mb']:.0f} MB | {hires['loaded_rss_mb']:.0f} MB |",
        "",
        "Refiner (256², 6 steps, switch at 0.5, through the server's model manager; the refiner is a second "
        "SD1.5-sized checkpoint):", "",
        "| job | wall time |", "| --- | --- |",
        *(f"| {name} | {value:.1f} s |" for name, value in times.items()),
        "",
        f"Loading the refiner costs {first - loaded:.1f} s once; with it loaded, a refiner job takes "
        f"{loaded - times['no refiner']:+.1f} s against the plain job (the switch itself only re-encodes the prompts "
        "on the refiner; the difference is within this machine's run-to-run noise). "
        f"Memory with one model loaded: {refiner['one_model_rss_mb']:.0f} MB; with the refiner kept beside it: "
        f"{refiner['both_models_rss_mb']:.0f} MB (peak {refiner['peak_rss_mb']:.0f} MB).",
        "",
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    result = globals()[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result))
