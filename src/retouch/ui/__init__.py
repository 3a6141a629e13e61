"""The web UI: A1111's img2img and PNG Info tabs, served by ``retouch serve`` beside the API (optional extra
``retouch[ui]``).

:func:`mount` puts the page at ``/`` on the API's app, after the API routes, so ``/sdapi/*`` is unchanged and
page jobs share the API's queue. Nothing the page loads comes from another machine: system fonts, no
analytics.
"""

from __future__ import annotations

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
    """Serve the page at ``/`` of ``app`` (a FastAPI app made by :func:`retouch.server.app.create_app`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from retouch.ui.page import build

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    gr.mount_gradio_app(app, build(state), path="/", theme=theme, css=CSS, head=SHORTCUTS, footer_links=[],
                        show_error=True, ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False)
