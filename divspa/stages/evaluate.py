"""Stage `evaluate`: HR@K / NDCG@K of every trained model and the popularity baseline."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.dataset as pads

from divspa.models.checkpoint import load_checkpoint
from divspa.models.data import stream_tables
from divspa.models.evaluate import EvalResult, Scorer, evaluate, model_scorer, popularity_scorer
from divspa.runtime import RunContext
from divspa.stages import Stage
from divspa.stages.train_base import BASE_VERSION, checkpoint_path

log = logging.getLogger(__name__)
NAME = "evaluate"
COLUMNS = ["user_id", "history", "user_features", "train_items", "test_items"]


def evaluate_scorer(ctx: RunContext, scorer: Scorer, vocab) -> EvalResult:
    ecfg = ctx.cfg.eval
    dataset = ctx.warehouse.dataset("user_histories")
    tables = stream_tables(dataset, COLUMNS, pads.field("run_id") == ctx.run_id, ecfg.batch_size,
                           limit=ecfg.max_users)
    return evaluate(scorer, tables, vocab, ecfg.ks)


def run(ctx: RunContext) -> dict[str, Any]:
    base = load_checkpoint(checkpoint_path(ctx, BASE_VERSION))
    results = {
        "popularity": evaluate_scorer(ctx, popularity_scorer(base.item_counts), base.vocab),
        BASE_VERSION: evaluate_scorer(ctx, model_scorer(base), base.vocab),
    }
    rows = [row for name, res in results.items() for row in res.rows(name)]
    ctx.write_metrics(NAME, rows)
    summary: dict[str, Any] = {}
    for name, res in results.items():
        figures = {f"{m}@{k}": round(res.metric(m, k), 4) for m in ("hr", "ndcg") for k in sorted(res.hits)}
        log.info("%s: %s over %d test pairs of %d users", name, figures, res.pairs, res.users)
        summary[name] = figures
    return summary


STAGE = Stage(NAME, ("metrics",), run, "HR/NDCG@K of the models and the popularity baseline")
