"""Stage `publish`: check the run's quality gates and record it in the `runs` table.

Runs every time it is asked for (it is cheap, and its inputs may have been redone since): a run
that was gated yesterday and re-evaluated today is judged on today's figures. The outcome
decides what trainers read as "latest" (divspa/runs.py); the command then exits 3 when the run
is not published (divspa/errors.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from pyspark.sql import functions as F

from divspa import __version__, runs, storage, tuning
from divspa.report import write_report
from divspa.runtime import RunContext
from divspa.schemas import load_schema
from divspa.stages import STAGES
from divspa.stages.train_base import BASE_VERSION
from divspa.stages.train_divspa import final_version

log = logging.getLogger(__name__)
NAME = "publish"


def figures(ctx: RunContext) -> runs.Figures:
    """This run's popularity, base and final-student values of the metrics the gates read, at publish.k."""
    if not ctx.warehouse.exists("metrics"):
        return {}
    rows = (ctx.read("metrics").where((F.col("stage") == "evaluate") & F.col("metric").isin(*runs.PUBLISH_METRICS)
                                      & (F.col("k") == ctx.cfg.publish.k)).select("model", "metric", "value").collect())
    roles = {"popularity": "popularity", BASE_VERSION: "base", final_version(ctx): "divspa"}
    out: runs.Figures = {m: dict.fromkeys(roles.values()) for m in runs.PUBLISH_METRICS}
    for r in rows:
        if r["model"] in roles:
            out[r["metric"]][roles[r["model"]]] = r["value"]
    return out


def record(ctx: RunContext, outcome: str, reason: str | None, gates: list[runs.Gate] | None = None,
           got: runs.Figures | None = None, augmented_rows: int | None = None) -> None:
    """Write (replace) this run's row of the runs table."""
    pcfg, wh = ctx.cfg.publish, ctx.warehouse
    got = got or {}
    headline = got.get(pcfg.metric, {})
    base_of = lambda metric: got.get(metric, {}).get("base")  # noqa: E731
    tuned = tuning.chosen(ctx) if ctx.cfg.tune.trials else None
    stages = [s.name for s in STAGES if s.name != NAME and ctx.stage_done(s.name, list(s.outputs))]
    versions = {t: wh.version(t) for t in wh.tables() if t != runs.TABLE}
    row = (outcome, reason, runs.gates_json(gates) if gates is not None else None, f"{pcfg.metric}@{pcfg.k}",
           headline.get("popularity"), headline.get("base"), headline.get("divspa"), final_version(ctx), augmented_rows,
           ",".join(stages), json.dumps({k: v["wall_s"] for k, v in ctx.stats.items() if "wall_s" in v}),
           json.dumps(versions), runs.config_hash(ctx.cfg), __version__, dt.datetime.now(dt.UTC), ctx.run_id,
           base_of("distinct_share"), base_of("gini"), json.dumps(tuned, sort_keys=True) if tuned else None)
    df = ctx.spark.createDataFrame([row], load_schema(runs.TABLE).spark)
    ctx.write(NAME if outcome != runs.FAILED else "failure", runs.TABLE, df)


def run(ctx: RunContext) -> dict[str, Any]:
    wh = ctx.warehouse
    got = figures(ctx)
    augmented = wh.row_count("augmented_positives", where={"run_id": ctx.run_id}) \
        if wh.exists("augmented_positives") else None
    recorded = runs.records(wh)  # read once: the previous published run and this run's last record
    previous = runs.latest_of(recorded, exclude=ctx.run_id)
    gates = runs.check_gates(ctx.cfg.publish, got, augmented or None, previous)
    outcome, reason = runs.outcome(gates)
    for g in gates:
        log.info("gate %s: %s (%s)", g.name, "pass" if g.passed else "FAIL", g.detail)
    before = next((r for r in recorded if r["run_id"] == ctx.run_id), None)
    headline = got.get(ctx.cfg.publish.metric, {})
    verdict = (outcome, reason, runs.gates_json(gates), headline.get("popularity"), headline.get("base"),
               headline.get("divspa"), augmented, runs.config_hash(ctx.cfg))
    if before is not None and verdict == tuple(before[k] for k in (
            "outcome", "reason", "gates", "popularity", "base", "divspa", "augmented_rows", "config_hash")) \
            and "evaluate" not in ctx.stats:  # (a re-evaluated run gets a fresh record: the report dates it)
        log.info("run %s: record unchanged (%s); nothing to write", ctx.run_id, outcome)
        report = storage.join(ctx.cfg.run_dir, "report.html")
    else:
        record(ctx, outcome, reason, gates, got, augmented)
        report = write_report(ctx.warehouse, ctx.cfg)  # again, now with the gates at the top
    if outcome == runs.PUBLISHED:
        log.info("run %s published: trainers reading run='latest' now get it", ctx.run_id)
    else:
        log.warning("run %s NOT published: %s", ctx.run_id, reason)
    return {"outcome": outcome, "reason": reason, "gates_passed": sum(g.passed for g in gates),
            "gates": len(gates), "report": str(report)}
