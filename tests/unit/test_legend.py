"""A1111's grid legends (``draw_grid_annotations``, ``draw_prompt_matrix``) and image grids."""

import numpy as np
import pytest
from PIL import Image

from retouch.imageops.grid import image_grid
from retouch.imageops.legend import GridAnnotation as G
from retouch.imageops.legend import draw_grid_annotations, draw_prompt_matrix
from tests.conftest import ORACLE, need_shared
from tests.pipeline.helpers import pixels

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_legend_matches_pillow_9_5_at_readable_sizes():
    """legend_256_pillow95.png: A1111's drawing steps run under Pillow 9.5.0 (A1111 v1.10.1's, FreeType 2.13) with
    the shipped Roboto, 256² cells, a wrapped label, an inactive (struck) label and margins. Pillow 12.3 draws it
    identically: from a font size of about 20 px (cells of 256 px and more) the glyphs do not move."""
    cells = Image.new("RGB", (512, 512), (90, 120, 60))
    ours = draw_grid_annotations(cells, 256, 256, [[G("Steps: 20")], [G("Sampler: DPM++ 2M, a label long enough to wrap")]],
                                 [[G("sitting"), G("on a blue mat", False)], [G("CFG Scale: 7.5")]], margin=6)
    reference = Image.open(DATA / "legend_256_pillow95.png")
    assert ours.size == reference.size == (512 + 192 + 6, 512 + reference.height - 512)
    assert np.array_equal(pixels(ours), pixels(reference))


def test_legend_layout_on_a1111s_xyz_grid():
    """Case 212's grid (64² cells, font size 5): the same size as A1111's, every cell exact; at that size FreeType
    2.14 places a few glyph pixels differently (24 of 24,112 here)."""
    need_shared()
    reference = Image.open(ORACLE / "cases" / "212_out0.png").convert("RGB")
    cells = reference.crop((48, 9, 176, 137))
    ours = draw_grid_annotations(cells, 64, 64, [[G("Steps: 4")], [G("Steps: 8")]],
                                 [[G("CFG Scale: 3.0")], [G("CFG Scale: 7.0")]])
    assert ours.size == reference.size
    diff = np.abs(pixels(ours) - pixels(reference)).max(axis=-1)
    assert diff[9:, 48:].max() == 0
    assert (diff > 2).sum() <= 40
    text = pixels(ours)[:9, 48:].min(axis=-1)
    assert text.min() < 100 and (text < 250).sum() > 20  # dark label pixels above both columns


def test_prompt_matrix_legend_strikes_out_left_out_parts():
    grid = Image.new("RGB", (512, 512), (200, 30, 30))
    out = draw_prompt_matrix(grid, 256, 256, ["a cat", "red", "sitting"])
    assert out.size[0] == 512 + 192  # row labels: ¾ of a cell
    top = pixels(out)[: out.height - 512, 192:]
    left_half, right_half = top[:, :256], top[:, 256:]
    grey = (np.abs(top - 153).max(axis=-1) <= 1)
    assert grey[:, :256].sum() > 50 and grey[:, 256:].sum() < 5  # "red" is left out of the first column only
    # (the struck-through grey bar; an anti-aliased black glyph edge may pass through grey once or twice)
    assert left_half.min() > 100 and right_half.min() < 60  # the active label is black
    rows = pixels(out)[out.height - 512:, :192]
    assert (np.abs(rows[:256] - 153).max(axis=-1) <= 1).sum() > 50  # "sitting" left out of the first row


def test_labels_must_match_the_grid():
    with pytest.raises(ValueError, match="2 column and 1 row labels for a grid of 2 columns and 2 rows"):
        draw_grid_annotations(Image.new("RGB", (128, 128)), 64, 64, [[G("a")], [G("b")]], [[G("c")]])


def test_no_labels_add_no_margins():
    grid = Image.new("RGB", (128, 64), (1, 2, 3))
    out = draw_grid_annotations(grid, 64, 64, [[G("")], [G("")]], [[G()]])
    assert np.array_equal(pixels(out), pixels(grid))


def test_image_grid_with_cells_of_different_sizes_centres_them():
    small, large = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    grid = image_grid([large, small], 1, n_rows=1, background="#00ff00")
    assert grid.size == (128, 64)
    assert grid.getpixel((64 + 16, 16)) == (255, 0, 0) and grid.getpixel((64 + 2, 2)) == (0, 255, 0)
