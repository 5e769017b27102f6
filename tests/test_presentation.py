"""What users see: report charts that carry their numbers, Spark's progress bar only on a terminal."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from divspa import charts
from divspa.report import fmt

SVG = "{http://www.w3.org/2000/svg}"


def _texts(svg: str, under: str = "") -> list[str]:
    """The text of every <text> in the chart, or only in the groups whose id starts with `under`."""
    root = ET.fromstring(svg)
    groups = [g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith(under)] if under else [root]
    texts = [t.text.strip() for g in groups for t in g.iter(f"{SVG}text") if t.text and t.text.strip()]
    return [t for t in texts if re.fullmatch(r"[\u2212\-\d,.]+", t)] if under else texts


def _number(label: str) -> float:
    return float(label.replace("\u2212", "-").replace(",", ""))


def test_count_axes_start_at_zero_with_round_ticks():
    """The frontier of the demo run that drew an axis from -177: counts now start at 0."""
    svg = charts.frontier("frontier", {"popularity": (117.0, 0.2358), "base": (3106.0, 0.4162),
                                       "divspa-1": (2924.0, 0.4230)}, "distinct items @100", "HR@50")
    ticks = [_number(t) for t in _texts(svg, "count-axis")]
    assert ticks[0] == 0 and all(t >= 0 and t == round(t, -2) for t in ticks), ticks
    assert all(f"{m}: " in svg for m in ("popularity", "base", "divspa-1"))  # named in the legend
    bars = charts.grouped_bars("sizes", {"rows": (["i2i", "u2i"], {"rows": [2.35e6, 1.1e6]}),
                                         "items": (["i2i", "u2i"], {"items": [247.0, 90.0]})}, counts=True)
    rows, items = (_texts(bars, f"count-axis-sizes-{p}") for p in ("rows", "items"))
    assert rows[0] == "0" and "2,000,000" in rows and items[0] == "0" and max(map(_number, items)) >= 247


def test_a_histogram_has_no_label_per_bar_and_charts_do_not_share_ids():
    edges = [i / 10 for i in range(11)]
    svg = charts.histograms("weights", {"weight": (edges, {"i2i": [5.0] * 10, "u2i": [1.0] * 10})})
    assert len(_texts(svg)) < 20  # ticks, axis labels, legend, title: not one per bin
    other = charts.histograms("scores", {"weight": (edges, {"i2i": [5.0] * 10, "u2i": [1.0] * 10})})
    ids = lambda s: {e.get("id") for e in ET.fromstring(s).iter() if e.get("id")}  # noqa: E731
    assert not ids(svg) & ids(other)  # two charts inlined in one page
    assert svg.startswith('<svg class="chart"')


def test_numbers_read_as_their_kind():
    assert (fmt(2350000.0, "count"), fmt(0.0008, "share"), fmt(0.08523, "score"), fmt(None)) == \
        ("2,350,000", "0.08%", "0.08523", "-")


def test_spark_progress_bar_only_on_a_terminal(monkeypatch):
    import io
    import sys

    from divspa.spark import console_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert console_progress() == "false"
    monkeypatch.setattr(sys, "stderr", Tty())
    assert console_progress() == "true"
