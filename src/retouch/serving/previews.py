"""Live previews: A1111's "Approx cheap" latent → RGB projection, taken every n sampling steps."""

from __future__ import annotations

import base64

import numpy as np
import torch
from PIL import Image

from retouch.options import Options
from retouch.outputs import encode_image

# Latent → RGB approximation (SD1/SD2 latents)
_PREVIEW_COEFFS = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264],
                                [-0.184, -0.271, -0.473]])


def wants_preview(options: Options, step: int) -> bool:
    every = options.show_progress_every_n_steps
    return options.live_previews_enable and every > 0 and step % every == 0


def preview_png_b64(latent: torch.Tensor) -> str:
    """The first latent of ``latent`` ``(B, 4, h, w)`` as a small RGB PNG, base64 (no data-URI prefix)."""
    rgb = torch.einsum("...lxy,lr -> ...rxy", latent.float(), _PREVIEW_COEFFS)
    rgb = torch.clamp((rgb + 1.0) / 2.0, 0.0, 1.0)[0]
    array = (255.0 * rgb.permute(1, 2, 0).numpy()).astype(np.uint8)
    return base64.b64encode(encode_image(Image.fromarray(array))).decode("ascii")
