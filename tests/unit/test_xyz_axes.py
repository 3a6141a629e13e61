"""The X/Y/Z plot's axes: A1111's list and indices, value parsing (ranges, CSV), how values change a job, the
order the cells run in, and the prompt matrix's prompts."""

import pytest
from PIL import Image

from retouch.params import Img2ImgParams
from retouch.scripts import find_script
from retouch.scripts.prompt_matrix import matrix_prompts
from retouch.scripts.xyz_axes import AXES, Cell, axis_values, csv_text, csv_values
from retouch.scripts.xyz_plot import PlotAxis, _cells, find_axis


def _axis(label):
    return find_axis(label, "test")


def _values(label, text, **kw):
    return axis_values(_axis(label), text, kw.pop("dropdown", []), csv_mode=kw.pop("csv_mode", True),
                       raw_mode=False, where="x_values")


def test_axis_indices_are_a1111s_img2img_list():
    labels = [a.label for a in AXES]
    assert labels[:11] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "CFG Scale", "Image CFG Scale",
                           "Prompt S/R", "Prompt order", "Sampler", "Checkpoint name"]
    assert labels.index("Denoising") == 25 and labels.index("VAE") == 29 and labels[-1] == "Size"
    assert "Hires steps" not in labels and "Hires upscaler" not in labels  # txt2img's own
    assert find_axis(4, "w").label == "Steps" and find_axis("cfg scale", "w").label == "CFG Scale"
    with pytest.raises(ValueError, match="w must be an index below 42"):
        find_axis(42, "w")
    with pytest.raises(ValueError, match="no axis 'Hires steps'"):
        find_axis("Hires steps", "w")


@pytest.mark.parametrize("label, text, expected", [
    ("Steps", "4,8", [4, 8]),
    ("Steps", "1-5", [1, 2, 3, 4, 5]),
    ("Steps", "1-10 (+3)", [1, 4, 7, 10]),
    ("Steps", "10-1 (-4)", [10, 6]),  # A1111's range(start, end + 1, step): 2 is past 10-1's end + 1
    ("Steps", "1-10 [4]", [1, 4, 7, 10]),
    ("Steps", "5, 1-3", [5, 1, 2, 3]),
    ("Seed", "-1, 5", [-1, 5]),
    ("CFG Scale", "0.5-1 (+0.25)", [0.5, 0.75, 1.0]),
    ("CFG Scale", "1-2 [3]", [1.0, 1.5, 2.0]),
    ("CFG Scale", "3, 7.5", [3.0, 7.5]),
    ("Prompt S/R", '"red, blue", green', ["red, blue", "green"]),
    ("Nothing", "anything", [0]),
])
def test_values_and_ranges(label, text, expected):
    assert _values(label, text) == expected


def test_bad_values_name_the_axis():
    with pytest.raises(ValueError, match="x_values: Steps takes int values"):
        _values("Steps", "4,x")
    with pytest.raises(ValueError, match="at most 1000 values"):
        _values("Steps", "1-100000")
    with pytest.raises(ValueError, match="bad range"):
        _values("Steps", "1-5 (+0)")


def test_dropdown_axes_take_the_list_unless_csv_mode():
    assert _values("Sampler", "", dropdown=["Euler", "DDIM"], csv_mode=False) == ["Euler", "DDIM"]
    assert _values("Sampler", "Euler, DDIM") == ["Euler", "DDIM"]
    assert csv_text(["a, b", "c"]) == '"a, b",c' and csv_values(csv_text(["a, b", "c"])) == ["a, b", "c"]


def test_prompt_order_permutes_tokens_in_place():
    perms = _values("Prompt order", "cat, dog, bird")
    assert len(perms) == 6 and perms[0] == ("cat", "dog", "bird")
    cell = Cell(Img2ImgParams(prompt="a cat and a dog near a bird"))
    _axis("Prompt order").apply(cell, ("bird", "cat", "dog"), perms)
    assert cell.params.prompt == "a bird and a cat near a dog"


def test_prompt_search_and_replace():
    cell = Cell(Img2ImgParams(prompt="a red cat", negative_prompt="red eyes"))
    _axis("Prompt S/R").apply(cell, "blue", ["red", "blue"])
    assert (cell.params.prompt, cell.params.negative_prompt) == ("a blue cat", "blue eyes")
    with pytest.raises(ValueError, match="did not find 'green'"):
        _axis("Prompt S/R").apply(Cell(Img2ImgParams(prompt="a cat")), "x", ["green", "x"])


def test_axes_set_fields_options_checkpoints():
    cell = Cell(Img2ImgParams(steps=10))
    for label, value in [("Steps", 20), ("Clip skip", 2), ("UniPC Order", 40), ("Checkpoint name", "b"),
                         ("VAE", "auto"), ("Styles", "s1,s2"), ("Size", "96x128"),
                         ("Always discard next-to-last sigma", "True")]:
        _axis(label).apply(cell, value, [value])
    p = cell.params
    assert (p.steps, p.width, p.height, p.styles) == (20, 96, 128, ["s1", "s2"])
    assert cell.overrides == {"CLIP_stop_at_last_layers": 2, "uni_pc_order": 19,
                              "always_discard_next_to_last_sigma": True}
    assert (cell.checkpoint, cell.vae) == ("b", "Automatic")
    with pytest.raises(ValueError, match="Face restore axis is not supported"):
        _axis("Face restore").apply(cell, "CodeFormer", [])
    _axis("Face restore").apply(cell, "false", [])  # off: nothing to do


def test_token_merging_axis_wins_over_img2imgs_option_as_in_a1111():
    from retouch import Options
    from retouch.params import Txt2ImgParams

    options = Options().with_settings({"token_merging_ratio_img2img": 0.2})
    for params, first in ((Img2ImgParams(init_images=[Image.new("RGB", (64, 64))]), 0.5), (Txt2ImgParams(), 0.5)):
        cell = Cell(params)
        _axis("Token merging ratio").apply(cell, 0.5, [0.5])
        assert cell.overrides == {"token_merging_ratio": 0.5}
        resolved = cell.params.validate(options.with_overrides(cell.overrides)).resolved
        assert resolved.token_merging_ratio == first
    cell = Cell(Txt2ImgParams(enable_hr=True))
    _axis("Token merging ratio high-res").apply(cell, 0.7, [0.7])
    assert cell.params.validate(options.with_overrides(cell.overrides)).resolved.token_merging_ratio_hr == 0.7


def test_costly_axes_run_outermost():
    def plot(label, n):
        return PlotAxis("X", _axis(label), list(range(n)), "")
    # default: Z outermost, then Y, X innermost
    assert list(_cells([plot("Steps", 2), plot("Seed", 2), plot("Nothing", 1)]))[:3] == [(0, 0, 0), (1, 0, 0),
                                                                                        (0, 1, 0)]
    # a checkpoint axis on X runs outermost: each checkpoint is loaded once
    order = list(_cells([plot("Checkpoint name", 2), plot("Seed", 2), plot("Nothing", 1)]))
    assert order == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]


def test_xyz_arguments_follow_a1111s_ui_order():
    script = find_script("x/y/z PLOT")
    args = script.parse([4, "4,8", [], 5, "3,7", [], 0, "", [], True, False, False, False, False, False, False, 0,
                         True])
    assert (args["x_type"], args["y_values"], args["margin_size"], args["csv_mode"]) == (4, "3,7", 0, True)
    with pytest.raises(ValueError, match=r"script_args\[16\] \(X/Y/Z plot: margin_size\) must be between"):
        script.parse([4, "4", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 900])


def test_prompt_matrix_prompts():
    parts = ["a cat", "red", "sitting"]
    assert matrix_prompts(parts, at_start=False, delimiter="comma") == [
        "a cat", "a cat, red", "a cat, sitting", "a cat, red, sitting"]
    assert matrix_prompts(parts, at_start=True, delimiter="space")[3] == "red sitting a cat"
