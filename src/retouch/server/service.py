"""What the server does for one img2img request, apart from HTTP: checkpoints, infotext defaults,
request → :class:`StableDiffusionProcessingImg2Img`, and the job itself."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.infotext import parse_infotext
from retouch.models import Model, load_model
from retouch.models.checkpoint import cached_sha256
from retouch.models.loader import TINY_MODELS
from retouch.options import Options
from retouch.params import Img2ImgParams
from retouch.processing import JobControl, StableDiffusionProcessingImg2Img, process_images
from retouch.server.images import ApiError

logger = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass
class Checkpoint:
    name: str  # file name relative to the checkpoint folder (A1111's "name")
    path: Path | str

    @property
    def model_name(self) -> str:
        return Path(self.name).stem if not isinstance(self.path, str) else self.name

    @property
    def short_hash(self) -> str | None:
        if isinstance(self.path, str):
            return None
        sha = cached_sha256(self.path)
        return sha[:10] if sha else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


@dataclass
class ModelManager:
    """The checkpoints a request may name (``--ckpt``, ``--ckpt-dir``) and the one loaded."""

    ckpt: str | None = None
    ckpt_dir: str | None = None
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    default: str = ""
    load_kwargs: dict = field(default_factory=dict)
    vae_tiling: str = "auto"
    _loaded: tuple[str, Model] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.refresh()
        if self.ckpt:
            self.default = self.find(self.ckpt if self.ckpt in TINY_MODELS else Path(self.ckpt).name).name
        elif not self.default:
            self.default = next(iter(self.checkpoints))

    def refresh(self) -> None:
        found: dict[str, Checkpoint] = {}
        if self.ckpt_dir:
            folder = Path(self.ckpt_dir)
            if not folder.is_dir():
                raise ValueError(f"--ckpt-dir: not a folder: {folder}")
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file() or path.is_dir() and (path / "model_index.json").is_file():
                    found[str(path.relative_to(folder))] = Checkpoint(str(path.relative_to(folder)), path)
        if self.ckpt and self.ckpt not in TINY_MODELS:
            path = Path(self.ckpt)
            if not path.exists():
                raise ValueError(f"--ckpt: no such file: {path}")
            found.setdefault(path.name, Checkpoint(path.name, path))
        if not found or (self.ckpt in TINY_MODELS):
            for name in TINY_MODELS:
                found.setdefault(name, Checkpoint(name, name))
        self.checkpoints = found

    def find(self, name: str) -> Checkpoint:
        """A checkpoint by title, file name, stem or short hash (as A1111 matches them)."""
        for ckpt in self.checkpoints.values():
            if name in (ckpt.title, ckpt.name, ckpt.model_name) or (ckpt.short_hash and name == ckpt.short_hash):
                return ckpt
        stem = name.split(" [")[0]
        for ckpt in self.checkpoints.values():
            if stem in (ckpt.name, ckpt.model_name):
                return ckpt
        raise ApiError(422, f"override_settings.sd_model_checkpoint: unknown checkpoint {name!r}; available: "
                            f"{', '.join(c.name for c in self.checkpoints.values())}", "ValueError")

    def get(self, name: str | None = None) -> Model:
        ckpt = self.find(name) if name else self.find(self.default)
        with self._lock:
            if self._loaded is None or self._loaded[0] != ckpt.name:
                self._loaded = None  # free the old model before loading the next
                model = load_model(ckpt.path, **self.load_kwargs)
                model.vae_tiling = self.vae_tiling
                self._loaded = (ckpt.name, model)
            return self._loaded[1]

    @property
    def loaded_title(self) -> str:
        return self._loaded[1].title if self._loaded else self.find(self.default).title


# Infotext keys → request fields (for the ``infotext`` request field, spec §7.1 step 4)
_INFOTEXT_FIELDS = {
    "Steps": ("steps", int), "Sampler": ("sampler_name", str), "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float), "Image CFG scale": ("image_cfg_scale", float), "Seed": ("seed", int),
    "Variation seed": ("subseed", int), "Variation seed strength": ("subseed_strength", float),
    "Denoising strength": ("denoising_strength", float), "Mask blur": ("mask_blur", int),
    "Masked area padding": ("inpaint_full_res_padding", int), "Noise multiplier": ("initial_noise_multiplier", float),
}
_INFOTEXT_OPTIONS = {"Clip skip": ("CLIP_stop_at_last_layers", int), "ENSD": ("eta_noise_seed_delta", int),
                     "RNG": ("randn_source", str), "Model": ("sd_model_checkpoint", str)}


def apply_infotext(values: dict[str, Any], explicitly_set: set[str]) -> None:
    """Fill the fields the request left unset from its ``infotext`` (A1111 behaviour)."""
    text = values.get("infotext")
    if not text:
        return
    prompt, negative, params = parse_infotext(text)
    filled: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    for key, (name, kind) in _INFOTEXT_FIELDS.items():
        if key in params:
            filled[name] = _coerce(params[key], kind, key)
    if "Size" in params:
        w, _, h = params["Size"].partition("x")
        filled["width"], filled["height"] = _coerce(w, int, "Size"), _coerce(h, int, "Size")
    if "Seed resize from" in params:
        w, _, h = params["Seed resize from"].partition("x")
        filled["seed_resize_from_w"], filled["seed_resize_from_h"] = _coerce(w, int, "Size"), _coerce(h, int, "Size")
    if params.get("Mask mode") == "Inpaint not masked":
        filled["inpainting_mask_invert"] = 1
    if params.get("Inpaint area") == "Only masked":
        filled["inpaint_full_res"] = True
    content = {"fill": 0, "original": 1, "latent noise": 2, "latent nothing": 3}
    if params.get("Masked content") in content:
        filled["inpainting_fill"] = content[params["Masked content"]]
    for name, value in filled.items():
        if name not in explicitly_set:
            values[name] = value
    overrides = dict(values.get("override_settings") or {})
    for key, (name, kind) in _INFOTEXT_OPTIONS.items():
        if key in params and name not in overrides:
            overrides[name] = _coerce(params[key], kind, key)
    if overrides:
        values["override_settings"] = overrides


def _coerce(text: str, kind, key: str):
    try:
        return kind(text)
    except ValueError:
        raise ApiError(422, f"infotext: bad value for {key!r}: {text!r}", "ValueError") from None


def run_job(control: JobControl, *, models: ModelManager, base_options: Options, params: dict[str, Any],
            images, mask, outdir: str | None, save: bool, restore_afterwards: bool):
    """The worker-thread part of a request: pick the model, build the facade, process."""
    overrides = dict(params.pop("override_settings") or {})
    checkpoint = overrides.pop("sd_model_checkpoint", None)
    model = models.get(checkpoint)
    if checkpoint and not restore_afterwards:
        models.default = models.find(checkpoint).name
    p = StableDiffusionProcessingImg2Img(
        sd_model=model, init_images=images, mask=mask, options=base_options, override_settings=overrides,
        outpath_samples=outdir if save else None, outpath_grids=outdir if save else None,
        do_not_save_samples=not save, do_not_save_grid=not save, control=control, **params)
    return p, process_images(p)


def request_params(values: dict[str, Any]) -> dict[str, Any]:
    """Request fields that are facade parameters (images handled separately)."""
    names = set(Img2ImgParams.field_names()) | {"mask_blur", "refiner_checkpoint", "refiner_switch_at",
                                                 "sampler_index", "force_task_id", "override_settings"}
    skip = {"init_images", "image_mask", "latent_mask"}
    out = {k: v for k, v in values.items() if k in names and k not in skip}
    if out.get("styles") is None:
        out["styles"] = []
    if out.get("negative_prompt") is None:
        out["negative_prompt"] = ""
    if out.get("prompt") is None:
        out["prompt"] = ""
    return out
