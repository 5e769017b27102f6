"""The pipeline: stages in order, each skipped when this run already committed its outputs."""

from __future__ import annotations

import logging
from typing import Any

from divspa.config import ConfigError
from divspa.runtime import RunContext
from divspa.stages import Stage

log = logging.getLogger(__name__)

STAGES: tuple[Stage, ...] = (
    Stage("ingest", ("clicks", "clicks_quarantine", "user_features", "item_features"),
          "read and validate the click log into Delta"),
    Stage("split", ("split_clicks",), "train/test split (one global time cut, or each user's latest clicks)"),
    Stage("prepare", ("train_examples", "user_histories"), "build training examples and user histories"),
    Stage("train_base", ("metrics",), "train the base model (model.arch, the teacher)", artifacts=True),
    Stage("export", ("user_embeddings", "item_embeddings"), "export the teacher's user and item vectors"),
    Stage("retrieve", ("neighbours",), "faiss top-k neighbours (u2i, i2i, u2u) of the teacher's vectors"),
    Stage("augment", ("augmented_positives",), "re-score and sample weighted augmented positives"),
    Stage("train_divspa", ("metrics",),
          "train the DivSPA student with the mix-up loss (rounds of self-distillation)", artifacts=True),
    Stage("export_student", ("user_embeddings", "item_embeddings", "neighbours"),
          "export the final student's user/item vectors and its i2i neighbours (the run's product)"),
    Stage("evaluate", ("metrics",), "HR/NDCG@K and diversity of every model; HTML report"),
    Stage("publish", ("runs",), "check the quality gates; record the run, published or not, in the runs table",
          always=True),
)
BY_NAME = {s.name: s for s in STAGES}


def run_stage(ctx: RunContext, stage: Stage) -> dict[str, Any] | None:
    """Run one stage unless its outputs for this run are committed (then skip, unless forced)."""
    if not ctx.force and stage.done(ctx):
        log.info("stage %s: outputs for run %s already committed; skipping (use --force to redo)",
                 stage.name, ctx.run_id)
        return None
    with ctx.timed(stage.name) as info:
        info.update(stage.run(ctx))
    return info


def run_pipeline(ctx: RunContext, stages: list[str] | None = None) -> dict[str, dict[str, Any]]:
    names = stages or [s.name for s in STAGES]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ConfigError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(BY_NAME)}")
    for stage in STAGES:
        if stage.name in names:
            run_stage(ctx, stage)
    return ctx.stats
