"""The server's configuration and mutable state, as values (no module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from retouch.loading import upscaler_folders
from retouch.networks.files import LoraFolder
from retouch.options import Options
from retouch.styles import StyleFile
from retouch.upscalers import UpscalerFolders
from retouch.upscalers.spandrel_models import ModelCache

if TYPE_CHECKING:
    from retouch.serving.protocols import Backend


@dataclass
class ServerConfig:
    """``retouch serve``'s flags."""

    ckpt: str | None = None
    ckpt_dir: str | None = None
    vae_dir: str | None = None
    vae_path: str | None = None
    lora_dir: str | None = None
    embeddings_dir: str | None = None
    outdir: str | None = None
    api_auth: str | None = None
    max_queue: int = 16
    allow_image_urls: bool = False
    max_pixels: int = 4096 * 4096
    options: Options = field(default_factory=Options)
    load_kwargs: dict = field(default_factory=dict)  # precision / channels_last for load_model
    vae_tiling: str = "auto"
    # what one request may cost (answered 413/422 before anything is decoded or queued)
    max_body_mb: float = 64.0
    max_images: int = 100  # n_iter × batch_size
    max_job_steps: int = 10_000  # n_iter × batch_size × steps
    max_request_pixels: int = 64 * 2**20  # every input pixel plus width × height × batch_size × n_iter
    # what a connection may hold (uvicorn)
    body_timeout: float = 60.0  # seconds to receive a whole request body
    header_timeout: float = 10.0  # seconds to receive a request's headers
    max_connections: int = 512
    # the page (retouch.ui)
    max_upload_storage_mb: float = 1024.0  # its uploads and shown images on disk at once
    batch_roots: tuple[str, ...] = ()  # folders the Batch sub-tab may read and write below (none: it is off)
    styles_file: str | None = None  # A1111's styles.csv (read for requests' styles; the page saves into it)

    esrgan_models_path: str | None = None  # A1111's upscaler model folders
    realesrgan_models_path: str | None = None
    swinir_models_path: str | None = None
    dat_models_path: str | None = None
    scunet_models_path: str | None = None

    def upscaler_folders(self) -> UpscalerFolders:
        return upscaler_folders(self.esrgan_models_path, self.realesrgan_models_path, self.swinir_models_path,
                                self.dat_models_path, self.scunet_models_path)

    def upscaler_dirs(self) -> tuple[str, ...]:
        """The folders of upscaler models (never checkpoints)."""
        return tuple(str(folder) for folder in self.upscaler_folders().all())


@dataclass
class ServerState:
    """What routes share: the configuration, the backend, the current options (replaced whole by
    ``POST /sdapi/v1/options``) and the timestamp of the last finished job."""

    config: ServerConfig
    backend: Backend
    options: Options
    job_timestamp: str = "0"
    loras: LoraFolder = field(default_factory=lambda: LoraFolder(None))  # for ``/loras`` and pasted infotexts
    styles: StyleFile = field(default_factory=lambda: StyleFile(None))  # ``--styles-file``
    upscaler_cache: ModelCache = field(default_factory=ModelCache)  # the extras' upscaler models, kept loaded
    extras_lock: threading.Lock = field(default_factory=threading.Lock)  # one extras request upscales at a time

    def __post_init__(self) -> None:
        if self.config.lora_dir is not None and self.loras.folder is None:
            self.loras = LoraFolder(self.config.lora_dir)
        if self.config.styles_file is not None and self.styles.path is None:
            self.styles = StyleFile(self.config.styles_file)
