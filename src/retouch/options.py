"""Settings that A1111 keeps in its global ``opts``, as a plain validated value object.

A job never reads global state: it receives an :class:`Options` (usually the server's or the
CLI's defaults with the request's ``override_settings`` applied through :meth:`Options.with_overrides`).

Option names and defaults are A1111 v1.10.1's. The typed fields below are the ones retouch reads.
Every other option name A1111 knows is accepted too (so existing clients that send them keep
working) and kept in :attr:`Options.inert`; it has no effect, which is logged once per job.
A name A1111 does not know is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

logger = logging.getLogger(__name__)


MAX_INT = 2**53  # options are JSON numbers: integers beyond this are not exact in every client
MAX_TEXT = 10_000  # characters in a string option
MAX_ITEMS = 1_000  # items in a list option


def _opt(default: Any, *, choices: tuple[Any, ...] | None = None, lo: float | None = None,
         hi: float | None = None, color: bool = False) -> Any:
    return field(default=default, metadata={"choices": choices, "lo": lo, "hi": hi, "color": color})


@dataclass(frozen=True)
class Options:
    # img2img (spec §2.3)
    initial_noise_multiplier: float = _opt(1.0, lo=0.0)
    img2img_extra_noise: float = _opt(0.0, lo=0.0)
    img2img_fix_steps: bool = _opt(False)
    img2img_color_correction: bool = _opt(False)
    img2img_background_color: str = _opt("#ffffff", color=True)
    inpainting_mask_weight: float = _opt(1.0, lo=0.0, hi=1.0)
    overlay_inpaint: bool = _opt(True)
    return_mask: bool = _opt(False)
    save_mask: bool = _opt(False)
    return_mask_composite: bool = _opt(False)
    save_mask_composite: bool = _opt(False)
    save_images_before_color_correction: bool = _opt(False)
    save_images_before_face_restoration: bool = _opt(False)
    save_init_img: bool = _opt(False)
    outdir_init_images: str = _opt("outputs/init-images")
    upscaler_for_img2img: str | None = _opt(None)
    # upscaler models: tile sizes in pixels (0 = no tiling) and overlaps; which named models are listed
    ESRGAN_tile: int = _opt(192, lo=0, hi=512)
    ESRGAN_tile_overlap: int = _opt(8, lo=0, hi=48)
    DAT_tile: int = _opt(192, lo=0, hi=512)
    DAT_tile_overlap: int = _opt(8, lo=0, hi=48)
    SWIN_tile: int = _opt(192, lo=16, hi=512)
    SWIN_tile_overlap: int = _opt(8, lo=0, hi=48)
    SCUNET_tile: int = _opt(256, lo=0, hi=512)
    SCUNET_tile_overlap: int = _opt(8, lo=0, hi=64)
    realesrgan_enabled_models: tuple[str, ...] = _opt(("R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"))
    dat_enabled_models: tuple[str, ...] = _opt(("DAT x2", "DAT x3", "DAT x4"))
    sd_vae_encode_method: str = _opt("Full", choices=("Full", "TAESD"))
    sd_vae_decode_method: str = _opt("Full", choices=("Full", "TAESD"))
    img2img_batch_show_results_limit: int = _opt(32, lo=-1)
    token_merging_ratio_img2img: float = _opt(0.0, lo=0.0, hi=0.9)
    token_merging_ratio: float = _opt(0.0, lo=0.0, hi=0.9)
    token_merging_ratio_hr: float = _opt(0.0, lo=0.0, hi=0.9)
    # random numbers (spec §5)
    randn_source: str = _opt("GPU", choices=("GPU", "CPU", "NV"))
    eta_noise_seed_delta: int = _opt(0, lo=0, hi=2**32)  # added to seeds (< 2^32): stays a valid seed
    enable_batch_seeds: bool = _opt(True)
    no_dpmpp_sde_batch_determinism: bool = _opt(False)
    # samplers and schedules (spec §4)
    eta_ancestral: float = _opt(1.0, lo=0.0)
    eta_ddim: float = _opt(0.0, lo=0.0)
    ddim_discretize: str = _opt("uniform", choices=("uniform", "quad"))
    s_churn: float = _opt(0.0, lo=0.0)
    s_tmin: float = _opt(0.0, lo=0.0)
    s_tmax: float = _opt(0.0, lo=0.0)
    s_noise: float = _opt(1.0, lo=0.0)
    s_min_uncond: float = _opt(0.0, lo=0.0)
    s_min_uncond_all: bool = _opt(False)
    sigma_min: float = _opt(0.0, lo=0.0)
    sigma_max: float = _opt(0.0, lo=0.0)
    rho: float = _opt(0.0, lo=0.0)
    always_discard_next_to_last_sigma: bool = _opt(False)
    use_old_karras_scheduler_sigmas: bool = _opt(False)
    sd_noise_schedule: str = _opt("Default", choices=("Default", "Zero Terminal SNR"))
    use_downcasted_alpha_bar: bool = _opt(False)
    skip_early_cond: float = _opt(0.0, lo=0.0, hi=1.0)
    beta_dist_alpha: float = _opt(0.6, lo=0.0)
    beta_dist_beta: float = _opt(0.6, lo=0.0)
    uni_pc_variant: str = _opt("bh1", choices=("bh1", "bh2", "vary_coeff"))
    uni_pc_skip_type: str = _opt("time_uniform", choices=("time_uniform", "time_quadratic", "logSNR"))
    uni_pc_order: int = _opt(3, lo=1, hi=50)
    uni_pc_lower_order_final: bool = _opt(True)
    sgm_noise_multiplier: bool = _opt(False)
    enable_quantization: bool = _opt(False)
    # prompts and conditioning (prompt spec §10)
    emphasis: str = _opt("Original", choices=("None", "Ignore", "Original", "No norm"))
    comma_padding_backtrack: int = _opt(20, lo=0, hi=74)
    CLIP_stop_at_last_layers: int = _opt(1, lo=1, hi=12)
    sdxl_clip_l_skip: bool = _opt(False)
    use_old_emphasis_implementation: bool = _opt(False)
    use_old_scheduling: bool = _opt(False)
    pad_cond_uncond: bool = _opt(False)
    pad_cond_uncond_v0: bool = _opt(False)
    batch_cond_uncond: bool = _opt(True)
    # retouch's own: each image of a batch gets exactly the pixels it gets alone (one network call per image
    # per step instead of A1111's one per batch; costs batch speed)
    deterministic_batches: bool = _opt(False)
    persistent_cond_cache: bool = _opt(True)
    textual_inversion_add_hashes_to_infotext: bool = _opt(True)
    textual_inversion_print_at_load: bool = _opt(False)
    hires_fix_use_firstpass_conds: bool = _opt(False)
    # hires fix and the refiner
    use_old_hires_fix_width_height: bool = _opt(False)
    hires_fix_refiner_pass: str = _opt("second pass", choices=("first pass", "second pass", "both"))
    refiner_switch_by_sample_steps: bool = _opt(False)
    save_images_before_highres_fix: bool = _opt(False)
    extra_networks_default_multiplier: float = _opt(1.0)
    sd_lora: str = _opt("None")
    sd_hypernetwork: str = _opt("None")
    lora_not_found_warning_console: bool = _opt(False)
    lora_not_found_gradio_warning: bool = _opt(False)
    lora_add_hashes_to_infotext: bool = _opt(True)
    lora_bundled_ti_to_infotext: bool = _opt(True)
    lora_in_memory_limit: int = _opt(0, lo=0)
    sdxl_crop_top: int = _opt(0)
    sdxl_crop_left: int = _opt(0)
    include_styles_into_token_counters: bool = _opt(True)
    # model selection and precision
    sd_model_checkpoint: str | None = _opt(None)
    sd_vae: str = _opt("Automatic")
    upcast_attn: bool = _opt(False)
    # output, saving and infotext (spec §6)
    enable_pnginfo: bool = _opt(True)
    samples_save: bool = _opt(True)
    samples_format: str = _opt("png", choices=("png", "jpg", "jpeg", "webp"))
    samples_filename_pattern: str = _opt("")
    save_images_add_number: bool = _opt(True)
    outdir_samples: str = _opt("")
    outdir_img2img_samples: str = _opt("outputs/img2img-images")
    outdir_grids: str = _opt("")
    outdir_img2img_grids: str = _opt("outputs/img2img-grids")
    grid_save: bool = _opt(True)
    grid_format: str = _opt("png", choices=("png", "jpg", "jpeg", "webp"))
    grid_only_if_multiple: bool = _opt(True)
    grid_prevent_empty_spots: bool = _opt(False)
    grid_background_color: str = _opt("#ffffff", color=True)
    grid_text_active_color: str = _opt("#000000", color=True)
    grid_text_inactive_color: str = _opt("#999999", color=True)
    return_grid: bool = _opt(True)
    n_rows: int = _opt(-1, lo=-1)
    jpeg_quality: int = _opt(80, lo=1, hi=100)
    webp_lossless: bool = _opt(False)
    face_restoration: bool = _opt(False)
    face_restoration_model: str = _opt("CodeFormer")
    tiling: bool = _opt(False)
    add_model_hash_to_info: bool = _opt(True)
    add_model_name_to_info: bool = _opt(True)
    add_vae_hash_to_info: bool = _opt(True)
    add_vae_name_to_info: bool = _opt(True)
    add_version_to_infotext: bool = _opt(True)
    add_user_name_to_info: bool = _opt(False)
    # progress previews
    show_progress_every_n_steps: int = _opt(10, lo=-1)
    live_previews_enable: bool = _opt(True)
    # A1111 option names retouch accepts but does not act on (name -> value)
    inert: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # names a job's ``override_settings`` set (A1111 reads ``"name" in p.override_settings`` for token merging)
    overridden: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        for f in typed_fields():
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Options:
        """A copy with a job's ``overrides`` applied (A1111's ``override_settings``); the copy's
        :attr:`overridden` adds their names.

        Raises ``ValueError`` naming the option for an unknown name or a bad value.
        """
        return self._applied(overrides, record=True) if overrides else self

    def with_settings(self, values: Mapping[str, Any] | None) -> Options:
        """A copy with ``values`` as its settings (``POST /sdapi/v1/options``, the Settings tab): as
        :meth:`with_overrides`, but not a job's overrides, so :attr:`overridden` is left empty.

        Raises ``ValueError`` naming the option for an unknown name or a bad value.
        """
        return self._applied(values, record=False) if values else self.settings()

    def _applied(self, values: Mapping[str, Any], record: bool) -> Options:
        """One copy with ``values`` checked and applied; ``record``: their names join :attr:`overridden`
        (a job's overrides), else it is left empty (settings)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"override_settings must be a mapping of option names to values, "
                             f"got {type(values).__name__}")
        typed = {f.name for f in typed_fields()}
        changes: dict[str, Any] = {}
        inert = dict(self.inert)
        for name, value in values.items():
            if not isinstance(name, str):
                raise ValueError(f"override_settings: option names are strings, got {name!r}")
            if name in typed:
                changes[name] = value
            elif name in inert_defaults():
                inert[name] = _check_inert(name, value, inert_defaults()[name])
            else:
                raise ValueError(f"override_settings: unknown option {name!r}; it is not an AUTOMATIC1111 "
                                 f"option name (see GET /sdapi/v1/options for the list)")
        overridden = self.overridden | frozenset(values) if record else frozenset()
        return dataclasses.replace(self, **changes, inert=inert, overridden=overridden)

    def settings(self) -> Options:
        """These options as settings kept past a job (A1111's ``override_settings_restore_afterwards: false``):
        the same values, no overridden names."""
        return dataclasses.replace(self, overridden=frozenset()) if self.overridden else self

    def as_dict(self) -> dict[str, Any]:
        """Every option A1111 knows, with this object's values (for ``GET /sdapi/v1/options``)."""
        out = dict(inert_defaults())
        out.update(self.inert)
        out.update({f.name: getattr(self, f.name) for f in typed_fields()})
        return out


@cache
def typed_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(Options) if f.name not in ("inert", "overridden"))


@cache
def inert_defaults() -> Mapping[str, Any]:
    """A1111 v1.10.1 option names (with their defaults) that have no typed field here."""
    text = resources.files("retouch.configs").joinpath("a1111_options.json").read_text()
    typed = {f.name for f in typed_fields()}
    return {k: v for k, v in json.loads(text).items() if k not in typed}


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """A typed option's value, checked by type, range and choices (``ValueError`` naming the option)."""
    name, kind = f.name, str(f.type)
    meta = f.metadata
    if value is None:
        if "None" in kind:
            return None
        raise ValueError(f"option {name} must not be null")
    if kind.startswith("bool"):
        return _as_bool(name, value)
    if kind.startswith("int"):
        value = _as_int(name, value)
    elif kind.startswith("float"):
        value = _as_float(name, value)
    elif kind.startswith("tuple"):
        if not isinstance(value, list | tuple) or len(value) > MAX_ITEMS:
            raise ValueError(f"option {name} must be a list of at most {MAX_ITEMS} strings, got {value!r}"[:300])
        value = tuple(_as_text(f"{name}[{i}]", item) for i, item in enumerate(value))
    elif kind.startswith("str"):
        value = _as_text(name, value)
        if meta.get("color"):
            _check_color(name, value)
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"option {name} must be one of {list(meta['choices'])}, got {value!r}")
    if meta.get("lo") is not None and value < meta["lo"]:
        raise ValueError(f"option {name} must be >= {meta['lo']}, got {value!r}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise ValueError(f"option {name} must be <= {meta['hi']}, got {value!r}")
    return value


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"option {name} must be true or false, got {value!r}")


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or int(value) != value:
        raise ValueError(f"option {name} must be an integer, got {value!r}")
    if abs(value) > MAX_INT:
        raise ValueError(f"option {name} must be between {-MAX_INT} and {MAX_INT}, got {value!r}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option {name} must be a finite number, got {value!r}")
    return float(value)


def _as_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"option {name} must be a string, got {value!r}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"option {name} must be at most {MAX_TEXT} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"option {name} holds invalid Unicode (a lone surrogate)") from None
    return value


def _check_color(name: str, value: str) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(value)
    except ValueError:
        raise ValueError(f"option {name} must be a colour (e.g. #ffffff or white), got {value!r}") from None


def _check_inert(name: str, value: Any, default: Any) -> Any:
    """An option retouch does not act on still gets a value of its A1111 type, fit to send back as JSON."""
    if default is None or value is None:
        return _check_json(name, value)
    if isinstance(default, bool):
        return _as_bool(name, value)
    if isinstance(default, int):
        return _as_int(name, value)
    if isinstance(default, float):
        return _as_float(name, value)
    if isinstance(default, str):
        return _as_text(name, value)
    if isinstance(default, list):
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise ValueError(f"option {name} must be a list of at most {MAX_ITEMS} items, got {value!r}"[:300])
        return [_check_json(f"{name}[{i}]", item) for i, item in enumerate(value)]
    return _check_json(name, value)


def _check_json(name: str, value: Any) -> Any:
    """Scalars only (null, bool, finite number, short valid string)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _as_float(name, value) if isinstance(value, float) else _as_int(name, value)
    if isinstance(value, str):
        return _as_text(name, value)
    raise ValueError(f"option {name} must be a string, number, boolean or null, got {type(value).__name__}")
