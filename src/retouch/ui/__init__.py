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

# A1111's keys: Ctrl+Enter (or Alt+Enter) generates, Esc interrupts a running job.
SHORTCUTS = """
<script>
document.addEventListener('keydown', (e) => {
  const enter = e.key === 'Enter' && (e.ctrlKey || e.metaKey || e.altKey);
  const button = (id) => document.querySelector(`#${id}`);
  if (enter) { e.preventDefault(); button('img2img_generate')?.click(); }
  else if (e.key === 'Escape' && document.querySelector('#img2img_progress [data-state]')) {
    button('img2img_interrupt')?.click();
  }
});
</script>
"""

CSS = """
#img2img_progress .progress { position: relative; height: 1.6em; border-radius: 4px; background: #eee; }
#img2img_progress .progress-bar { position: absolute; inset: 0 auto 0 0; background: #f97316; border-radius: 4px; }
#img2img_progress .progress span { position: relative; padding-left: .5em; }
#img2img_message .error { color: #b91c1c; font-weight: 600; }
.infotext p { white-space: pre-wrap; word-break: break-word; font-size: .9em; }
"""


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

    from retouch.ui.guard import PageGuard, PageLimits
    from retouch.ui.page import build

    api_routes = list(app.router.routes)  # the API's, before the page's catch-all mount
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    # show_error=False: an unexpected error is "Error" on the page (its text may name server files); the page's
    # own messages are shown in full
    gr.mount_gradio_app(app, build(state, uploads), path="/", theme=theme, css=CSS, head=SHORTCUTS,
                        footer_links=[], show_error=False, ssr_mode=False, mcp_server=False,
                        enable_monitoring=False, pwa=False, max_file_size=int(config.max_body_mb * 2**20))
    # innermost: after --api-auth and the request limits, before Gradio
    app.user_middleware.append(Middleware(PageGuard, uploads=uploads, api_routes=api_routes,
                                          limits=PageLimits(max_pixels=config.max_pixels)))
    uploads.start()
    app.router.on_shutdown.append(uploads.close)
    atexit.register(uploads.close)
