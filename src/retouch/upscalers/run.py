"""Enlarging an image with an upscaler, as A1111 v1.10.1 (``Upscaler.upscale`` and ``upscaler_utils``).

:func:`upscale` aims at ``(w·scale)//8·8`` × ``(h·scale)//8·8``: it applies the upscaler's own step (a model
pass, or a Lanczos/nearest resize by ``scale``) up to three times until the image is at least that large,
then resizes to exactly that size with Lanczos. A model pass converts the image to a BGR float tensor in
[0, 1], runs the network tile by tile, and rounds back to 8 bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from retouch.imageops.tiles import combine_grid, split_grid
from retouch.options import Options
from retouch.upscalers.catalogue import Kind, UpscalerInfo, check_available
from retouch.upscalers.spandrel_models import ModelCache

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST
Check = Callable[[], None]


def _no_check() -> None:
    return None


def image_to_bgr(image: Image.Image) -> torch.Tensor:
    """RGB image → ``(3, H, W)`` BGR float32 in [0, 1] (computed in float64, as A1111's numpy division)."""
    array = np.ascontiguousarray(np.transpose(np.array(image.convert("RGB"))[:, :, ::-1], (2, 0, 1))) / 255
    return torch.from_numpy(array).to(torch.float32)


def bgr_to_image(tensor: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` or ``(3, H, W)`` BGR → RGB image: clamped to [0, 1], 255·x rounded to 8 bits."""
    if tensor.ndim == 4:
        tensor = tensor.squeeze(0)
    array = 255.0 * np.moveaxis(tensor.detach().float().cpu().clamp(0, 1).numpy(), 0, 2)
    array = array.round().astype(np.uint8)
    return Image.fromarray(array[:, :, ::-1], "RGB")


def _model_on_image(model: Any, image: Image.Image) -> Image.Image:
    param = next(model.model.parameters())
    with torch.inference_mode():
        pixels = image_to_bgr(image).unsqueeze(0).to(device=param.device, dtype=param.dtype)
        return bgr_to_image(model(pixels))


def upscale_in_tiles(model: Any, image: Image.Image, tile_size: int, overlap: int, check: Check) -> Image.Image:
    """A1111 ``upscale_with_model``: image-space tiles, blended with linear ramps over the overlap."""
    if tile_size <= 0:
        return _model_on_image(model, image)
    grid = split_grid(image, tile_size, tile_size, overlap)

    def one(tile: Image.Image) -> Image.Image:
        check()
        return _model_on_image(model, tile)

    return combine_grid(grid.map(one))


def upscale_in_tensor_tiles(model: Any, image: Image.Image, tile_size: int, overlap: int, scale: int,
                            check: Check) -> Image.Image:
    """A1111 ``upscale_2`` / ``tiled_upscale_2``: tensor tiles, overlapping outputs averaged."""
    param = next(model.model.parameters())
    pixels = image_to_bgr(image).to(dtype=param.dtype).unsqueeze(0)
    with torch.inference_mode():
        _, channels, h, w = pixels.shape
        tile_size = min(tile_size, h, w)
        if tile_size <= 0:
            return bgr_to_image(model(pixels.to(param.device)))
        stride = tile_size - overlap
        rows = [*range(0, h - tile_size, stride), h - tile_size]
        cols = [*range(0, w - tile_size, stride), w - tile_size]
        result = torch.zeros(1, channels, h * scale, w * scale, device=param.device, dtype=pixels.dtype)
        weights = torch.zeros_like(result)
        for y in rows:
            for x in cols:
                check()
                out = model(pixels[..., y:y + tile_size, x:x + tile_size].to(param.device))
                window = (..., slice(y * scale, (y + tile_size) * scale), slice(x * scale, (x + tile_size) * scale))
                result[window].add_(out)
                weights[window].add_(torch.ones_like(out))
        return bgr_to_image(result.div_(weights))


class Upscalers:
    """The upscalers of a server or a library session: the list (A1111 order) and a cache of loaded models."""

    def __init__(self, upscalers: list[UpscalerInfo], cache: ModelCache | None = None):
        self.list = upscalers
        self._cache = cache or ModelCache()

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.list]

    def find(self, name: str, field: str = "upscaler") -> UpscalerInfo:
        from retouch.upscalers.catalogue import find_upscaler

        return find_upscaler(self.list, name, field)

    def upscale(self, image: Image.Image, scale: float, upscaler: UpscalerInfo, options: Options | None = None,
                check: Check = _no_check) -> Image.Image:
        """A1111 ``Upscaler.upscale``: ``image`` enlarged ``scale`` times, to a multiple of 8 (see module doc)."""
        check_available(upscaler)
        options = options or Options()
        dest_w, dest_h = int((image.width * scale) // 8 * 8), int((image.height * scale) // 8 * 8)
        for i in range(3):
            if image.width >= dest_w and image.height >= dest_h and (i > 0 or scale != 1):
                break
            check()
            shape = image.size
            image = self._step(image, scale, upscaler, options, check)
            if shape == image.size:
                break
        if image.size != (dest_w, dest_h):
            image = image.resize((dest_w, dest_h), resample=LANCZOS)
        return image

    def _step(self, image: Image.Image, scale: float, upscaler: UpscalerInfo, options: Options,
              check: Check) -> Image.Image:
        kind = upscaler.kind
        if kind is Kind.NONE:
            return image
        if kind in (Kind.LANCZOS, Kind.NEAREST):
            size = (int(image.width * scale), int(image.height * scale))
            return image.resize(size, resample=LANCZOS if kind is Kind.LANCZOS else NEAREST)
        assert upscaler.path is not None
        model = self._cache.get(upscaler.path)
        if kind in (Kind.ESRGAN, Kind.REALESRGAN):
            return upscale_in_tiles(model, image, options.ESRGAN_tile, options.ESRGAN_tile_overlap, check)
        if kind is Kind.DAT:
            return upscale_in_tiles(model, image, options.DAT_tile, options.DAT_tile_overlap, check)
        if kind is Kind.SWINIR:
            return upscale_in_tensor_tiles(model, image, options.SWIN_tile, options.SWIN_tile_overlap, model.scale,
                                           check)
        return upscale_in_tensor_tiles(model, image, options.SCUNET_tile, options.SCUNET_tile_overlap, 1, check)
