"""A report in headless Chromium (Debian's `chromium`, driven by playwright), measured as a reader
sees it: every figure opened, scrolled to, drawn and photographed; the photographs' pixels
counted in the page itself (a canvas reads the PNG: no imaging library needed).

Used by test_report_pixels.py and by screenshots.py (docs/report-*.jpg)."""
from __future__ import annotations

import base64
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List

WIDTH = 1400

# Pixels of a photographed element: the share that differs from white, and how many are coloured
# (max - min channel > 60: plot colours, not text, grid lines or the page's greys).
_PIXELS = """async (src) => {
  const image = new Image(); image.src = 'data:image/png;base64,' + src; await image.decode();
  const canvas = document.createElement('canvas'); canvas.width = image.width; canvas.height = image.height;
  const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
  const d = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0, inked = 0; const colours = new Set();
  for (let i = 0; i < d.length; i += 4) {
    const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
    if (hi - lo > 60) coloured++;
    if (lo < 235) inked++;
    if (i % 64 === 0) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  const n = d.length / 4;
  return {width: image.width, height: image.height, coloured: coloured, inked: inked / n, colours: colours.size};
}"""

# Everything inside a section that sticks out of the column (scrolling tables and the figures'
# own boxes are measured as boxes: what is inside them is theirs to scroll or fit).
_OVERFLOW = """() => {
  const out = [];
  for (const section of document.querySelectorAll('main section')) {
    const right = section.getBoundingClientRect().right + 1;
    for (const el of section.querySelectorAll('*')) {
      if (el.closest('.table-wrap') && !el.classList.contains('table-wrap')) continue;
      if (el.closest('.plot') && !el.classList.contains('plot')) continue;
      const box = el.getBoundingClientRect();
      if (box.width && box.right > right) out.push(section.id + ' ' + el.tagName + '.' + el.className + ' ' +
        Math.round(box.right - right) + 'px');
    }
    for (const plot of section.querySelectorAll('.plot')) {
      const svg = plot.querySelector('svg.main-svg');
      if (svg && svg.getBoundingClientRect().width > plot.clientWidth + 1) out.push(section.id + ' figure ' +
        Math.round(svg.getBoundingClientRect().width) + 'px in ' + plot.clientWidth + 'px');
    }
  }
  return out;
}"""

# The tick labels of every drawn layer grid, top to bottom (y) and left to right (x).
_GRID_TICKS = """() => [...document.querySelectorAll('details[data-fig] .plot')].filter(p => p.data &&
    p.layout && p.data[0].type === 'heatmap' && p.layout.yaxis && p.layout.yaxis.title &&
    ['Layer', 'Head'].includes(p.layout.yaxis.title.text)).map(p => {
  const sorted = (selector, key) => [...p.querySelectorAll(selector)]
      .map(t => [t.getBoundingClientRect()[key], t.textContent]).sort((a, b) => a[0] - b[0]).map(a => a[1]);
  return {name: p.closest('details').querySelector('summary').innerText, rows: p.data[0].z.length,
          columns: p.data[0].z[0].length, y: sorted('.yaxislayer-above .ytick text', 'top'),
          x: sorted('.xaxislayer-above .xtick text', 'left'), ytitle: p.layout.yaxis.title.text,
          xtitle: p.layout.xaxis.title ? p.layout.xaxis.title.text : ''};
})"""


def chromium() -> str:
    import pytest

    for candidate in (os.environ.get("MI_DSL_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


def open_report(instance, run_dir: Path, width: int = WIDTH):
    """(page, console errors): the report opened, every <details> opened (each draws when opened)."""
    page = instance.new_page(viewport={"width": width, "height": 900})
    errors: List[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}"))
    page.goto((run_dir / "index.html").as_uri())
    page.wait_for_load_state("load")
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    page.wait_for_timeout(500)
    return page, errors


def pixels(page, png: bytes) -> Dict[str, float]:
    return page.evaluate(_PIXELS, base64.b64encode(png).decode("ascii"))


def frame_of(page, element):
    handle = element.element_handle()
    return handle.content_frame() if handle else None


def measure_figures(page) -> List[Dict[str, Any]]:
    """Every figure and embedded view: scrolled to (a view draws when it is on screen), waited for,
    photographed; its name, size, pixels, and for a view the sizes of what it draws on (canvases,
    plotly's svg)."""
    out = []
    boxes = page.locator("details[data-fig] .plot, details iframe")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        box.scroll_into_view_if_needed()
        name = box.evaluate("e => e.closest('details').querySelector('summary').innerText")
        frame = frame_of(page, box) if box.evaluate("e => e.tagName") == "IFRAME" else None
        entry: Dict[str, Any] = {"name": name, "kind": "view" if frame else "plotly"}
        if frame is None:
            box.locator("svg.main-svg").first.wait_for(timeout=15000)
        else:
            frame.wait_for_load_state("load")
            frame.wait_for_function("() => [...document.querySelectorAll('canvas, svg.main-svg')].some("
                                    "e => e.getBoundingClientRect().width > 0)", timeout=20000)
            page.wait_for_timeout(300)  # the frame posts its height; the page resizes it
            entry["drawings"] = frame.evaluate("() => [...document.querySelectorAll('canvas, svg.main-svg')].map("
                                               "c => [c.getBoundingClientRect().width, "
                                               "c.getBoundingClientRect().height])")
            entry["frame_overflow"] = frame.evaluate("() => document.documentElement.scrollWidth - "
                                                     "document.documentElement.clientWidth")
            box.scroll_into_view_if_needed()
        page.wait_for_timeout(150)
        size = box.bounding_box()
        entry["box"] = size
        entry["pixels"] = pixels(page, box.screenshot())
        out.append(entry)
    return out


def overflow(page, settle_ms: int = 0) -> List[str]:
    """What sticks out of its column; with `settle_ms`, once the figures have re-laid themselves
    after a resize (plotly redraws each figure in turn: 40 of them take seconds on a busy CPU)."""
    if settle_ms:
        try:
            page.wait_for_function(f"() => ({_OVERFLOW})().length === 0", timeout=settle_ms, polling=250)
        except Exception:  # noqa: BLE001  (still overflowing: the assertion below lists what)
            pass
    return page.evaluate(_OVERFLOW)


def grid_ticks(page) -> List[Dict[str, Any]]:
    return page.evaluate(_GRID_TICKS)


def full_page(page, path: Path, width: int = WIDTH, segment: int = 1800) -> None:
    """A photograph of the whole report, as one JPEG. Every view is scrolled to first (a frame draws
    only once it has been on screen); then the page is photographed a screen at a time (a
    full-page capture leaves an off-screen frame blank, and in a viewport thousands of pixels
    tall the views' large canvases were sometimes left unpainted) and the screens are stitched
    on a canvas."""
    for frame in page.locator("details iframe").all():
        frame.scroll_into_view_if_needed()
        page.wait_for_timeout(1200)
    page.add_style_tag(content="nav{position:absolute}")  # the sidebar once, at the top, not on every screen
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": width, "height": segment})
    parts = []
    for top in range(0, height, segment):
        page.evaluate(f"window.scrollTo(0, {top})")
        page.wait_for_timeout(1500)
        shift = top - page.evaluate("window.scrollY")  # the last segment stops at the page's end
        parts.append([base64.b64encode(page.screenshot()).decode("ascii"), top, shift])
    jpeg = page.evaluate("""async ([parts, width, height]) => {
      const canvas = document.createElement('canvas'); canvas.width = width; canvas.height = height;
      const context = canvas.getContext('2d');
      for (const [src, top, shift] of parts) {
        const image = new Image(); image.src = 'data:image/png;base64,' + src; await image.decode();
        context.drawImage(image, 0, shift, image.width, image.height - shift, 0, top, image.width,
                          image.height - shift);
      }
      return canvas.toDataURL('image/jpeg', 0.6).split(',')[1];
    }""", [parts, width, height])
    path.write_bytes(base64.b64decode(jpeg))
