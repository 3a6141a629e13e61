"""Live previews: A1111's "Approx cheap" latent → RGB projection, taken every n sampling steps."""

from __future__ import annotations

import base64

import numpy as np
import torch
from PIL import Image

from retouch.models.formats import LatentFormat
from retouch.options import Options
from retouch.outputs import encode_image

SD_LATENTS = LatentFormat(4, 0.18215)  # what a preview assumes when the job did not say


def wants_preview(options: Options, step: int) -> bool:
    every = options.show_progress_every_n_steps
    return options.live_previews_enable and every > 0 and step % every == 0


def preview_png_b64(latent: torch.Tensor, latent_format: LatentFormat | None = None) -> str:
    """The first latent of ``latent`` ``(B, C, h, w)`` as a small RGB PNG, base64 (no data-URI prefix), with the
    colours of ``latent_format`` (the job's model's)."""
    rgb = (latent_format or SD_LATENTS).preview_rgb(latent)
    rgb = torch.clamp((rgb + 1.0) / 2.0, 0.0, 1.0)[0]
    array = (255.0 * rgb.permute(1, 2, 0).numpy()).astype(np.uint8)
    return base64.b64encode(encode_image(Image.fromarray(array))).decode("ascii")
