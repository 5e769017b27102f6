"""What users see: report charts that carry their numbers, Spark's progress bar only on a terminal."""

from __future__ import annotations

import re

from divspa.report import _bars, scatter


def test_bar_chart_has_a_y_axis_from_zero_and_value_labels():
    svg = _bars("HR@K", ["@10", "@20"], {"base": [0.25, 0.5], "divspa-1": [0.3, 0.4]})
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)  # y-axis tick labels, bottom to top
    assert labels == ["0.000", "0.125", "0.250", "0.375", "0.500"]
    shown = re.findall(r'font-size="9">([^<]+)</text>', svg)  # one printed value per bar
    assert shown == ["0.250", "0.300", "0.500", "0.400"]
    # The tallest bar reaches the top tick.
    heights = [float(h) for h in re.findall(r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"', svg)]
    assert max(heights) == max(heights[:4]) and abs(max(heights) - 230) < 0.1


def test_scatter_has_labelled_axes():
    svg = scatter("frontier", {"base": (100.0, 0.2), "divspa-1": (120.0, 0.25)}, "distinct items @100", "HR@50")
    assert "distinct items @100" in svg and "HR@50" in svg
    assert len(re.findall(r'text-anchor="end">', svg)) == 5 and svg.count("<circle") == 2


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
