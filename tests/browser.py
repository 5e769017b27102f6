"""A report page measured by a real browser: headless Chromium from Debian's packages.

No driver: a copy of the page gets a script that measures it on load and writes its findings
into the DOM, and `chromium --dump-dom` prints that DOM. `.ci/run` installs Chromium, so CI
always measures; elsewhere the tests that need it skip and say why.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

WIDTH = 1300
NAMES = ("chromium", "chromium-browser", "google-chrome")

# On load: does the page scroll sideways, is every chart drawn, do two texts of a chart overlap,
# does a count axis have a tick label below zero.
_MEASURE = """<script>
window.addEventListener('load', () => {
  const box = e => e.getBoundingClientRect();
  const num = s => parseFloat(s.replace(/\\u2212/g, '-').replace(/,/g, ''));
  const charts = [...document.querySelectorAll('svg.chart')].map((svg, i) => {
    const r = box(svg), style = getComputedStyle(svg);
    const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim()).map(t => [t.textContent.trim(), box(t)]);
    const overlaps = [];
    for (let a = 0; a < texts.length; a++) for (let b = a + 1; b < texts.length; b++) {
      const p = texts[a][1], q = texts[b][1];
      const w = Math.min(p.right, q.right) - Math.max(p.left, q.left), h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (w > 1 && h > 1) overlaps.push([texts[a][0], texts[b][0]]);
    }
    const counts = [...svg.querySelectorAll('g[id^="count-axis"] text')].map(t => t.textContent.trim());
    return {index: i, title: svg.getAttribute('aria-label') || '', width: r.width, height: r.height,
            visible: style.display !== 'none' && style.visibility !== 'hidden', texts: texts.length, overlaps,
            count_ticks: counts, negative_counts: counts.filter(s => num(s) < 0)};
  });
  const out = document.createElement('pre');
  out.id = 'divspa-measure';
  out.textContent = JSON.stringify({scroll_width: document.documentElement.scrollWidth,
                                    inner_width: window.innerWidth, charts});
  document.body.appendChild(out);
});
</script>"""


def find_browser() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def measure(page: Path, tmp: Path) -> dict:
    """What Chromium at WIDTH px makes of `page`."""
    browser = find_browser()
    assert browser, "no Chromium on PATH"
    probe = tmp / f"measured-{page.name}"
    probe.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--window-size={WIDTH},900", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="divspa-measure">(.*?)</pre>', res.stdout, re.S)
    assert found, f"the page was not measured (rc {res.returncode}): {res.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def assert_page_fits(page: Path, tmp: Path, min_charts: int) -> dict:
    """The report's promises to a reader at 1,300 px; returns the measurements."""
    m = measure(page, tmp)
    assert m["inner_width"] == WIDTH
    assert m["scroll_width"] <= m["inner_width"], f"scrolls sideways: {m['scroll_width']} px"
    assert len(m["charts"]) >= min_charts, [c["title"] for c in m["charts"]]
    for c in m["charts"]:
        assert c["visible"] and c["width"] > 100 and c["height"] > 50, c
        assert c["texts"] > 0 and not c["overlaps"], (c["title"], c["overlaps"])
        assert not c["negative_counts"], (c["title"], c["negative_counts"])
    assert any(c["count_ticks"] for c in m["charts"])  # the check above had something to check
    return m
