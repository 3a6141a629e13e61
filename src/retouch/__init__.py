"""retouch: Stable Diffusion img2img and inpainting that behaves exactly like AUTOMATIC1111's webui."""

from retouch.options import Options

__version__ = "0.1.0"

__all__ = ["Options", "Processed", "StableDiffusionProcessingImg2Img", "__version__", "load_model", "process_images"]


def __getattr__(name: str):
    # Heavy imports (torch, diffusers) only when a model is actually needed.
    if name == "load_model":
        from retouch.models import load_model

        return load_model
    if name in ("StableDiffusionProcessingImg2Img", "process_images", "Processed"):
        from retouch import processing

        return getattr(processing, name)
    if name == "Model":
        from retouch.models import Model

        return Model
    raise AttributeError(f"module 'retouch' has no attribute {name!r}")
