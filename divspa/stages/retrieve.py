"""Stage `retrieve`: the teacher's top-k neighbours for u2i, i2i and u2u into `neighbours`.

u2i: every user against the items, minus the user's train items (true top k after exclusion).
i2i: every item that occurs as a train positive against the items, minus itself.
u2u: every user against the users, minus itself (k_users neighbours).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from divspa import storage
from divspa.augment import excluded_clicks
from divspa.retrieval.spark_knn import knn, prepare_corpus
from divspa.runtime import RunContext
from divspa.schemas import load_schema
from divspa.stages.train_base import BASE_VERSION

log = logging.getLogger(__name__)
NAME = "retrieve"


def embeddings(ctx: RunContext, table: str, id_col: str, version: str) -> DataFrame:
    df = ctx.warehouse.read(table, where={"run_id": ctx.run_id, "model_version": version})
    return df.select(F.col(id_col).alias("id"), "vector")


def neighbours(ctx: RunContext, version: str, scratch: str, strategies: set[str]) -> DataFrame:
    rcfg, seed = ctx.cfg.retrieve, ctx.cfg.run.seed
    users = embeddings(ctx, "user_embeddings", "user_id", version)
    items = embeddings(ctx, "item_embeddings", "item_id", version)
    parts: list[DataFrame] = []
    if {"u2i", "i2i"} & set(strategies):
        item_corpus = prepare_corpus(items, rcfg, scratch, "items", seed, storage.settings())
    if "u2i" in strategies:
        seen = (excluded_clicks(ctx.read("train_examples"), ctx.cfg.augment.exclude)
                .groupBy(F.col("user_id").alias("id")).agg(F.sort_array(F.collect_set("item_id")).alias("exclude")))
        q = users.join(seen, "id", "left").select(
            F.col("id").alias("query_id"), "vector",
            F.coalesce("exclude", F.array().cast("array<bigint>")).alias("exclude"))
        parts.append(knn(q, item_corpus, rcfg.k, rcfg.partitions, rcfg.query_batch).withColumn("strategy", F.lit("u2i")))
    if "i2i" in strategies:
        positives = ctx.read("train_examples").select(F.col("item_id").alias("id")).distinct()
        q = items.join(positives, "id", "left_semi").select(
            F.col("id").alias("query_id"), "vector", F.array(F.col("id")).alias("exclude"))
        parts.append(knn(q, item_corpus, rcfg.k, rcfg.partitions, rcfg.query_batch).withColumn("strategy", F.lit("i2i")))
    if "u2u" in strategies:
        user_corpus = prepare_corpus(users, rcfg, scratch, "users", seed, storage.settings())
        q = users.select(F.col("id").alias("query_id"), "vector", F.array(F.col("id")).alias("exclude"))
        parts.append(knn(q, user_corpus, rcfg.k_users, rcfg.partitions, rcfg.query_batch).withColumn("strategy", F.lit("u2u")))
    if not parts:  # every strategy ablated: an empty neighbour list for this teacher
        return ctx.spark.createDataFrame([], load_schema("neighbours").spark)
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.select("strategy", "query_id", "rank", "neighbour_id", "score",
                      F.lit(version).alias("model_version"), F.lit(ctx.run_id).alias("run_id"))


def needed_lists(augment_strategies: list[str]) -> set[str]:
    """The neighbour lists augmentation needs: u2u2i is built from u2u."""
    return {{"u2i": "u2i", "i2i": "i2i", "u2u2i": "u2u"}[s] for s in augment_strategies}


def retrieve(ctx: RunContext, stage: str, version: str, strategies: set[str] | None = None) -> dict[str, Any]:
    """`version`'s neighbour lists into `neighbours` (default: those augment.strategies needs)."""
    wanted = needed_lists(ctx.cfg.augment.strategies) if strategies is None else strategies
    scratch = storage.join(ctx.cfg.output_dir, "scratch", ctx.run_id, f"{stage}-{uuid.uuid4().hex[:8]}")
    try:
        result = ctx.write(stage, "neighbours", neighbours(ctx, version, scratch, wanted),
                           partition={"model_version": version},
                           metadata={"divspa.model": version})
    finally:
        storage.settings().delete_dir(scratch)
    counts = {r["strategy"]: r["count"] for r in ctx.read("neighbours").where(F.col("model_version") == version)
              .groupBy("strategy").count().collect()}
    return {"model_version": version, "rows": result.rows, **{f"{k}_rows": v for k, v in sorted(counts.items())}}


def run(ctx: RunContext) -> dict[str, Any]:
    return retrieve(ctx, NAME, BASE_VERSION)
