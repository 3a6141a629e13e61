"""retouch: Stable Diffusion img2img, inpainting and txt2img that behave exactly like AUTOMATIC1111's webui.

The core: ``generate(params, model, options=…) -> GenerationResult`` for ``Img2ImgParams`` or ``Txt2ImgParams``.
A1111's contract on top of it: ``StableDiffusionProcessingImg2Img`` / ``StableDiffusionProcessingTxt2Img`` +
``process_images(p) -> Processed``.
"""

from retouch.options import Options

__version__ = "0.1.0"

__all__ = ["CheckpointFolder", "GenerationResult", "Img2ImgParams", "Img2ImgResult", "JobControl", "JobResources",
           "Model", "Options", "Outputs", "Processed", "StableDiffusionProcessingImg2Img",
           "StableDiffusionProcessingTxt2Img", "Txt2ImgParams", "__version__", "generate", "load_model",
           "process_images"]

_LAZY = {  # heavy imports (torch, diffusers) only when they are used
    "load_model": "retouch.loading", "Model": "retouch.models",
    "StableDiffusionProcessingImg2Img": "retouch.processing", "StableDiffusionProcessingTxt2Img": "retouch.processing",
    "process_images": "retouch.processing", "Processed": "retouch.processing", "generate": "retouch.pipeline",
    "Img2ImgResult": "retouch.pipeline", "GenerationResult": "retouch.pipeline", "JobResources": "retouch.pipeline",
    "CheckpointFolder": "retouch.pipeline", "Img2ImgParams": "retouch.params", "Txt2ImgParams": "retouch.params",
    "JobControl": "retouch.control", "Outputs": "retouch.outputs",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retouch' has no attribute {name!r}")
