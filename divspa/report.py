"""The run's self-contained HTML report: verdict, accuracy, diversity, augmentation, run trend.

The page is a view of the warehouse's tables (metrics, runs, tuning, augmented_positives) and
nothing else, so `divspa report RUN_ID` rebuilds it at any time without re-evaluating. It reads
them with delta-rs (no JVM): the command starts in a second. Charts come from divspa/charts.py
(matplotlib, inline SVG): the file opens anywhere, offline.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from divspa import charts, runs, storage
from divspa.config import Config
from divspa.delta import Warehouse

BINS = 20
TREND_RUNS = 10
SHARES = ("distinct_share", "long_tail_share", "coverage")  # metrics that are fractions: shown as %
COUNTS = ("distinct_items", "rows", "positives", "distinct_aug_items", "best_epoch", "epochs_run")


# --- reading (delta-rs) --------------------------------------------------------------------------


def _rows(wh: Warehouse, table: str, where: pc.Expression, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if not wh.exists(table):
        return []
    return wh.dataset(table).to_table(columns=columns, filter=where).to_pylist()


def _histograms(wh: Warehouse, run_id: str, teacher: str, strategies: list[str]) -> dict[str, tuple]:
    """Rows per bin of score and weight for each strategy, counted batch by batch (a Video-size
    run has tens of millions of augmented rows; none is held whole)."""
    ranges = {"score": (-1.0, 1.0), "weight": (0.0, 1.0)}
    counts = {col: {s: np.zeros(BINS) for s in strategies} for col in ranges}
    where = (pc.field("run_id") == run_id) & (pc.field("model_version") == teacher)
    scanner = wh.dataset("augmented_positives").scanner(columns=["strategy", "score", "weight"],
                                                                    filter=where)
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        strategy = batch.column("strategy").to_numpy(zero_copy_only=False)
        for col, (lo, hi) in ranges.items():
            values = np.clip(batch.column(col).to_numpy(zero_copy_only=False), lo, hi)
            for s in strategies:
                counts[col][s] += np.histogram(values[strategy == s], bins=BINS, range=(lo, hi))[0]
    return {f"teacher's {col}": (np.linspace(lo, hi, BINS + 1), {s: c.tolist() for s, c in counts[col].items()})
            for col, (lo, hi) in ranges.items()}


# --- formatting ----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(v: float | None, kind: str = "score") -> str:
    """A number as its kind reads: counts with separators, shares as %, scores to 4 significant
    digits (0.08 % of slots and 0.0008 are different statements)."""
    if v is None:
        return "-"
    if kind == "count":
        return f"{v:,.0f}"
    if kind == "share":
        return f"{v:.2%}"
    return f"{v:.4g}"


def _kind(metric: str) -> str:
    return "share" if metric in SHARES else "count" if metric in COUNTS else "score"


# --- sections ------------------------------------------------------------------------------------


def _gates(rec: dict[str, Any] | None, evaluated_at: dt.datetime | None) -> str:
    """The run's publishing verdict, first thing on the page (divspa/runs.py)."""
    if rec is None or (evaluated_at is not None and rec["recorded_at"] < evaluated_at):
        return ('<p class="gate">Quality gates: not checked yet for these figures (stage publish runs after '
                "evaluate).</p>")
    colour = charts.OUTCOME_COLOURS.get(rec["outcome"], "#333")
    head = (f'<p class="gate" style="border-left:6px solid {colour};padding-left:8px"><b>{html.escape(rec["outcome"].upper())}'
            f"</b>" + (f": {html.escape(rec['reason'])}" if rec["reason"] else
                       ": every gate passed; trainers reading the latest published run read this one") + "</p>")
    gates = json.loads(rec["gates"]) if rec["gates"] else []
    return head + (_table(["gate", "passed", "value", "threshold", "detail"],
                          [[g["name"], "yes" if g["passed"] else "NO", fmt(g["value"]), g["threshold"], g["detail"]]
                           for g in gates]) if gates else "")


def _accuracy(get: dict, models: list[str], ks: list[int]) -> str:
    rows = [[mod, *[fmt(get.get((mod, met, k))) for met in ("hr", "ndcg") for k in ks]] for mod in models]
    chart = charts.grouped_bars("HR@K and NDCG@K", {
        met.upper(): ([f"@{k}" for k in ks], {mod: [get.get((mod, met, k)) or 0.0 for k in ks] for mod in models})
        for met in ("hr", "ndcg")})
    return ("<h2>Accuracy (test pairs, train items masked)</h2>"
            + _table(["model", *[f"{met.upper()}@{k}" for met in ("hr", "ndcg") for k in ks]], rows) + chart)


def _diversity(get: dict, models: list[str], dks: list[int], pk: int) -> str:
    """One row per (K, model): five columns fit any page width, however many Ks are evaluated."""
    metrics = [m for m in ("distinct_items", "distinct_share", "gini", "long_tail_share")
               if any((mod, m, k) in get for mod in models for k in dks)]
    names = {"distinct_items": "distinct items", "distinct_share": "distinct share of slots", "gini": "Gini",
             "long_tail_share": "long-tail share"}
    rows = [[f"@{k}", mod, *[fmt(get.get((mod, m, k)), _kind(m)) for m in metrics]] for k in dks for mod in models]
    share = get.get(("base", "distinct_share", pk))
    concentration = "" if share is None else (
        f"<p>The base's top-{pk} lists fill <b>{share:.2%}</b> of their slots with distinct items (Gini "
        f"{fmt(get.get(('base', 'gini', pk)))}). The paper's base filled 0.08 % of its top-100 slots; augmentation "
        "widened bases that concentrated like it and narrowed spread ones (docs/RESULTS.md).</p>")
    chart = charts.grouped_bars("distinct items in the union of the test users' top-K lists", {
        "distinct items": ([f"@{k}" for k in dks], {mod: [get.get((mod, "distinct_items", k)) or 0.0 for k in dks]
                                                    for mod in models})}, counts=True)
    return ("<h2>Diversity of the test users' top-K lists</h2>" + concentration
            + _table(["K", "model", *[names[m] for m in metrics]], rows) + chart)


def _frontier(get: dict, models: list[str], ks: list[int], dks: list[int]) -> str:
    k, dk = (50 if 50 in ks else ks[0]), (100 if 100 in dks else dks[0])
    points = {mod: (get[(mod, "distinct_items", dk)], get[(mod, "hr", k)]) for mod in models
              if (mod, "distinct_items", dk) in get and (mod, "hr", k) in get}
    if not points:
        return ""
    return "<h2>Accuracy vs diversity</h2>" + charts.frontier(
        f"HR@{k} against distinct items in the top-{dk} lists (up and right is better)", points,
        f"distinct items @{dk}", f"HR@{k}")


def _augmentation(wh: Warehouse, run_id: str, aug_stats: list[dict[str, Any]]) -> str:
    strategies = sorted({m["model"] for m in aug_stats})
    if not strategies:
        return ""
    aget = {(m["model"], m["metric"]): m["value"] for m in aug_stats}
    table = _table(
        ["strategy", "rows", "positives", "distinct items", "long-tail share", "score p10/p50/p90",
         "weight p10/p50/p90"],
        [[s, fmt(aget.get((s, "rows")), "count"), fmt(aget.get((s, "positives")), "count"),
          fmt(aget.get((s, "distinct_aug_items")), "count"), fmt(aget.get((s, "long_tail_share")), "share"),
          " / ".join(fmt(aget.get((s, f"score_p{q}"))) for q in (10, 50, 90)),
          " / ".join(fmt(aget.get((s, f"weight_p{q}"))) for q in (10, 50, 90))] for s in strategies])
    sizes = charts.grouped_bars("what each strategy proposed (separate axes: rows run to millions, items to "
                                "thousands)", {
        name: (strategies, {name: [aget.get((s, metric)) or 0.0 for s in strategies]})
        for name, metric in (("augmented rows", "rows"), ("distinct augmented items", "distinct_aug_items"))},
        counts=True)
    section = "<h2>Augmentation by strategy (teacher: base)</h2>" + table + sizes
    if wh.exists("augmented_positives"):
        section += charts.histograms("the teacher's scores and the sampling weights of the augmented rows",
                                     _histograms(wh, run_id, "base", strategies))
    return section


def _training(metrics: list[dict[str, Any]]) -> str:
    train = [m for m in metrics if m["stage"] == "train_base" or m["stage"].endswith(".train")]
    tget = {(m["model"], m["metric"]): m["value"] for m in train}
    tmodels = list(dict.fromkeys(m["model"] for m in train))
    if not tmodels:
        return ""
    cols = (("val_hr", "score"), ("best_epoch", "count"), ("epochs_run", "count"), ("examples_per_s", "count"),
            ("train_wall_s", "count"))
    return "<h2>Training</h2>" + _table(
        ["model", "val HR", "best epoch", "epochs run", "examples/s", "wall s"],
        [[mod, *[fmt(tget.get((mod, met)), kind) for met, kind in cols]] for mod in tmodels])


def _tuning(trials: list[dict[str, Any]]) -> str:
    """Stage tune's trials: what each tried, how it did on validation, which one the models use."""
    if not trials:
        return ""
    trials = sorted(trials, key=lambda r: r["trial"])
    k = trials[0]["val_k"]
    pick = next((r for r in trials if r["chosen"]), None)
    head = (f"<p>{len(trials)} trials scored on the validation slice of train (never on test). "
            + (f"Trial {pick['trial']} was chosen: val HR@{k} {fmt(pick['val_hr'])} against "
               f"{fmt(trials[0]['val_hr'])} with the configured settings (trial 0); the base and the students "
               "trained with its settings.</p>" if pick else "The search has not finished: nothing chosen yet.</p>"))
    chart = charts.trials(f"validation HR@{k} per trial", [r["trial"] for r in trials],
                          [r["val_hr"] or 0.0 for r in trials], [r["state"] for r in trials],
                          pick["trial"] if pick else None, f"val HR@{k}")
    rows = [[f"{r['trial']}{' (chosen)' if r['chosen'] else ''}", r["state"], fmt(r["val_hr"]),
             fmt(r["epochs_run"], "count"), f"{r['seconds']:.0f}",
             ", ".join(f"{key.split('.')[1]}={_short(v)}" for key, v in json.loads(r["params"]).items())]
            for r in trials]
    return ("<h2>Tuning (stage tune)</h2>" + head + chart
            + _table(["trial", "state", f"val HR@{k}", "epochs", "seconds", "settings"], rows))


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _trend(wh: Warehouse, cfg: Config, records: list[dict[str, Any]], models: list[str], dks: list[int],
           augmented: float | None) -> str:
    """This run beside the previous ones of the warehouse: the final student's headline figures
    and the augmented rows, each run marked by its outcome. Read from `runs` and `metrics` only."""
    k = cfg.publish.k
    dk = 100 if 100 in dks else (dks[-1] if dks else k)
    recent = [r for r in records if r["run_id"] != cfg.run_id]
    mine = next((r for r in records if r["run_id"] == cfg.run_id), None)
    students = [m for m in models if m.startswith("divspa-")]
    if mine is None:  # evaluated, not recorded yet: its figures come from its own metrics
        mine = {"run_id": cfg.run_id, "outcome": "pending", "student_version": students[-1] if students else None,
                "augmented_rows": augmented, "recorded_at": None}
    shown = (recent + [mine])[-TREND_RUNS:]
    if len(shown) < 2:
        return ""
    ids = [r["run_id"] for r in shown]
    wanted = (pc.field("stage") == "evaluate") & pc.field("run_id").isin(ids) & pc.field("k").isin([k, dk])
    values = {(m["run_id"], m["model"], m["metric"], m["k"]): m["value"]
              for m in _rows(wh, "metrics", wanted, ["run_id", "model", "metric", "k", "value"])}

    def of(r: dict[str, Any], metric: str, kk: int) -> float | None:
        return values.get((r["run_id"], r["student_version"], metric, kk)) if r["student_version"] else None

    panels = {f"HR@{k}": [of(r, "hr", k) for r in shown], f"NDCG@{k}": [of(r, "ndcg", k) for r in shown],
              f"distinct@{dk}": [of(r, "distinct_items", dk) for r in shown],
              "augmented rows": [float(r["augmented_rows"]) if r["augmented_rows"] is not None else None
                                 for r in shown]}
    current = ids.index(cfg.run_id) + 1
    chart = charts.trend(f"the final student over the last {len(shown)} runs of this warehouse (ringed: this run)",
                         ids, [r["outcome"] for r in shown], panels, (f"distinct@{dk}", "augmented rows"), current)
    rows = [[str(i), r["run_id"] + (" (this run)" if r["run_id"] == cfg.run_id else ""), r["outcome"],
             f"{r['recorded_at']:%Y-%m-%d %H:%M}" if r["recorded_at"] else "-", r["student_version"] or "-",
             *[fmt(panels[p][i - 1], "count" if p in (f"distinct@{dk}", "augmented rows") else "score")
               for p in panels]]
            for i, r in enumerate(shown, 1)]
    return ("<h2>Run over run</h2>" + chart
            + _table(["run", "run id", "outcome", "recorded (UTC)", "student", *panels], rows))


def _held(wh: Warehouse, run_id: str) -> str:
    """Rows per model version, counted from the Parquet footers of the run's partitions (no row is read)."""
    held = []
    for table in ("user_embeddings", "item_embeddings", "neighbours", "augmented_positives"):
        if not wh.exists(table):
            continue
        rows: dict[str, int] = {}
        for frag in wh.dataset(table).get_fragments(filter=pc.field("run_id") == run_id):
            version = str(pads.get_partition_keys(frag.partition_expression)["model_version"])
            rows[version] = rows.get(version, 0) + frag.count_rows()
        held += [[table, v, fmt(n, "count")] for v, n in sorted(rows.items())]
    if not held:
        return ""
    return ("<h2>Model versions in this run's tables</h2><p>The final student's vectors and i2i lists are the run's "
            "product (stage export_student).</p>" + _table(["table", "model_version", "rows"], held))


def _settings(cfg: Config) -> str:
    ssl = f" with RFM (weight {cfg.model.ssl_weight}, temperature {cfg.model.ssl_temperature})" \
        if cfg.model.ssl == "rfm" else ""
    t = cfg.train
    ssl += f" with UFNRec (reverse {t.ufn_reverse}, consistency {t.ufn_consistency}, EMA decay {t.ufn_ema_decay})" \
        if t.false_negatives else ""
    return (f"Source: {html.escape(cfg.source.format)}; base model {html.escape(cfg.model.arch)}{ssl}; sampler "
            f"{html.escape(cfg.augment.sampler)}, k={cfg.augment.k}, m={cfg.augment.m}, candidates ranked by\n"
            f"{html.escape(cfg.augment.rank_by)}{' (the paper’s rule)' if cfg.augment.rank_by == 'teacher' else ''}, "
            f"beta={cfg.divspa.beta},\nmix-up in {html.escape(cfg.divspa.mixup)} space, strategies "
            f"{html.escape(', '.join(cfg.augment.strategies) or 'none')}.")


STYLE = """body{font-family:sans-serif;margin:2em auto;max-width:1100px;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;max-width:100%}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;overflow-wrap:break-word}
th{white-space:nowrap}
td:first-child,th:first-child{text-align:left}
svg.chart{display:block;max-width:100%;height:auto;margin:0.5em 0}"""


def write_report(wh: Warehouse, cfg: Config) -> Path:
    """Render run `cfg.run_id`'s report from the warehouse into its run folder; return its path."""
    run_id = cfg.run_id
    metrics = _rows(wh, "metrics", pc.field("run_id") == run_id)  # one run's figures: a few hundred rows
    ev = [m for m in metrics if m["stage"] == "evaluate"]
    models = list(dict.fromkeys(m["model"] for m in ev))
    get = {(m["model"], m["metric"], m["k"]): m["value"] for m in ev}
    evaluated_at = max((m["created_at"] for m in ev), default=None)
    records = runs.records(wh)
    sections = [_gates(next((r for r in records if r["run_id"] == run_id), None), evaluated_at)]
    ks = sorted({m["k"] for m in ev if m["metric"] == "hr"})
    dks = sorted({m["k"] for m in ev if m["metric"] == "distinct_items"})
    if ks:
        sections.append(_accuracy(get, models, ks))
    if dks:
        sections.append(_diversity(get, models, dks, cfg.publish.k))
    if ks and dks:
        sections.append(_frontier(get, models, ks, dks))
    aug_stats = [m for m in metrics if m["stage"] == "augment"]
    sections.append(_augmentation(wh, run_id, aug_stats))
    recall = sorted((m for m in metrics if m["stage"] == "retrieve" and m["metric"] == "ann_recall"),
                    key=lambda m: m["model"])
    if recall:
        sections.append(f"<h2>Approximate retrieval ({html.escape(cfg.retrieve.index)}): recall against exact "
                        "search</h2>" + _table(["list", "k", "recall@k"],
                                               [[m["model"], str(m["k"]), fmt(m["value"])] for m in recall]))
    sections.append(_training(metrics))
    sections.append(_tuning(_rows(wh, "tuning", pc.field("run_id") == run_id)))
    augmented = sum(m["value"] for m in aug_stats if m["metric"] == "rows") or None
    sections.append(_trend(wh, cfg, records, models, dks, augmented))
    sections.append(_held(wh, run_id))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>divspa run {html.escape(run_id)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>
<h1>divspa run {html.escape(run_id)}</h1>
<p>Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from the Delta tables under
<code>{html.escape(wh.root)}</code>. {_settings(cfg)}</p>
{"".join(sections)}
</body></html>"""
    path = storage.join(cfg.run_dir, "report.html")
    storage.settings().write_text(path, page)
    return path
