"""A1111's ``upcast_attn`` option through a whole job."""

import torch

from retouch import Img2ImgParams, generate, load_model
from retouch.options import Options
from tests.pipeline.helpers import source_image


def test_the_option_reaches_every_unet_call():
    """Off (A1111's default) or on, an fp32 job is the same; a bf16 job changes with it, and repeats exactly."""
    def run(model, upcast):
        params = Img2ImgParams(init_images=[source_image()], prompt="a cat", steps=4, denoising_strength=0.6, seed=3,
                               width=64, height=64)
        return generate(params, model, options=Options().with_overrides({"upcast_attn": upcast})).images[0].tobytes()

    fp32 = load_model("tiny")
    assert run(fp32, True) == run(fp32, False)
    bf16 = load_model("tiny", dtype=torch.bfloat16)
    on = run(bf16, True)
    assert on == run(bf16, True)
    assert on != run(bf16, False)
