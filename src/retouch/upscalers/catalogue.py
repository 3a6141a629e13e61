"""Which upscalers there are, named and ordered as A1111 v1.10.1 lists them (``shared.sd_upscalers``).

The list starts with None, Lanczos and Nearest; then every model upscaler sorted by lower-cased name:
the files of the model folders (named by file stem) and the models A1111 knows by name (DAT x2, R-ESRGAN 4x+,
ScuNET GAN, SwinIR 4x, …). A named model is listed even when its file is not on disk, because A1111 lists it
(it downloads it on first use) and scripts pick upscalers by their *index* in this list; retouch never
downloads: using one whose file is missing is a ``ValueError`` saying where to put it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from retouch.options import Options


class Kind(enum.Enum):
    """How an upscaler enlarges an image, which decides its tiling (A1111's upscaler classes)."""

    NONE = "None"
    LANCZOS = "Lanczos"
    NEAREST = "Nearest"
    ESRGAN = "ESRGAN"  # tiles in image space (ESRGAN_tile / ESRGAN_tile_overlap)
    REALESRGAN = "RealESRGAN"  # same tiling and options as ESRGAN
    DAT = "DAT"  # image-space tiles, DAT_tile / DAT_tile_overlap
    SWINIR = "SwinIR"  # tensor-space tiles averaged over overlaps, SWIN_tile / SWIN_tile_overlap
    SCUNET = "ScuNET"  # 1x: tensor-space tiles (SCUNET_tile / SCUNET_tile_overlap), then Lanczos
    LDSR = "LDSR"  # a latent diffusion upscaler: listed (A1111 lists it), not supported

    @property
    def is_model(self) -> bool:
        return self not in (Kind.NONE, Kind.LANCZOS, Kind.NEAREST)


@dataclass(frozen=True)
class UpscalerInfo:
    """One entry of the upscaler list (A1111 ``UpscalerData``): ``path`` is the model file (None for the
    built-in resamplers and for a named model whose file is not on disk; ``url`` says where A1111 would fetch
    it)."""

    name: str
    kind: Kind
    path: Path | None = None
    url: str | None = None
    scale: int = 4

    @property
    def available(self) -> bool:
        return not self.kind.is_model or (self.path is not None and self.kind is not Kind.LDSR)


@dataclass(frozen=True)
class UpscalerFolders:
    """Where model upscalers are found: A1111's ``--esrgan-models-path`` etc. (each searched recursively)."""

    esrgan: Path | None = None
    realesrgan: Path | None = None
    swinir: Path | None = None
    dat: Path | None = None
    scunet: Path | None = None

    def all(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.esrgan, self.realesrgan, self.swinir, self.dat, self.scunet) if p is not None)


_KAIR = "https://github.com/cszn/KAIR/releases/download/v1.0/"
_XINNTAO = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
_DAT = "https://github.com/n0kovo/dat_upscaler_models/raw/main/DAT/"
ESRGAN_4X_URL = _KAIR + "ESRGAN.pth"
SWINIR_4X_URL = ("https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                 "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth")
LDSR_URL = "https://heibox.uni-heidelberg.de/f/578df07c8fc04ffbadf3/?dl=1"
REALESRGAN_MODELS = {  # name -> (url, scale), A1111 ``get_realesrgan_models``
    "R-ESRGAN General 4xV3": (_XINNTAO + "v0.2.5.0/realesr-general-x4v3.pth", 4),
    "R-ESRGAN General WDN 4xV3": (_XINNTAO + "v0.2.5.0/realesr-general-wdn-x4v3.pth", 4),
    "R-ESRGAN AnimeVideo": (_XINNTAO + "v0.2.5.0/realesr-animevideov3.pth", 4),
    "R-ESRGAN 4x+": (_XINNTAO + "v0.1.0/RealESRGAN_x4plus.pth", 4),
    "R-ESRGAN 4x+ Anime6B": (_XINNTAO + "v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", 4),
    "R-ESRGAN 2x+": (_XINNTAO + "v0.2.1/RealESRGAN_x2plus.pth", 2),
}
DAT_MODELS = {name: (_DAT + f"DAT_x{s}.pth", s) for name, s in (("DAT x2", 2), ("DAT x3", 3), ("DAT x4", 4))}
SCUNET_MODELS = {"ScuNET GAN": _KAIR + "scunet_color_real_gan.pth", "ScuNET PSNR": _KAIR + "scunet_color_real_psnr.pth"}
MODEL_SUFFIXES = {Kind.ESRGAN: (".pt", ".pth"), Kind.SWINIR: (".pt", ".pth"), Kind.REALESRGAN: (".pth",),
                  Kind.DAT: (".pth",), Kind.SCUNET: (".pth",)}
BUILT_IN = (UpscalerInfo("None", Kind.NONE), UpscalerInfo("Lanczos", Kind.LANCZOS),
            UpscalerInfo("Nearest", Kind.NEAREST))


def _files(folder: Path | None, suffixes: Sequence[str]) -> list[Path]:
    """Model files below ``folder``, in walk order (hidden files included, as A1111 lists them)."""
    if folder is None or not folder.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        found.extend(Path(root) / n for n in sorted(names) if Path(n).suffix.lower() in suffixes)
    return found


def _by_url_name(files: Iterable[Path], url: str) -> Path | None:
    """The local copy of a named model: a file called as the URL's last part."""
    wanted = url.rsplit("/", 1)[-1]
    return next((f for f in files if f.name == wanted), None)


def find_upscalers(folders: UpscalerFolders, options: Options | None = None) -> list[UpscalerInfo]:
    """Every upscaler, in A1111's order (None, Lanczos, Nearest, then the models by lower-cased name)."""
    options = options or Options()
    models: list[UpscalerInfo] = []
    esrgan = _files(folders.esrgan, MODEL_SUFFIXES[Kind.ESRGAN])
    models += [UpscalerInfo(f.stem, Kind.ESRGAN, f) for f in esrgan]
    if not esrgan:
        models.append(UpscalerInfo("ESRGAN_4x", Kind.ESRGAN, url=ESRGAN_4X_URL))
    realesrgan = _files(folders.realesrgan, MODEL_SUFFIXES[Kind.REALESRGAN])
    for name, (url, scale) in REALESRGAN_MODELS.items():
        if name in options.realesrgan_enabled_models:
            models.append(UpscalerInfo(name, Kind.REALESRGAN, _by_url_name(realesrgan, url), url, scale))
    dat = _files(folders.dat, MODEL_SUFFIXES[Kind.DAT])
    for name, (url, scale) in DAT_MODELS.items():
        if name in options.dat_enabled_models:
            models.append(UpscalerInfo(name, Kind.DAT, _by_url_name(dat, url), url, scale))
    swinir = _files(folders.swinir, MODEL_SUFFIXES[Kind.SWINIR])
    models += [UpscalerInfo(f.stem, Kind.SWINIR, f) for f in swinir]
    if not swinir:
        models.append(UpscalerInfo("SwinIR 4x", Kind.SWINIR, url=SWINIR_4X_URL))
    scunet = _files(folders.scunet, MODEL_SUFFIXES[Kind.SCUNET])
    models += [UpscalerInfo(f.stem, Kind.SCUNET, f, scale=1) for f in scunet]
    gan, psnr = SCUNET_MODELS["ScuNET GAN"], SCUNET_MODELS["ScuNET PSNR"]
    if not scunet:  # A1111 lists its GAN model only when the folder holds no model
        models.append(UpscalerInfo("ScuNET GAN", Kind.SCUNET, url=gan, scale=1))
    if not any(f.stem == "ScuNET PSNR" for f in scunet):
        models.append(UpscalerInfo("ScuNET PSNR", Kind.SCUNET, _by_url_name(scunet, psnr), psnr, 1))
    models.append(UpscalerInfo("LDSR", Kind.LDSR, url=LDSR_URL))
    return [*BUILT_IN, *sorted(models, key=lambda m: m.name.lower())]


def find_upscaler(upscalers: Sequence[UpscalerInfo], name: str, field: str = "upscaler") -> UpscalerInfo:
    """The upscaler called ``name``; ``ValueError`` naming ``field`` and listing the choices otherwise, or
    saying what is missing for a listed one that cannot run."""
    found = next((u for u in upscalers if u.name == name), None)
    if found is None:
        names = ", ".join(u.name for u in upscalers)
        raise ValueError(f"{field}: could not find upscaler named {name!r}; the upscalers are: {names}")
    check_available(found, field)
    return found


def check_available(upscaler: UpscalerInfo, field: str = "upscaler") -> None:
    if upscaler.kind is Kind.LDSR:
        raise ValueError(f"{field}: {upscaler.name} (a latent diffusion upscaler) is not supported by retouch; "
                         "choose an ESRGAN-family, DAT, SwinIR or ScuNET model, Lanczos or Nearest")
    if upscaler.kind.is_model and upscaler.path is None:
        flag = f"--{upscaler.kind.value.lower()}-models-path"
        raise ValueError(f"{field}: the model file of {upscaler.name} is not on disk and retouch does not download; "
                         f"fetch {upscaler.url} into the folder given by {flag}")
