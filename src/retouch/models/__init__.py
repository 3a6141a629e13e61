"""Everything that reads model files: checkpoints, configs, diffusers folders, VAEs."""

from retouch.models.checkpoint import CheckpointError
from retouch.models.loader import cache_dir, load_model
from retouch.models.model import Model, VaeInfo

__all__ = ["CheckpointError", "Model", "VaeInfo", "cache_dir", "load_model"]
