"""Tiled VAE layout and blending (retouch.models.tiling)."""

import pytest
import torch

from retouch.models.tiling import OVERLAP, tile_layout, tiled_pass


@pytest.mark.parametrize("length", [1, 40, 96, 97, 128, 160, 200, 256, 511])
@pytest.mark.parametrize("max_tile", [32, 64, 96])
def test_layout_covers_evenly_with_overlap_and_no_waste(length, max_tile):
    tile, starts = tile_layout(length, max_tile)
    assert tile <= max(max_tile, length if length <= max_tile else 0) or len(starts) == 1
    assert starts[0] == 0 and starts[-1] + tile == length  # covers both ends, nothing past them
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(tile - gap >= OVERLAP for gap in gaps)  # neighbours overlap enough to blend
    assert max(gaps, default=0) - min(gaps, default=0) <= 1  # evenly spread
    if len(starts) > 1:  # one tile fewer could not cover the length
        assert (len(starts) - 1) * (max_tile - OVERLAP) + OVERLAP < length


def test_layout_at_1024_and_2048_pixels():
    assert tile_layout(128, 96) == (72, [0, 56])  # 1024²: 1.27× the area (diffusers' tiler: 1.56×)
    assert tile_layout(256, 96) == (96, [0, 80, 160])


def test_tiled_pass_of_a_local_function_equals_the_whole_pass():
    x = torch.randn(1, 4, 70, 90, generator=torch.Generator().manual_seed(0))

    def decode_like(z):  # pointwise, then 8× nearest upsampling: every output pixel depends on one input pixel
        return torch.nn.functional.interpolate(torch.tanh(z[:, :3] * 2), scale_factor=8, mode="nearest")

    whole = decode_like(x)
    tiled = tiled_pass(decode_like, x, scale_in=1, scale_out=8, max_tile=32)
    assert tiled.shape == whole.shape and tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)

    pixels = torch.randn(1, 3, 70 * 8, 90 * 8, generator=torch.Generator().manual_seed(1))

    def encode_like(image):
        return torch.nn.functional.avg_pool2d(image, 8)

    torch.testing.assert_close(tiled_pass(encode_like, pixels, scale_in=8, scale_out=1, max_tile=40),
                               encode_like(pixels), rtol=0, atol=1e-6)


def test_tiles_are_blended_not_cut():
    x = torch.zeros(1, 1, 64, 64)
    calls = []

    def constant_per_tile(z):  # each tile returns its own constant: the blend must ramp between them
        calls.append(z.shape)
        return torch.full((1, 1, z.shape[-2], z.shape[-1]), float(len(calls)))

    out = tiled_pass(constant_per_tile, x, scale_in=1, scale_out=1, max_tile=40)
    assert len(calls) == 4
    row = out[0, 0, 0]
    steps = row[1:] - row[:-1]
    assert (steps >= -1e-6).all() and steps.max() < 0.1  # monotone, gradual: no seam
