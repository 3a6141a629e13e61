"""The web UI: A1111's img2img and PNG Info tabs, served by ``retouch serve`` beside the API (optional extra
``retouch[ui]``).

:func:`mount` puts the page at ``/`` on the API's app, after the API routes, so ``/sdapi/*`` is unchanged and
page jobs share the API's queue. Nothing the page loads comes from another machine: system fonts, no
analytics.
"""

from __future__ import annotations

import atexit
import importlib.util
import os

INSTALL_HINT = "the web UI needs the optional extra: pip install 'retouch[ui]' (or `make ui`)"

def available() -> bool:
    return importlib.util.find_spec("gradio") is not None


def mount(app, state) -> None:
    """Serve the page at ``/`` of ``app`` (a FastAPI app made by :func:`retouch.server.app.create_app`), behind
    :class:`~retouch.ui.guard.PageGuard`, its files in a private :class:`~retouch.ui.uploads.UploadFolder`."""
    from starlette.middleware import Middleware

    from retouch.ui.uploads import UploadFolder

    config = state.config
    uploads = UploadFolder(quota_bytes=int(config.max_upload_storage_mb * 2**20),
                           partial_seconds=config.body_timeout + 30, parent=os.environ.get("GRADIO_TEMP_DIR"))
    os.environ["GRADIO_TEMP_DIR"] = str(uploads.root)  # read by Gradio as it builds the page: set it first
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from retouch.ui.assets import CSS, HEAD
    from retouch.ui.guard import PageGuard, PageLimits
    from retouch.ui.page import build

    api_routes = list(app.router.routes)  # the API's, before the page's catch-all mount
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    # show_error=False: an unexpected error is "Error" on the page (its text may name server files); the page's
    # own messages are shown in full
    gr.mount_gradio_app(app, build(state, uploads), path="/", theme=theme, css=CSS, head=HEAD,
                        footer_links=[], show_error=False, ssr_mode=False, mcp_server=False,
                        enable_monitoring=False, pwa=False, max_file_size=int(config.max_body_mb * 2**20))
    # innermost: after --api-auth and the request limits, before Gradio
    app.user_middleware.append(Middleware(PageGuard, uploads=uploads, api_routes=api_routes,
                                          limits=PageLimits(max_pixels=config.max_pixels)))
    uploads.start()
    app.router.on_shutdown.append(uploads.close)
    atexit.register(uploads.close)
