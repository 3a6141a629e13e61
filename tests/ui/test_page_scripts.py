"""The img2img tab's Script dropdown in Chromium (issue 26): a script's controls show when it is chosen, and a page
job with a script gives the API's pixels for the same script_name and script_args."""

from __future__ import annotations

import numpy as np

from tests.ui.conftest import SHOTS, b64, gallery_images, pixels, source_png
from tests.ui.test_page import api_image, api_request, choose, common, generate, set_value, upload


def test_sd_upscale_from_the_page_gives_the_api_pixels(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png")
    upload(page, "img2img_image", src)
    common(page)
    assert not page.locator("#script_sd_upscale_overlap").is_visible()
    choose(page, "script_list", "SD upscale")
    page.locator("#script_sd_upscale_overlap").wait_for(state="visible")
    assert not page.locator("#script_loopback_loops").is_visible()  # only the chosen script's controls
    set_value(page, "script_sd_upscale_overlap", 16)
    set_value(page, "script_sd_upscale_scale_factor", 1.5)
    page.locator("#script_sd_upscale_upscaler_index label", has_text="Lanczos").click()
    info = generate(page)
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in info
    (shown,) = gallery_images(page, ui_server)
    theirs = api_image(ui_server, api_request(init_images=[b64(src)], script_name="SD upscale",
                                              script_args=[None, 16, 1, 1.5]))
    assert shown.size == (96, 96)
    assert np.array_equal(pixels(shown), pixels(theirs))
    page.screenshot(path=str(SHOTS / "script_sd_upscale.png"))


def test_xyz_plot_from_the_page_gives_the_api_grid(page, ui_server, tmp_path):
    """X/Y/Z plot's controls as A1111's: a type per axis; an axis with fixed choices (Sampler) shows a multi-select
    with a fill button instead of the text box; the page's grid equals the API's for the same script_args."""
    src = source_png(tmp_path / "src.png")
    upload(page, "img2img_image", src)
    common(page)
    choose(page, "script_list", "X/Y/Z plot")
    page.locator("#script_xyz_plot_x_type").wait_for(state="visible")
    choose(page, "script_xyz_plot_x_type", "Sampler")
    page.locator("#script_xyz_plot_x_values_dropdown").wait_for(state="visible")
    assert not page.locator("#script_xyz_plot_x_values").is_visible()
    page.locator("#xyz_grid_fill_x_tool_button").click()
    page.wait_for_function("() => document.querySelectorAll('#script_xyz_plot_x_values_dropdown .token').length > 5")
    choose(page, "script_xyz_plot_x_type", "Steps")
    page.locator("#script_xyz_plot_x_values").wait_for(state="visible")
    set_value(page, "script_xyz_plot_x_values", "2,3")
    choose(page, "script_xyz_plot_y_type", "CFG Scale")
    set_value(page, "script_xyz_plot_y_values", "4,6")
    info = generate(page)
    assert 'Script: X/Y/Z plot, X Type: Steps, X Values: "2,3", Y Type: CFG Scale, Y Values: "4,6"' in info
    (shown,) = gallery_images(page, ui_server)
    args = [4, "2,3", [], 5, "4,6", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    theirs = api_image(ui_server, api_request(init_images=[b64(src)], script_name="X/Y/Z plot", script_args=args))
    assert shown.size == theirs.size == (176, 137)
    assert np.array_equal(pixels(shown), pixels(theirs))
    page.screenshot(path=str(SHOTS / "script_xyz_plot.png"))
