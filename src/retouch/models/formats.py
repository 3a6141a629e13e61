"""What a model family's latents look like: :class:`LatentFormat` (:attr:`retouch.models.Model.latent_format`).
Previews and any code that has to read a latent ask the model for it, never which family it is."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A1111's "Approx cheap" live preview: each latent channel's contribution to R, G and B
# (``sd_vae_approx.cheap_approximation``; SDXL's own factors since A1111 1.6)
SD_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_RGB = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088))


@dataclass(frozen=True)
class LatentFormat:
    """``channels`` latent channels, scaled by ``scale_factor`` from the VAE's; ``rgb_factors``: one (R, G, B)
    row per channel for the cheap preview."""

    channels: int
    scale_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...] = SD_RGB

    def preview_rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, C, h, w)`` → an approximate picture ``(B, 3, h, w)`` in about [-1, 1]."""
        return torch.einsum("...lxy,lr -> ...rxy", latents.float(), torch.tensor(self.rgb_factors))
