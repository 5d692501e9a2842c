"""A script for the page's <head> that stops the canvas editor from burning a CPU core while nobody touches it.

Gradio 5's ImageEditor draws with PixiJS, whose application ticker re-renders the whole stage on every animation
frame forever, idle or not (gradio issue 7586; gradio 6 makes the loop idle-aware, PR 13571). Measured here on
the 2-core machine with headless chromium (software WebGL): the idle page cost 9-14 CPU seconds per 10 s, which
slowed a render in the server, or a CLI run beside it, by 1.5-10x (docs/ui.md has the figures).

The script wraps `window.requestAnimationFrame`: while the user has made no input for IDLE_MS, a frame is
granted at most every IDLE_FRAME_MS instead of at the display rate; any pointer, key, wheel, drop, paste or
form input restores full-rate frames at once, so painting stays smooth. Programmatic changes (an upload, a
loaded PNG) still appear within IDLE_FRAME_MS. The rendered pixels, and everything the server computes, are
unchanged: only how often an unchanged canvas is drawn again.
"""

from __future__ import annotations

IDLE_MS = 500  # no input for this long: the page counts as idle
IDLE_FRAME_MS = 1000  # then at most one animation frame per this many ms

HEAD = """<script>
(() => {
  if (window.__twosamplersIdleFrames) return;
  window.__twosamplersIdleFrames = true;
  const IDLE_MS = @IDLE_MS@, IDLE_FRAME_MS = @IDLE_FRAME_MS@;
  const raf = window.requestAnimationFrame.bind(window);
  const caf = window.cancelAnimationFrame.bind(window);
  const held = new Map();  // our id -> {timer, frame, cb}
  let lastInput = performance.now();
  const grant = (id, entry) => { entry.frame = raf((t) => { held.delete(id); entry.cb(t); }); };
  const wake = () => {
    lastInput = performance.now();
    for (const [id, entry] of held) {  // a frame held back while idle runs at once
      if (!entry.frame) { clearTimeout(entry.timer); grant(id, entry); }
    }
  };
  for (const t of ["pointerdown", "pointermove", "pointerup", "wheel", "keydown", "input", "change", "drop",
                   "paste", "dragover", "touchstart", "touchmove"]) {
    window.addEventListener(t, wake, {capture: true, passive: true});
  }
  let next = 1e9;
  window.requestAnimationFrame = (cb) => {
    if (performance.now() - lastInput < IDLE_MS) return raf(cb);
    const id = next++;
    const entry = {timer: 0, frame: 0, cb};
    entry.timer = setTimeout(() => grant(id, entry), IDLE_FRAME_MS);
    held.set(id, entry);
    return id;
  };
  window.cancelAnimationFrame = (id) => {
    const entry = held.get(id);
    if (entry === undefined) return caf(id);
    clearTimeout(entry.timer);
    if (entry.frame) caf(entry.frame);
    held.delete(id);
  };
})();
</script>""".replace("@IDLE_MS@", str(IDLE_MS)).replace("@IDLE_FRAME_MS@", str(IDLE_FRAME_MS))
