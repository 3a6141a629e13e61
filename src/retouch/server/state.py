"""The server's configuration and mutable state, as values (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from retouch.options import Options

if TYPE_CHECKING:
    from retouch.server.backend import Backend


@dataclass
class ServerConfig:
    """``retouch serve``'s flags."""

    ckpt: str | None = None
    ckpt_dir: str | None = None
    outdir: str | None = None
    api_auth: str | None = None
    max_queue: int = 16
    allow_image_urls: bool = False
    max_pixels: int = 4096 * 4096
    options: Options = field(default_factory=Options)
    load_kwargs: dict = field(default_factory=dict)  # precision / channels_last for load_model
    vae_tiling: str = "auto"


@dataclass
class ServerState:
    """What routes share: the configuration, the backend, the current options (replaced whole by
    ``POST /sdapi/v1/options``) and the timestamp of the last finished job."""

    config: ServerConfig
    backend: Backend
    options: Options
    job_timestamp: str = "0"
