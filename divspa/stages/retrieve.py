"""Stage `retrieve`: the teacher's top-k neighbours for u2i, i2i and u2u into `neighbours`.

u2i: every user against the items, minus the user's train items (true top k after exclusion).
i2i: every item that occurs as a train positive against the items, minus itself.
u2u: every user against the users, minus itself (k_users neighbours).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from divspa import storage
from divspa.augmentation.job import fitted_clicks
from divspa.config import RetrieveConfig
from divspa.retrieval.index import found_share
from divspa.retrieval.spark_knn import exact_topk_of_few, knn, prepare_corpus
from divspa.runtime import RunContext
from divspa.schemas import load_schema
from divspa.stages.train_base import BASE_VERSION

log = logging.getLogger(__name__)
NAME = "retrieve"


def embeddings(ctx: RunContext, table: str, id_col: str, version: str) -> DataFrame:
    df = ctx.warehouse.read(table, where={"run_id": ctx.run_id, "model_version": version})
    return df.select(F.col(id_col).alias("id"), "vector")


# strategy -> (queries, corpus (id, vector), k): what was searched, for the recall check
Searches = dict[str, tuple[DataFrame, DataFrame, int]]


def neighbours(ctx: RunContext, version: str, scratch: str, strategies: set[str],
               searches: Searches | None = None) -> DataFrame:
    rcfg, seed = ctx.cfg.retrieve, ctx.cfg.run.seed
    users = embeddings(ctx, "user_embeddings", "user_id", version)
    items = embeddings(ctx, "item_embeddings", "item_id", version)
    parts: list[DataFrame] = []
    searches = {} if searches is None else searches
    # Each list indexes its corpus for its own queries: an IVF index's nprobe is tuned on them
    # (u2i: a sample of the users; i2i, u2u: the corpus searching itself).
    if "u2i" in strategies:
        item_corpus = prepare_corpus(items, rcfg, scratch, "items-u2i", seed, storage.settings(), rcfg.k,
                                     queries=users)
        seen = (fitted_clicks(ctx.read("train_examples"))
                .groupBy(F.col("user_id").alias("id")).agg(F.sort_array(F.collect_set("item_id")).alias("exclude")))
        q = users.join(seen, "id", "left").select(
            F.col("id").alias("query_id"), "vector",
            F.coalesce("exclude", F.array().cast("array<bigint>")).alias("exclude"))
        parts.append(knn(q, item_corpus, rcfg.k, rcfg.partitions, rcfg.query_batch).withColumn("strategy", F.lit("u2i")))
        searches["u2i"] = (q, items, rcfg.k)
    if "i2i" in strategies:
        item_corpus = prepare_corpus(items, rcfg, scratch, "items-i2i", seed, storage.settings(), rcfg.k,
                                     self_search=True)
        positives = ctx.read("train_examples").select(F.col("item_id").alias("id")).distinct()
        q = items.join(positives, "id", "left_semi").select(
            F.col("id").alias("query_id"), "vector", F.array(F.col("id")).alias("exclude"))
        parts.append(knn(q, item_corpus, rcfg.k, rcfg.partitions, rcfg.query_batch).withColumn("strategy", F.lit("i2i")))
        searches["i2i"] = (q, items, rcfg.k)
    if "u2u" in strategies:
        user_corpus = prepare_corpus(users, rcfg, scratch, "users", seed, storage.settings(), rcfg.k_users,
                                     self_search=True)
        q = users.select(F.col("id").alias("query_id"), "vector", F.array(F.col("id")).alias("exclude"))
        parts.append(knn(q, user_corpus, rcfg.k_users, rcfg.partitions, rcfg.query_batch).withColumn("strategy", F.lit("u2u")))
        searches["u2u"] = (q, users, rcfg.k_users)
    if not parts:  # every strategy ablated: an empty neighbour list for this teacher
        return ctx.spark.createDataFrame([], load_schema("neighbours").spark)
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out.select("strategy", "query_id", "rank", "neighbour_id", "score",
                      F.lit(version).alias("model_version"), F.lit(ctx.run_id).alias("run_id"))


def recall(ctx: RunContext, version: str, searches: Searches) -> dict[str, float]:
    """recall@k of the written approximate lists against exact search, per list, on the same
    `retrieve.recall_sample` queries whoever runs it (the smallest hashes of (seed, query id)).

    What an IVF or HNSW setting loses depends on the vectors (their clustering, the corpus size),
    so it is measured on every run's own, not once on a benchmark's."""
    rcfg, seed = ctx.cfg.retrieve, ctx.cfg.run.seed
    if rcfg.index == "flat" or not rcfg.recall_sample:
        return {}
    written = ctx.read("neighbours").where(F.col("model_version") == version)
    out = {}
    for strategy, (queries, corpus, k) in sorted(searches.items()):
        approx = written.where(F.col("strategy") == strategy)
        out[strategy], n = ann_recall(queries, corpus, approx, k, rcfg, seed)
        level = logging.WARNING if out[strategy] < rcfg.min_recall else logging.INFO
        log.log(level, "%s: %s recall@%d %.4f against exact search on %d sampled queries%s", version, strategy, k,
                out[strategy], n, f" (below retrieve.min_recall {rcfg.min_recall}: raise ivf_nprobe / "
                "hnsw_ef_search, or use index: flat)" if level == logging.WARNING else "")
    ks = {s: k for s, (_, _, k) in searches.items()}
    ctx.write_metrics(NAME, [(s, "ann_recall", ks[s], v) for s, v in out.items()])
    return out


def ann_recall(queries: DataFrame, corpus: DataFrame, approx: DataFrame, k: int, rcfg: RetrieveConfig,
               seed: int) -> tuple[float, int]:
    """(mean recall@k, queries checked): `approx` (query_id, score) against an exact search
    of `corpus` for the `rcfg.recall_sample` queries with the smallest hash of (seed, query id).

    A found neighbour counts when its score reaches the k-th exact score: users (or items) with
    equal vectors tie, and which of them an index returns is not a loss (on the 2M-user rung's
    vectors two exact searches that break ties differently agreed on 93.7 % of ids).
    The sample is computed once and collected (its exact top k is one pass over the corpus,
    `exact_topk_of_few`; at 1M users an exact index file of the whole corpus took 23 s of u2u's
    check); only the sampled queries' approximate rows are read back (the u2i list is 94M rows
    at 2M users)."""
    sample = (queries.orderBy(F.xxhash64(F.lit(seed), "query_id"), "query_id").limit(rcfg.recall_sample)
              .select("query_id", "vector", "exclude").toArrow())
    if not sample.num_rows:
        return 1.0, 0
    rows, _, scores = exact_topk_of_few(sample, corpus, k)
    qids = sample.column("query_id").to_numpy()
    # each sampled query's exact scores (rows come sorted by query): queries with none are not counted
    exact: dict[int, np.ndarray] = {}
    if len(rows):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        exact = dict(zip(qids[rows[starts]].tolist(), np.split(scores, starts[1:]), strict=True))
    wanted = approx.sparkSession.createDataFrame([(int(q),) for q in qids], "query_id bigint")
    found: dict[int, list[float]] = {}
    for r in approx.join(F.broadcast(wanted), "query_id", "left_semi").select("query_id", "score").collect():
        found.setdefault(r["query_id"], []).append(r["score"])
    per_query = [found_share(np.asarray(found.get(q, []), np.float32), e) for q, e in exact.items()]
    return (float(np.mean(per_query)) if per_query else 1.0), len(per_query)


def needed_lists(augment_strategies: list[str]) -> set[str]:
    """The neighbour lists augmentation needs: u2u2i is built from u2u."""
    return {{"u2i": "u2i", "i2i": "i2i", "u2u2i": "u2u"}[s] for s in augment_strategies}


def retrieve(ctx: RunContext, stage: str, version: str, strategies: set[str] | None = None) -> dict[str, Any]:
    """`version`'s neighbour lists into `neighbours` (default: those augment.strategies needs)."""
    wanted = needed_lists(ctx.cfg.augment.strategies) if strategies is None else strategies
    scratch = storage.join(ctx.cfg.output_dir, "scratch", ctx.run_id, f"{stage}-{uuid.uuid4().hex[:8]}")
    searches: Searches = {}
    try:
        result = ctx.write(stage, "neighbours", neighbours(ctx, version, scratch, wanted, searches),
                           partition={"model_version": version},
                           metadata={"divspa.model": version})
        recalls = recall(ctx, version, searches) if stage == NAME else {}
    finally:
        storage.settings().delete_dir(scratch)
    counts = {r["strategy"]: r["count"] for r in ctx.read("neighbours").where(F.col("model_version") == version)
              .groupBy("strategy").count().collect()}
    return {"model_version": version, "rows": result.rows, **{f"{k}_rows": v for k, v in sorted(counts.items())},
            **{f"{k}_recall": round(v, 4) for k, v in recalls.items()}}


def run(ctx: RunContext) -> dict[str, Any]:
    return retrieve(ctx, NAME, BASE_VERSION)
