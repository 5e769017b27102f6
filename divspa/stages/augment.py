"""Stage `augment`: sample weighted augmented positives into `augmented_positives`.

Also records, per strategy, what a reviewer of the augmentation asks first: how many rows,
how many distinct augmented items, what share of them is long-tail, and the score and weight
distributions (log and metrics table).
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from divspa.augmentation.items import ItemSide, item_side
from divspa.augmentation.job import augmented_rows, candidates, fitted_clicks, user_rows
from divspa.runtime import RunContext
from divspa.spark import session_conf
from divspa.stages.retrieve import embeddings
from divspa.stages.train_base import BASE_VERSION

log = logging.getLogger(__name__)
NAME = "augment"
QUANTILES = (0.1, 0.5, 0.9)


def inputs(ctx: RunContext, version: str) -> tuple[DataFrame, ItemSide]:
    """One row per user with a positive (see divspa.augmentation.job.user_rows) and the broadcast items' side."""
    acfg = ctx.cfg.augment
    examples = ctx.read("train_examples")
    positives = fitted_clicks(examples)
    nb = ctx.read("neighbours").where(F.col("model_version") == version)
    # u2u2i: each similar user's recent clicks (their last model.history_len train clicks)
    peers = ctx.read("user_histories").select("user_id", F.explode("history").alias("item_id")).distinct()
    item_clicks = positives.groupBy("item_id").agg(F.count(F.lit(1)).alias("n")) if acfg.popularity_debias else None
    users = user_rows(acfg, positives, nb, peers, embeddings(ctx, "user_embeddings", "user_id", version))
    return users, item_side(acfg, embeddings(ctx, "item_embeddings", "item_id", version), nb, item_clicks)


def candidate_rows(ctx: RunContext, version: str) -> DataFrame:
    """Every positive's ranked candidates per strategy, before sampling (see divspa.augmentation.job.candidates)."""
    return candidates(ctx.cfg.augment, *inputs(ctx, version))


def augmented(ctx: RunContext, version: str) -> DataFrame:
    acfg = ctx.cfg.augment
    rows = augmented_rows(acfg, *inputs(ctx, version), ctx.cfg.run.seed)
    return rows.select("user_id", "item_id", "strategy", "aug_item_id", "rank", "score", "weight",
                       F.lit(acfg.sampler).alias("sampler"), F.lit(version).alias("model_version"),
                       F.lit(ctx.run_id).alias("run_id"))


def augmentation_stats(ctx: RunContext, aug: DataFrame) -> list[tuple[str, str, int | None, float]]:
    """Per-strategy figures of the written table (reads it back: what was committed is measured)."""
    counts = ctx.read("train_examples").groupBy("item_id").agg(F.count(F.lit(1)).alias("n"))
    # Long tail: every item below the head, the head being the most clicked (1 - long_tail_share) of items.
    ranked = counts.withColumn("_pr", F.percent_rank().over(Window.orderBy(F.col("n").desc(), F.col("item_id"))))
    tail = ranked.where(F.col("_pr") >= 1 - ctx.cfg.augment.long_tail_share).select(F.col("item_id").alias("aug_item_id"))
    tail = tail.withColumn("_tail", F.lit(1))
    # Three grouped passes, not one: several distinct aggregates in one pass make Spark copy every
    # row once per distinct set (Expand): about 3x these three at 1M users (issue 18).
    per_item = aug.groupBy("strategy", "aug_item_id").agg(F.count(F.lit(1)).alias("_n"))
    items = (per_item.join(tail, "aug_item_id", "left").groupBy("strategy")
             .agg(F.sum("_n").alias("rows"), F.count(F.lit(1)).alias("distinct_aug_items"),
                  (F.sum(F.col("_n") * F.coalesce("_tail", F.lit(0))) / F.sum("_n")).alias("long_tail_share")))
    positives = aug.groupBy("strategy", "user_id", "item_id").count().groupBy("strategy").agg(
        F.count(F.lit(1)).alias("positives"))
    quantiles = aug.groupBy("strategy").agg(F.percentile_approx("score", list(QUANTILES), 10000).alias("score_q"),
                                            F.percentile_approx("weight", list(QUANTILES), 10000).alias("weight_q"))
    per = items.join(positives, "strategy").join(quantiles, "strategy").collect()
    rows: list[tuple[str, str, int | None, float]] = []
    for r in sorted(per, key=lambda r: r["strategy"]):
        s = r["strategy"]
        rows += [(s, "rows", None, r["rows"]), (s, "distinct_aug_items", None, r["distinct_aug_items"]),
                 (s, "long_tail_share", None, r["long_tail_share"]), (s, "positives", None, r["positives"])]
        for q, sv, wv in zip(QUANTILES, r["score_q"], r["weight_q"], strict=True):
            rows += [(s, f"score_p{int(q * 100)}", None, sv), (s, f"weight_p{int(q * 100)}", None, wv)]
        log.info("augment %s: %d rows for %d positives, %d distinct items (%.1f%% long-tail), "
                 "score p10/p50/p90 %s, weight p10/p50/p90 %s", s, r["rows"], r["positives"],
                 r["distinct_aug_items"], 100 * r["long_tail_share"],
                 [round(v, 3) for v in r["score_q"]], [round(v, 3) for v in r["weight_q"]])
    return rows


def augment(ctx: RunContext, stage: str, version: str) -> dict[str, Any]:
    acfg = ctx.cfg.augment
    shuffle = {"spark.sql.shuffle.partitions": str(acfg.partitions)} if acfg.partitions else {}
    with session_conf(ctx.spark, shuffle):
        result = ctx.write(stage, "augmented_positives", augmented(ctx, version),
                           partition={"model_version": version},
                           metadata={"divspa.model": version, "divspa.sampler": acfg.sampler})
    stats = augmentation_stats(ctx, ctx.read("augmented_positives").where(F.col("model_version") == version))
    ctx.write_metrics(stage, stats)
    figures = {f"{m}.{n}": v for m, n, _, v in stats if n in ("rows", "distinct_aug_items", "long_tail_share")}
    return {"model_version": version, "rows": result.rows, **figures}


def run(ctx: RunContext) -> dict[str, Any]:
    return augment(ctx, NAME, BASE_VERSION)
