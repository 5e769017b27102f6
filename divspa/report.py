"""The run's self-contained HTML report: metrics side by side, augmentation and diversity plots.

Everything comes from the run's Delta tables (metrics, augmented_positives), so the report can
be rebuilt at any time and says nothing the tables do not. Charts are inline SVG: the file
opens anywhere, offline, with no plotting library installed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

from pyspark.sql import functions as F

from divspa import storage
from divspa.config import Config
from divspa.runtime import RunContext

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d"]
BINS = 20


def _bars(title: str, categories: list[str], series: dict[str, list[float]], fmt: str = "{:.3f}") -> str:
    """A grouped bar chart: one group per category, one bar per series, a labelled y axis from 0
    and each bar's value printed above it (a printed report has no hover)."""
    w, h, pad, left = 640, 260, 40, 70
    top = max([v for vals in series.values() for v in vals] + [1e-12])
    group_w = (w - left - pad) / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    scale = (h - 30) / top
    parts = [f'<svg width="{w}" height="{h + 60}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
             f'<text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{h}" x2="{w - pad}" y2="{h}" stroke="#333"/>',
             f'<line x1="{left}" y1="30" x2="{left}" y2="{h}" stroke="#333"/>']
    for t in _ticks(0.0, top):
        y = h - t * scale
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{html.escape(fmt.format(t))}</text>'
                     f'<line x1="{left}" y1="{y:.1f}" x2="{w - pad}" y2="{y:.1f}" stroke="#eee"/>')
    for ci, cat in enumerate(categories):
        x0 = left + ci * group_w + group_w * 0.1
        for si, (name, vals) in enumerate(series.items()):
            v = vals[ci]
            bh = v * scale
            x = x0 + si * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{h - bh:.1f}" width="{bar_w - 1:.1f}" height="{bh:.1f}" '
                         f'fill="{PALETTE[si % len(PALETTE)]}"><title>{html.escape(name)} {html.escape(cat)}: '
                         f'{fmt.format(v)}</title></rect>'
                         f'<text x="{x + bar_w / 2:.1f}" y="{h - bh - 3:.1f}" text-anchor="middle" font-size="9">'
                         f'{html.escape(fmt.format(v))}</text>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{h + 14}" text-anchor="middle">{html.escape(cat)}</text>')
    for si, name in enumerate(series):
        parts.append(f'<rect x="{left + si * 140}" y="{h + 30}" width="10" height="10" '
                     f'fill="{PALETTE[si % len(PALETTE)]}"/><text x="{left + si * 140 + 14}" y="{h + 39}">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def scatter(title: str, points: dict[str, tuple[float, float]], xlabel: str, ylabel: str) -> str:
    """One labelled point per model on value axes (the accuracy-diversity frontier): up and to the
    right is better on both. Axes span the points' range with a margin, ticks labelled."""
    w, h, left, bottom, top_pad, right = 640, 320, 70, 50, 30, 30
    if not points:
        return ""
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    def span(vals: list[float]) -> tuple[float, float]:
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    (x0, x1), (y0, y1) = span(xs), span(ys)
    px = lambda x: left + (w - left - right) * (x - x0) / (x1 - x0)  # noqa: E731
    py = lambda y: h - bottom - (h - bottom - top_pad) * (y - y0) / (y1 - y0)  # noqa: E731
    parts = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
             f'<text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{h - bottom}" stroke="#333"/>',
             f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">{html.escape(xlabel)}</text>',
             f'<text x="14" y="{(top_pad + h - bottom) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {(top_pad + h - bottom) / 2})">{html.escape(ylabel)}</text>']
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{px(t):.1f}" y="{h - bottom + 14}" text-anchor="middle">{_fmt_tick(t)}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>'
                     f'<line x1="{left}" y1="{py(t):.1f}" x2="{w - right}" y2="{py(t):.1f}" stroke="#eee"/>')
    for i, (name, (x, y)) in enumerate(points.items()):
        c = PALETTE[i % len(PALETTE)]
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{c}"><title>{html.escape(name)}: '
                     f'{_fmt_tick(x)}, {_fmt_tick(y)}</title></circle>'
                     f'<text x="{px(x) + 8:.1f}" y="{py(y) - 6:.1f}" fill="{c}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt_tick(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 or float(v).is_integer() else f"{v:.4f}"


def _gates(ctx: RunContext, evaluated_at: dt.datetime | None) -> str:
    """The run's publishing verdict, first thing on the page (divspa/runs.py)."""
    from divspa import runs

    rec = runs.record(ctx.warehouse, ctx.run_id)
    if rec is None or (evaluated_at is not None and rec["recorded_at"] < evaluated_at):
        return ('<p class="gate">Quality gates: not checked yet for these figures (stage publish runs after '
                "evaluate).</p>")
    colour = {"published": "#2e7d32", "gated": "#c62828", "failed": "#c62828"}.get(rec["outcome"], "#333")
    head = (f'<p class="gate" style="border-left:6px solid {colour};padding-left:8px"><b>{html.escape(rec["outcome"].upper())}'
            f"</b>" + (f": {html.escape(rec['reason'])}" if rec["reason"] else
                       ": every gate passed; trainers reading the latest published run read this one") + "</p>")
    gates = json.loads(rec["gates"]) if rec["gates"] else []
    return head + (_table(["gate", "passed", "value", "threshold", "detail"],
                          [[g["name"], "yes" if g["passed"] else "NO", _fmt(g["value"]), g["threshold"], g["detail"]]
                           for g in gates]) if gates else "")


def _tuning(trials: list[dict]) -> str:
    """Stage tune's trials: what each tried, how it did on validation, which one the models use."""
    if not trials:
        return ""
    trials = sorted(trials, key=lambda r: r["trial"])
    k = trials[0]["val_k"]
    pick = next((r for r in trials if r["chosen"]), None)
    head = (f"<p>{len(trials)} trials scored on the validation slice of train (never on test). "
            + (f"Trial {pick['trial']} was chosen: val HR@{k} {_fmt(pick['val_hr'])} against "
               f"{_fmt(trials[0]['val_hr'])} with the configured settings (trial 0); the base and the students "
               "trained with its settings.</p>" if pick else "The search has not finished: nothing chosen yet.</p>"))
    chart = _bars(f"validation HR@{k} per trial", [str(r["trial"]) for r in trials],
                  {"val HR": [r["val_hr"] or 0.0 for r in trials]})
    rows = [[f"{r['trial']}{' (chosen)' if r['chosen'] else ''}", r["state"], _fmt(r["val_hr"]),
             _fmt(r["epochs_run"]), f"{r['seconds']:.0f}",
             ", ".join(f"{key.split('.')[1]}={_short(v)}" for key, v in json.loads(r["params"]).items())]
            for r in trials]
    return ("<h2>Tuning (stage tune)</h2>" + head + chart
            + _table(["trial", "state", f"val HR@{k}", "epochs", "seconds", "settings"], rows))


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _betas(cfg: Config) -> str:
    """The mix-up weight, or each strategy's where they differ (divspa.beta_<strategy>)."""
    betas = {s: b for s, b in cfg.divspa.strategy_betas().items() if s in cfg.augment.strategies}
    if all(b == cfg.divspa.beta for b in betas.values()):
        return str(cfg.divspa.beta)
    return ", ".join(f"{s} {b}" for s, b in betas.items())


def write_report(ctx: RunContext) -> Path:
    metrics = [r.asDict() for r in ctx.read("metrics").collect()]  # one run's figures: a few hundred rows
    ev = [m for m in metrics if m["stage"] == "evaluate"]
    models = list(dict.fromkeys(m["model"] for m in ev))
    get = {(m["model"], m["metric"], m["k"]): m["value"] for m in ev}
    evaluated_at = max((m["created_at"] for m in ev), default=None)
    if evaluated_at is not None and evaluated_at.tzinfo is None:  # Spark hands back local naive times
        evaluated_at = evaluated_at.astimezone(dt.UTC)
    sections: list[str] = [_gates(ctx, evaluated_at)]

    ks = sorted({m["k"] for m in ev if m["metric"] == "hr"})
    acc_rows = [[mod, *[_fmt(get.get((mod, met, k))) for met in ("hr", "ndcg") for k in ks]] for mod in models]
    sections.append("<h2>Accuracy (test pairs, train items masked)</h2>" + _table(
        ["model", *[f"{met.upper()}@{k}" for met in ("hr", "ndcg") for k in ks]], acc_rows))
    for met in ("hr", "ndcg"):
        sections.append(_bars(f"{met.upper()}@K", [f"@{k}" for k in ks],
                              {mod: [get.get((mod, met, k)) or 0.0 for k in ks] for mod in models}))

    dks = sorted({m["k"] for m in ev if m["metric"] == "distinct_items"})
    div_rows = [[mod, *[_fmt(get.get((mod, met, k))) for k in dks for met in ("distinct_items", "distinct_share",
                                                                              "gini", "long_tail_share")]]
                for mod in models]
    pk = ctx.cfg.publish.k
    share = get.get(("base", "distinct_share", pk))
    concentration = "" if share is None else (
        f"<p>The base's top-{pk} lists fill <b>{share:.2%}</b> of their slots with distinct items (Gini "
        f"{_fmt(get.get(('base', 'gini', pk)))}). The paper's base filled 0.08 % of its top-100 slots; augmentation "
        "widened bases that concentrated like it and narrowed spread ones (docs/RESULTS.md).</p>")
    sections.append("<h2>Diversity of the test users' top-K lists</h2>" + concentration + _table(
        ["model", *[f"{met}@{k}" for k in dks for met in ("distinct", "distinct share", "gini", "long-tail")]],
        div_rows))
    sections.append(_bars("distinct items in the union of top-K lists", [f"@{k}" for k in dks],
                          {mod: [get.get((mod, "distinct_items", k)) or 0.0 for k in dks] for mod in models}, "{:,.0f}"))

    if ks and dks:
        k, dk = (50 if 50 in ks else ks[0]), (100 if 100 in dks else dks[0])
        points = {mod: (get[(mod, "distinct_items", dk)], get[(mod, "hr", k)]) for mod in models
                  if (mod, "distinct_items", dk) in get and (mod, "hr", k) in get}
        sections.append("<h2>Accuracy vs diversity</h2>" + scatter(
            f"HR@{k} against distinct items in the top-{dk} lists", points, f"distinct items @{dk}", f"HR@{k}"))

    aug_stats = [m for m in metrics if m["stage"] == "augment"]
    strategies = sorted({m["model"] for m in aug_stats})
    if strategies:
        aget = {(m["model"], m["metric"]): m["value"] for m in aug_stats}
        sections.append("<h2>Augmentation by strategy (teacher: base)</h2>" + _table(
            ["strategy", "rows", "positives", "distinct items", "long-tail share", "score p10/p50/p90",
             "weight p10/p50/p90"],
            [[s, _fmt(aget.get((s, "rows"))), _fmt(aget.get((s, "positives"))), _fmt(aget.get((s, "distinct_aug_items"))),
              _fmt(aget.get((s, "long_tail_share"))),
              " / ".join(_fmt(aget.get((s, f"score_p{q}"))) for q in (10, 50, 90)),
              " / ".join(_fmt(aget.get((s, f"weight_p{q}"))) for q in (10, 50, 90))] for s in strategies]))
        sections.append(_bars("augmented rows and distinct items", ["rows", "distinct items"],
                              {s: [aget.get((s, "rows")) or 0.0, aget.get((s, "distinct_aug_items")) or 0.0]
                               for s in strategies}, "{:,.0f}"))
        aug = ctx.read("augmented_positives").where(F.col("model_version") == "base")
        for col, lo, hi in (("score", -1.0, 1.0), ("weight", 0.0, 1.0)):
            binned = aug.select("strategy", F.least(F.floor((F.col(col) - lo) / (hi - lo) * BINS), F.lit(BINS - 1))
                                .cast("int").alias("b")).groupBy("strategy", "b").count().collect()
            hist = {s: [0.0] * BINS for s in strategies}
            for r in binned:
                if r["strategy"] in hist and r["b"] is not None and 0 <= r["b"] < BINS:
                    hist[r["strategy"]][r["b"]] = float(r["count"])
            labels = [f"{lo + (hi - lo) * (i + 0.5) / BINS:.2f}" for i in range(BINS)]
            sections.append(_bars(f"{col} distribution (rows per bin)", labels, hist, "{:,.0f}"))

    recall = [m for m in metrics if m["stage"] == "retrieve" and m["metric"] == "ann_recall"]
    if recall:
        sections.append(f"<h2>Approximate retrieval ({html.escape(ctx.cfg.retrieve.index)}): recall against exact "
                        "search</h2>" + _table(["list", "k", "recall@k"], [[m["model"], str(m["k"]), _fmt(m["value"])]
                                                                          for m in sorted(recall, key=lambda m: m["model"])]))

    train = [m for m in metrics if m["stage"] == "train_base" or m["stage"].endswith(".train")]
    tget = {(m["model"], m["metric"]): m["value"] for m in train}
    tmodels = list(dict.fromkeys(m["model"] for m in train))
    if tmodels:
        sections.append("<h2>Training</h2>" + _table(
            ["model", "val HR", "best epoch", "epochs run", "examples/s", "wall s"],
            [[mod, *[_fmt(tget.get((mod, met))) for met in ("val_hr", "best_epoch", "epochs_run", "examples_per_s",
                                                            "train_wall_s")]] for mod in tmodels]))

    if ctx.warehouse.exists("tuning"):
        sections.append(_tuning([r.asDict() for r in ctx.read("tuning").collect()]))

    held = []
    for table in ("user_embeddings", "item_embeddings", "neighbours", "augmented_positives"):
        counts = ctx.read(table).groupBy("model_version").count().collect() if ctx.warehouse.exists(table) else []
        held += [[table, r["model_version"], _fmt(float(r["count"]))] for r in sorted(counts, key=lambda r: r[0])]
    if held:
        sections.append("<h2>Model versions in this run's tables</h2><p>The final student's vectors and i2i lists "
                        "are the run's product (stage export_student).</p>" + _table(["table", "model_version", "rows"],
                                                                                     held))

    cfg = ctx.cfg
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>divspa run {html.escape(ctx.run_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
svg{{margin:0.5em 1em 0.5em 0}}</style></head><body>
<h1>divspa run {html.escape(ctx.run_id)}</h1>
<p>Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from the run's Delta tables under
<code>{html.escape(ctx.warehouse.root)}</code>. Source: {html.escape(cfg.source.format)}; base model
{html.escape(cfg.model.arch)}; sampler
{html.escape(cfg.augment.sampler)}, k={cfg.augment.k}, m={cfg.augment.m}, candidates ranked by
{html.escape(cfg.augment.rank_by)}{" (the paper's rule)" if cfg.augment.rank_by == "teacher" else ""},
beta={html.escape(_betas(cfg))},
mix-up in {html.escape(cfg.divspa.mixup)} space, strategies {html.escape(", ".join(cfg.augment.strategies) or "none")}.</p>
{"".join(sections)}
</body></html>"""
    path = storage.join(cfg.run_dir, "report.html")
    storage.settings().write_text(path, page)
    return path
