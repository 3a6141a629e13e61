"""A loaded Stable Diffusion model: its networks plus what A1111 reports and uses about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from retouch.models.text_encoder import TextEncoder
from retouch.models.tiling import OVERLAP, TILE_SIZES, tiled_pass

if TYPE_CHECKING:
    from retouch.options import Options


@dataclass(frozen=True)
class VaeInfo:
    """An external VAE (A1111 ``sd_vae``): its file name and short hash for the infotext."""

    name: str
    short_hash: str | None
    path: Path


@dataclass(eq=False)
class Model:
    """A loaded model. Build it with :func:`retouch.load_model`.

    Attributes:
        name: the checkpoint's file stem (diffusers folder: its name) — infotext ``Model``.
        short_hash: first 10 hex digits of the file's sha256 — infotext ``Model hash``.
        family: ``"SD1"`` or ``"SD2"``.
        parameterization: ``"eps"`` or ``"v"``.
        alphas_cumprod: ``(1000,)`` float32 ᾱ of the training schedule (checkpoint buffer if stored).
        scale_factor: latent scale (0.18215 for SD1/SD2).
        is_inpainting / is_pix2pix: 9-channel inpainting UNet / 8-channel instruct-pix2pix UNet.
    """

    name: str
    path: Path
    short_hash: str | None
    sha256: str | None
    family: str
    parameterization: str
    alphas_cumprod: torch.Tensor
    scale_factor: float
    is_inpainting: bool
    is_pix2pix: bool
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: TextEncoder
    config_source: str
    vae_info: VaeInfo | None = None
    dtype: torch.dtype = torch.float32
    vae_tiling: str = "auto"  # "auto" (when an untiled pass would not fit, or ran out of memory), "always", "never"
    vae_memory_budget: int | None = None  # bytes a VAE pass may use; None: 3/4 of what is free at the time
    vae_tile_size: int | None = None  # image pixels per tile side; None: the largest that fits the budget
    notes: list[str] = field(default_factory=list)  # things a job should report (e.g. the VAE fell back to fp32)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def title(self) -> str:
        """A1111's checkpoint title, e.g. ``tiny-sd1.safetensors [0f6bfda938]``."""
        file_name = self.path.name
        return f"{file_name} [{self.short_hash}]" if self.short_hash else file_name

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def set_tiling(self, enabled: bool) -> None:
        """Seamless tiling: circular padding in every UNet and VAE convolution (A1111 ``apply_circular``)."""
        mode = "circular" if enabled else "zeros"
        for net in (self.unet, self.vae):
            for layer in net.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.padding_mode = mode

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                    concat: torch.Tensor | None = None) -> torch.Tensor:
        """One UNet evaluation: ``x`` latents ``(B, 4, h, w)``, timesteps ``t`` ``(B,)`` (may be
        fractional), cross-attention ``context`` ``(B, T, C)``; ``concat`` is the image conditioning
        (inpainting: mask + masked-image latent, pix2pix: image latent), ignored by plain models."""
        if concat is not None and (self.is_inpainting or self.is_pix2pix):
            x = torch.cat([x, concat.to(x)], dim=1)
        dtype = dtype_of(self.unet)
        out = self.unet(x.to(dtype), t.to(torch.float32), encoder_hidden_states=context.to(dtype)).sample
        return out.to(torch.float32)

    def encode_first_stage(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``(B, 3, H, W)`` in [-1, 1] → scaled latents ``(B, 4, H/8, W/8)``.

        Each image is encoded on its own (as A1111) and the posterior *mean* is used: A1111 draws a
        posterior sample from the global RNG, which makes it irreproducible; the mean is its centre.
        """
        pixels_per_image = pixels.shape[-1] * pixels.shape[-2]
        latents = [self._vae_call(lambda x: self.vae.encode(x).latent_dist.mean, img[None], pixels_per_image,
                                  decode=False) for img in pixels]
        return torch.cat(latents).to(torch.float32) * self.scale_factor

    def decode_first_stage(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, 4, h, w)`` → pixels ``(B, 3, 8h, 8w)`` in about [-1, 1] (one at a time).

        A decode in bf16/fp16 that produces NaN/inf is redone after converting the VAE to float32, and
        a note says so (A1111's "Automatically revert VAE to 32-bit floats")."""
        pixels_per_image = latents.shape[-1] * latents.shape[-2] * 64
        images = []
        for z in latents:
            image = self._vae_call(lambda x: self.vae.decode(x).sample, z[None] / self.scale_factor, pixels_per_image,
                                   decode=True)
            if not torch.isfinite(image).all() and dtype_of(self.vae) != torch.float32:
                self.vae.to(torch.float32)
                self.notes.append("A tensor with NaNs was produced in VAE; the VAE was converted to 32-bit float "
                                  "and the decode redone.")
                image = self._vae_call(lambda x: self.vae.decode(x).sample, z[None] / self.scale_factor,
                                       pixels_per_image, decode=True)
            images.append(image)
        return torch.cat(images).to(torch.float32)

    def _vae_call(self, fn, x: torch.Tensor, pixels: int, decode: bool) -> torch.Tensor:
        """Run a VAE encode/decode, tiled when configured, when it would not fit, or after running out of memory."""
        vae_dtype = dtype_of(self.vae)
        x = x.to(self.device, vae_dtype)
        tiled = self.vae_tiling == "always"
        budget = self._vae_budget()
        if self.vae_tiling == "auto":
            need = vae_pass_bytes(self.vae.config.block_out_channels, vae_dtype, pixels, decode)
            tiled = need > budget
            if tiled:
                self.notes.append(f"Tiled VAE {'decode' if decode else 'encode'}: an untiled pass needs about "
                                  f"{need / 2**30:.1f} GiB, more than the {budget / 2**30:.1f} GiB it may use.")
        try:
            return self._run_vae(fn, x, decode, tiled, budget)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if tiled or self.vae_tiling == "never" or "memory" not in str(e).lower():
                raise
            self.notes.append("The VAE ran out of memory; tiled VAE was used.")
            return self._run_vae(fn, x, decode, True, budget)

    def _vae_budget(self) -> int:
        return self.vae_memory_budget if self.vae_memory_budget is not None else free_memory(self.device) * 3 // 4

    def _run_vae(self, fn, x: torch.Tensor, decode: bool, tiled: bool, budget: int) -> torch.Tensor:
        scale_in, scale_out = (1, 8) if decode else (8, 1)
        if not tiled or x.shape[-1] % scale_in or x.shape[-2] % scale_in:
            return fn(x)
        if self.vae_tile_size is not None:
            tile = max(self.vae_tile_size // 8, 2 * OVERLAP + 1)
        else:  # the largest tile whose pass fits the budget
            channels, dtype = self.vae.config.block_out_channels, x.dtype
            tile = next((t for t in TILE_SIZES if vae_pass_bytes(channels, dtype, t * t * 64, decode) <= budget),
                        TILE_SIZES[-1])
        return tiled_pass(fn, x, scale_in=scale_in, scale_out=scale_out, max_tile=tile)

    @torch.inference_mode()
    def get_learned_conditioning(self, prompts: list[str], options: Options | None = None) -> torch.Tensor:
        """Cross-attention conditioning ``(B, 77·K, C)`` for a batch of texts, as A1111 computes it.

        The texts are encoded together: emphasis normalisation uses the mean over the whole batch
        (prompt spec §8.1, §8.5). Prompt-editing syntax is *not* interpreted here — see
        :func:`retouch.conditioning.get_learned_conditioning` for schedules.
        """
        from retouch.conditioning import encode_texts
        from retouch.options import Options

        return encode_texts(self.text_encoder, prompts, options or Options())


# Peak memory of one untiled VAE pass (activations, beyond the weights), in elements per image pixel per
# channel of the widest full-resolution layer: for a decode the output of the last upsampler
# (``block_out_channels[1]``, 256 for SD), for an encode the first block (``block_out_channels[0]``).
# Measured on the SD1.5 VAE in fp32, CPU, 512²–1024² (``bench/workers.py vae_decode``; the RSS a pass adds):
# decode 3.8–4.0 (about 4 GB at 1024²), encode 5.0; the constants carry a 1.5× margin. The mid-block's
# attention runs as fused SDPA and adds nothing quadratic.
DECODE_ACTIVATIONS = 6.0
ENCODE_ACTIVATIONS = 7.5


def vae_pass_bytes(block_out_channels, dtype: torch.dtype, pixels: int, decode: bool) -> int:
    """Estimated peak memory, in bytes, of decoding into / encoding from an image of ``pixels`` pixels untiled."""
    channels = list(block_out_channels)
    width = channels[1] if decode and len(channels) > 1 else channels[0]
    factor = DECODE_ACTIVATIONS if decode else ENCODE_ACTIVATIONS
    return int(pixels * width * factor * dtype.itemsize)


def free_memory(device: torch.device) -> int:
    """Bytes available to a new allocation: free GPU memory, or the system's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def dtype_of(module: torch.nn.Module) -> torch.dtype:
    """A network's parameter dtype. (diffusers' ``ModelMixin.dtype`` walks every submodule: ~4 ms for
    the SD1.5 UNet, paid per UNet call it would be 60 ms of a 20-step job.)"""
    return next(module.parameters()).dtype
