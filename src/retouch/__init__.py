"""retouch: Stable Diffusion img2img and inpainting that behaves exactly like AUTOMATIC1111's webui."""

from retouch.options import Options

__version__ = "0.1.0"

__all__ = ["Options", "__version__", "load_model"]


def __getattr__(name: str):
    # Heavy imports (torch, diffusers) only when a model is actually needed.
    if name == "load_model":
        from retouch.models import load_model

        return load_model
    if name == "Model":
        from retouch.models import Model

        return Model
    raise AttributeError(f"module 'retouch' has no attribute {name!r}")
