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
