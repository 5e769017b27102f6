"""Stage `evaluate`: accuracy and diversity of every model of the run, and the HTML report.

Models: the popularity baseline, the base model (teacher) and each DivSPA student, all through
the same exact top-K code over the same test users.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.dataset as pads

from divspa import storage
from divspa.long_tail import long_tail_mask
from divspa.models.checkpoint import load_checkpoint
from divspa.models.encoding import Vocab
from divspa.models.evaluate import (
    EvalResult,
    Scorer,
    evaluate,
    model_scorer,
    popularity_scorer,
)
from divspa.reader import stream_tables
from divspa.report import write_report
from divspa.runtime import RunContext
from divspa.stages.train_base import BASE_VERSION, checkpoint_path
from divspa.stages.train_divspa import student_version

log = logging.getLogger(__name__)
NAME = "evaluate"
COLUMNS = ["user_id", "history", "user_features", "train_items", "test_items"]


def evaluate_scorer(ctx: RunContext, scorer: Scorer, vocab: Vocab) -> EvalResult:
    ecfg = ctx.cfg.eval
    dataset = ctx.warehouse.dataset("user_histories")
    tables = stream_tables(dataset, COLUMNS, pads.field("run_id") == ctx.run_id, ecfg.batch_size,
                           limit=ecfg.max_users)
    return evaluate(scorer, tables, vocab, ecfg.ks, ecfg.diversity_ks)


def run(ctx: RunContext) -> dict[str, Any]:
    base = load_checkpoint(checkpoint_path(ctx, BASE_VERSION))
    models: dict[str, tuple[Scorer, Vocab]] = {"popularity": (popularity_scorer(base.item_counts), base.vocab),
                                               BASE_VERSION: (model_scorer(base), base.vocab)}
    for r in range(1, ctx.cfg.divspa.rounds + 1):
        path = checkpoint_path(ctx, student_version(r))
        if storage.settings().is_file(path):
            student = load_checkpoint(path)
            models[student_version(r)] = (model_scorer(student), student.vocab)
    tail = long_tail_mask(base.item_counts, ctx.cfg.augment.long_tail_share)
    rows = []
    summary: dict[str, Any] = {}
    for name, (scorer, vocab) in models.items():
        res = evaluate_scorer(ctx, scorer, vocab)
        rows += res.rows(name) + res.diversity_rows(name, tail)
        figures = {f"{m}@{k}": round(res.metric(m, k), 4) for m in ("hr", "ndcg") for k in sorted(res.hits)}
        log.info("%s: %s over %d test pairs of %d users", name, figures, res.pairs, res.users)
        summary[name] = figures
    ctx.write_metrics(NAME, rows)
    report = write_report(ctx.warehouse, ctx.cfg)
    return {"report": str(report), **summary}
