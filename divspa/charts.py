"""The report's charts: drawn by matplotlib, inlined as SVG text.

Why a plotting library: hand-drawn SVG got the details wrong that readers rely on (ticks at
five equal splits of a padded range, a count axis starting at −177, 2.35M rows and 247 items on
one linear axis, a label per histogram bar). Matplotlib's locators give round ticks; here count
axes start at zero, different magnitudes get their own panel, and point names live in a legend
beside the axes so they cannot overlap the points.

Each chart is one `<svg class="chart">` string: the page stays one file that opens offline.
Text stays text (`svg.fonttype: none`), so the browser test can measure it. The count axes' tick
labels sit in a group whose id starts with `count-axis`: that is how a test finds them.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac"]
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*"]
OUTCOME_COLOURS = {"published": "#2e7d32", "gated": "#c62828", "failed": "#757575", "pending": "#1f77b4"}
WIDTH = 10.5  # inches: 756 pt = 1,008 px, inside the page's 1,100 px column
STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
         "axes.titlesize": 10, "axes.titleweight": "bold", "legend.frameon": False}


def _figure(ncols: int, height: float = 3.0) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _svg(fig: Figure, title: str) -> str:
    """The figure as an inline <svg>: no XML prologue, scaled to the column by the page's style,
    ids unique per chart (several are inlined in one page)."""
    buf = io.StringIO()
    salt = _slug(title)
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": salt}):  # reproducible clip-path ids
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib numbers its groups per figure (figure_1, axes_1, ...): prefix every id, and every
    # reference to one, with the chart's name (the count axes' ids already carry it).
    text = re.sub(r'(\bid="|url\(#|href="#)(?!count-axis)', lambda m: f"{m.group(1)}{salt}-", text)
    label = html.escape(title, quote=True)
    return re.sub(r"^<svg ", f'<svg class="chart" role="img" aria-label="{label}" ', text, count=1)


def count_formatter(v: float, _pos: int | None = None) -> str:
    return f"{v:,.0f}"


def _count_axis(ax: Axes, axis: str, gid: str) -> None:
    """An axis of counts: whole numbers with thousands separators, from zero."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=2))
    target.set_major_formatter(FuncFormatter(count_formatter))
    target.set_gid(f"count-axis-{gid}-{axis}")
    if axis == "y":
        ax.set_ylim(bottom=0)
    else:
        ax.set_xlim(left=0)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _draw(fig: Figure, title: str) -> str:
    with matplotlib.rc_context(STYLE):
        fig.suptitle(title, fontsize=10, fontweight="bold", x=0.01, ha="left")
    return _svg(fig, title)


def grouped_bars(title: str, panels: dict[str, tuple[list[str], dict[str, list[float]]]],
                 counts: bool = False) -> str:
    """One panel per quantity, one group of bars per category, one bar per series (a legend, no
    value over each bar: the tables beside the charts carry the numbers)."""
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(panels))
        for ax, (name, (categories, series)) in zip(axes, panels.items(), strict=True):
            n = max(len(series), 1)
            width = 0.8 / n
            for i, (label, values) in enumerate(series.items()):
                xs = [c + (i - (n - 1) / 2) * width for c in range(len(categories))]
                ax.bar(xs, values, width * 0.95, color=PALETTE[i % len(PALETTE)], label=label)
            ax.set_xticks(range(len(categories)), categories)
            ax.set_title(name, loc="left")
            if counts:
                _count_axis(ax, "y", _slug(f"{title}-{name}"))
            else:
                ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
                ax.set_ylim(bottom=0)
        handles, labels = axes[0].get_legend_handles_labels()
        if len(labels) > 1:  # one bar per group needs no key: the panel's title says what it is
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6))
    return _draw(fig, title)


def frontier(title: str, points: dict[str, tuple[float, float]], xlabel: str, ylabel: str) -> str:
    """One marker per model on accuracy (y) against distinct items (x, a count from zero); up and
    to the right is better on both. Names in a legend outside the axes, so none covers a point."""
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1, 3.4)
        for i, (name, (x, y)) in enumerate(points.items()):
            ax.scatter([x], [y], s=46, color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)],
                       label=f"{name}: {x:,.0f}, {y:.4g}", zorder=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, color="#eeeeee", zorder=0)
        xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
        if xs:
            _count_axis(ax, "x", _slug(title))
            ax.set_xlim(0, max(xs) * 1.1 or 1.0)
            lo, hi = min(ys), max(ys)
            pad = (hi - lo) * 0.15 or abs(hi) * 0.1 or 0.01
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
        fig.legend(loc="outside right upper")
    return _draw(fig, title)


def histograms(title: str, panels: dict[str, tuple[Sequence[float], dict[str, list[float]]]]) -> str:
    """Counts per bin as steps, one line per series, one panel per quantity; `panels` maps a
    panel's x label to (bin edges, {series: counts})."""
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(panels))
        for ax, (xlabel, (edges, series)) in zip(axes, panels.items(), strict=True):
            for i, (label, counts) in enumerate(series.items()):
                ax.stairs(counts, edges, color=PALETTE[i % len(PALETTE)], label=label, linewidth=1.4)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("rows per bin")
            _count_axis(ax, "y", _slug(f"{title}-{xlabel}"))
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6))
    return _draw(fig, title)


def trials(title: str, numbers: list[int], values: list[float], states: list[str], chosen: int | None,
           ylabel: str) -> str:
    """Stage tune's trials: one bar per trial; the chosen one dark, pruned ones pale."""
    colours = ["#1b4f72" if n == chosen else "#c8d6e5" if s == "pruned" else PALETTE[0]
               for n, s in zip(numbers, states, strict=True)]
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1, 2.8)
        ax.bar(numbers, values, color=colours)
        ax.set_xlabel("trial (dark: chosen; pale: pruned)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.set_ylim(bottom=0)
    return _draw(fig, title)


def trend(title: str, runs: list[str], outcomes: list[str], panels: dict[str, list[float | None]],
          counts: Sequence[str], current: int) -> str:
    """Run over run: one panel per figure, x = the runs in the order they were recorded
    (numbered; the table below names them), markers coloured by outcome, this run ringed."""
    xs = list(range(1, len(runs) + 1))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(panels), 2.6)
        for ax, (name, values) in zip(axes, panels.items(), strict=True):
            pts = [(x, v, o) for x, v, o in zip(xs, values, outcomes, strict=True) if v is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#999999", linewidth=1, zorder=1)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=30, zorder=2,
                       color=[OUTCOME_COLOURS.get(p[2], "#333333") for p in pts])
            mine = [p for p in pts if p[0] == current]
            if mine:
                ax.scatter([mine[0][0]], [mine[0][1]], s=120, facecolors="none", edgecolors="#000000", zorder=3)
            ax.set_title(name, loc="left")
            ax.set_xlim(0.5, len(runs) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=min(len(runs), 10), integer=True))
            if name in counts:
                _count_axis(ax, "y", _slug(f"{title}-{name}"))
            else:
                ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.set_xlabel("run")
            if pts:  # room above the top point; counts and scores both start at zero
                ax.set_ylim(0, max(p[1] for p in pts) * 1.15 or 1.0)
        handles = [axes[0].scatter([], [], s=30, color=c, label=o) for o, c in OUTCOME_COLOURS.items()]
        fig.legend(handles, list(OUTCOME_COLOURS), loc="outside lower center", ncols=len(OUTCOME_COLOURS))
    return _draw(fig, title)
