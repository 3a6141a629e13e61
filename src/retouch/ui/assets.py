"""The page's own style and script: A1111's keyboard shortcuts (Ctrl+Enter, Esc, Ctrl+↑/↓ attention editing), the
Generate button that runs only the selected sub-tab's inputs, the running state (Generate hidden, Interrupt and Skip
shown, the live preview in the gallery's place), extra-network cards, and the tab-dependent controls — all in the
browser, with no round trip to the server."""

from __future__ import annotations

import json

# Sub-tabs whose controls show only when they are selected: CSS :has() on the selected tab button, so a tab switch
# (a click, or "Send to inpaint" from the server) shows them at once
_INPAINT_TABS = ("img2img_inpaint_tab", "img2img_inpaint_sketch_tab", "img2img_inpaint_upload_tab", "img2img_batch_tab")

CSS = """
.retouch-trigger { display: none !important; }
/* one progress bar: ours; Gradio's own tracker ("processing | 5.5/2.0s") stays off the results column */
.retouch-quiet [data-testid=status-tracker], .retouch-quiet .progress-text { display: none !important; }
#img2img_progress .progress, #txt2img_progress .progress { position: relative; height: 1.6em; border-radius: 4px;
  background: #eee; }
.progress-bar { position: absolute; inset: 0 auto 0 0; background: #f97316; border-radius: 4px; }
.progress span { position: relative; padding-left: .5em; }
.retouch-message .error { color: #b91c1c; font-weight: 600; }
.retouch-message .warning { color: #92400e; }
.infotext p { white-space: pre-wrap; word-break: break-word; font-size: .9em; }
.token-counter { font-size: .8em; opacity: .7; text-align: right; }
/* running: Interrupt and Skip in Generate's place, the live preview in the gallery's */
.retouch-stop { display: none !important; }
.running .retouch-stop { display: inline-flex !important; }
.running .retouch-generate { display: none !important; }
.retouch-live-preview { display: none !important; }
.running .retouch-live-preview.has-image { display: block !important; }
.running .retouch-live-preview.has-image ~ .retouch-gallery { display: none !important; }
.retouch-live-preview .image-frame { width: 100% !important; }
.retouch-live-preview img { width: 100% !important; height: auto !important; max-height: 640px; object-fit: contain; }
/* the inpainting controls: only with an inpainting sub-tab selected */
#inpaint_controls, #img2img_mask_alpha { display: none !important; }
""" + "".join(
    f"#tab_img2img:has(#{tab}-button[aria-selected=true]) #inpaint_controls {{ display: flex !important; }}\n"
    for tab in _INPAINT_TABS) + """
#tab_img2img:has(#img2img_inpaint_sketch_tab-button[aria-selected=true]) #img2img_mask_alpha { display: block !important; }
.extra-network-cards { display: flex; flex-wrap: wrap; gap: .5em; }
.extra-network-cards .card { border: 1px solid #ccc; border-radius: 6px; padding: .6em .8em; cursor: pointer;
  min-width: 10em; background: #fafafa; }
.extra-network-cards .card:hover { border-color: #f97316; }
.extra-network-cards .card .name { font-weight: 600; }
.extra-network-cards .card .description { font-size: .8em; opacity: .7; }
.extra-network-cards .card.hidden { display: none; }
"""

# The img2img sub-tabs, in A1111's order: each has a hidden trigger that runs its inputs only
IMG2IMG_TRIGGERS = {"img2img_img2img_tab": "img2img", "img2img_img2img_sketch_tab": "sketch",
                    "img2img_inpaint_tab": "inpaint", "img2img_inpaint_sketch_tab": "inpaint_sketch",
                    "img2img_inpaint_upload_tab": "inpaint_upload", "img2img_batch_tab": "batch"}

HEAD = """
<script>
(() => {
  const subTabs = __TRIGGERS__;
  const $ = (selector) => document.querySelector(selector);
  const tabRoot = (tab) => document.getElementById('tab_' + tab);
  const running = (tab) => tabRoot(tab)?.classList.contains('running');

  // Generate: the selected sub-tab's trigger (only its inputs are sent: no other editor uploads its canvas)
  window.retouchGenerate = (tab) => {
    if (running(tab)) return;
    let trigger = '#' + tab + '_generate_run';
    if (tab === 'img2img') {
      const selected = Object.keys(subTabs).find((id) => $('#' + id + '-button')?.getAttribute('aria-selected') === 'true');
      trigger = '#img2img_generate_' + subTabs[selected || 'img2img_img2img_tab'];
      if (selected === 'img2img_batch_tab' && $('#img2img_batch_upload_tab-button')?.getAttribute('aria-selected') === 'true') {
        trigger = '#img2img_generate_batch_upload';
      }
    }
    tabRoot(tab)?.classList.add('running');
    $(trigger)?.click();
  };
  window.retouchDone = (tab) => { tabRoot(tab)?.classList.remove('running'); };
  window.retouchCurrentTab = () => ['txt2img', 'img2img'].find((tab) => {
    const root = tabRoot(tab);
    return root && root.offsetParent !== null;
  });

  // A change the page makes to a textbox must reach Gradio like typing does
  const announce = (textarea) => textarea.dispatchEvent(new Event('input', {bubbles: true}));

  // Extra-network cards: insert their text into the prompt, or take it out when it is there (A1111's toggle)
  window.retouchCard = (tab, text, negative) => {
    const box = $('#' + tab + (negative ? '_neg_prompt' : '_prompt') + ' textarea');
    if (!box) return;
    if (box.value.includes(text)) {
      box.value = box.value.replace(text, '').replace(/  +/g, ' ').trim();
    } else {
      box.value = box.value.trim() ? box.value.trimEnd() + ' ' + text : text;
    }
    announce(box);
  };
  window.retouchPickCheckpoint = (tab, title) => {
    const box = $('#' + tab + '_pick_checkpoint textarea, #' + tab + '_pick_checkpoint input');
    if (!box) return;
    box.value = title;
    announce(box);
    setTimeout(() => $('#' + tab + '_pick_checkpoint_button')?.click(), 50);
  };
  window.retouchFilterCards = (input) => {
    const words = input.value.toLowerCase();
    input.closest('.extra-network-page')?.querySelectorAll('.card').forEach((card) => {
      card.classList.toggle('hidden', !card.dataset.search.includes(words));
    });
  };

  // "Size from image": the selected sub-tab's picture, read in the browser
  window.retouchSizeFromImage = () => {
    const selected = Object.keys(subTabs).find((id) => $('#' + id + '-button')?.getAttribute('aria-selected') === 'true');
    const image = $('#' + (selected || 'img2img_img2img_tab') + ' img, #' + (selected || '') + ' canvas');
    const width = image?.naturalWidth || image?.width, height = image?.naturalHeight || image?.height;
    if (!width || !height) return [null, null];
    const round8 = (v) => Math.max(64, Math.round(v / 8) * 8);
    return [round8(width), round8(height)];
  };

  // Ctrl+↑/↓: change the emphasis of the selection, or of the word or (…:weight) block at the cursor
  const DELIMITERS = '.,\\\\/!?%^*;:{}=`~() \\t\\r\\n';
  const enclosing = (text, at, open, close) => {
    const before = text.slice(0, at), after = text.slice(at);
    const start = before.lastIndexOf(open), stop = after.indexOf(close);
    if (start < 0 || stop < 0 || before.lastIndexOf(close) > start) return null;
    const nextOpen = after.indexOf(open);
    if (nextOpen >= 0 && nextOpen < stop) return null;
    const inside = text.slice(start + 1, at + stop);
    const colon = /:-?[\\d.]+$/.test(inside) ? inside.lastIndexOf(':') : inside.length;
    return [start + 1, start + 1 + colon];
  };
  const wordAt = (text, at) => {
    let start = at, end = at;
    while (start > 0 && !DELIMITERS.includes(text[start - 1])) start--;
    while (end < text.length && !DELIMITERS.includes(text[end])) end++;
    return [start, end];
  };
  const editAttention = (box, up) => {
    let text = box.value, [start, end] = [box.selectionStart, box.selectionEnd];
    if (start === end) {
      [start, end] = enclosing(text, start, '<', '>') || enclosing(text, start, '(', ')')
        || enclosing(text, start, '[', ']') || wordAt(text, start);
    }
    while (end > start && text[end - 1] === ' ') end--;
    if (start === end) return;
    const opener = text[start - 1];
    const close = opener === '<' ? '>' : ')';
    const step = opener === '<' ? 0.05 : 0.1;
    if ((opener === '(' && text[end] === ')') || (opener === '[' && text[end] === ']')) {
      let depth = 0;  // old-style ((emphasis)) becomes (emphasis:1.21)
      while (text[start - depth - 1] === opener && text[end + depth] === text[end]) depth++;
      const weight = Math.round((opener === '[' ? (1 / 1.1) ** depth : 1.1 ** depth) / 0.1) * 0.1;
      text = text.slice(0, start - depth) + '(' + text.slice(start, end) + ':' + weight.toFixed(1) + ')' + text.slice(end + depth);
      start -= depth - 1; end -= depth - 1;
    } else if (opener !== '(' && opener !== '<') {
      text = text.slice(0, start) + '(' + text.slice(start, end) + ':1.0)' + text.slice(end);
      start++; end++;
    }
    if (text[end] !== ':') return;
    const stop = text.indexOf(close, end);
    let weight = parseFloat(text.slice(end + 1, stop));
    if (isNaN(weight)) return;
    weight = parseFloat((weight + (up ? step : -step)).toPrecision(12));
    const shown = Number.isInteger(weight) ? weight + '.0' : String(weight);
    if (close === ')' && weight === 1) {
      text = text.slice(0, start - 1) + text.slice(start, end) + text.slice(stop + 1);
      start--; end--;
    } else {
      text = text.slice(0, end + 1) + shown + text.slice(stop);
    }
    box.value = text;
    box.setSelectionRange(start, end);
    announce(box);
  };

  document.addEventListener('keydown', (e) => {
    const box = e.target;
    const inPrompt = box?.matches?.('[id$="_prompt"] textarea');
    if (inPrompt && (e.ctrlKey || e.metaKey) && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
      e.preventDefault();
      editAttention(box, e.key === 'ArrowUp');
      return;
    }
    const tab = window.retouchCurrentTab();
    if (!tab) return;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey || e.altKey)) {
      e.preventDefault();
      window.retouchGenerate(tab);
    } else if (e.key === 'Escape' && running(tab)) {
      $('#' + tab + '_interrupt')?.click();
    }
  });

  // The live preview takes the gallery's place only once it has a picture
  new MutationObserver(() => {
    document.querySelectorAll('.retouch-live-preview').forEach((box) => {
      box.classList.toggle('has-image', !!box.querySelector('img[src]'));
    });
  }).observe(document.documentElement, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
})();
</script>
""".replace("__TRIGGERS__", json.dumps(IMG2IMG_TRIGGERS))
