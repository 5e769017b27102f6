"""DivSPA positive augmentation (paper §3.2) as Spark SQL over the neighbours table.

For each train positive (u, v+):
  u2i    the user's u2i neighbours;
  i2i    v+'s i2i neighbours;
  u2u2i  the train clicks of the user's u2u neighbours (real positives of similar users);
each candidate re-scored by the teacher as s(u, v) = cosine(u, v) (vectors joined, never
collected), v+ and u's fitted train items excluded (augment.exclude), the top k kept per strategy, m sampled, and
weighted w_i = s(u, v_i) / sum_j s(u, v_j) within (u, v+, strategy).

With augment.popularity_debias = g > 0 (not in the paper) every candidate is ranked, drawn and
weighted by its `selection` s(u, v) * (n_max / n_v)^g instead of s(u, v), n_v being v's fitted
train clicks: the teacher ranks what it saw often high, so its top-k alone narrows the student;
the discount trades some of that agreement for long-tail candidates. g = 0 is the paper's rule.
Two more options leave the paper's rule for the same reason: augment.u2i_skip = n drops the
teacher's n best u2i candidates, augment.dedup keeps an item in one strategy per positive, and
augment.rank_by = neighbour ranks, draws and weighs i2i candidates by s(v+, v) and u2u2i ones by
the summed similarity to u of the similar users who clicked them, instead of s(u, v).

Sampling is Efraimidis-Spirakis weighted sampling without replacement: candidate i gets the key
log(r_i) / p_i and the m largest keys win, where r_i is a uniform number hashed from
(seed, u, v+, strategy, candidate). Every draw is a pure function of its row, so the table is
identical whatever the partitioning, executor count or retry history.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from divspa.config import AugmentConfig

GROUP = ["user_id", "item_id", "strategy"]
_TWO53 = float(2**53)


def _cosine_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        n = batch.num_rows
        u = _matrix(batch.column("_u"), n)
        v = _matrix(batch.column("_v"), n)
        # float64 products summed along each row: the same bits whatever the batch holds.
        dot = (u * v).sum(axis=1)
        norms = np.sqrt((u * u).sum(axis=1) * (v * v).sum(axis=1))
        score = (dot / np.maximum(norms, 1e-12)).astype(np.float32)
        keep = [i for i, name in enumerate(batch.schema.names) if name not in ("_u", "_v")]
        cols = [batch.column(i) for i in keep] + [pa.array(score, pa.float32())]
        yield pa.RecordBatch.from_arrays(cols, names=[batch.schema.names[i] for i in keep] + ["score"])


def _matrix(col: pa.Array, n: int) -> np.ndarray:
    flat = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float64)
    return flat.reshape(n, -1) if n else np.empty((0, 0))


def rescore(df: DataFrame, user_vecs: DataFrame, item_vecs: DataFrame) -> DataFrame:
    """Add the teacher's s(u, v) = cosine(u, v_aug) to rows with user_id and aug_item_id.

    The vectors are joined onto the rows (no table reaches the driver) and the cosine is computed
    with numpy on Arrow batches: Spark's array lambdas cost ~30 us a row, numpy well under 1.
    """
    uv = user_vecs.select(F.col("id").alias("user_id"), F.col("vector").alias("_u"))
    iv = item_vecs.select(F.col("id").alias("aug_item_id"), F.col("vector").alias("_v"))
    joined = df.join(uv, "user_id").join(iv, "aug_item_id")
    fields = [f for f in joined.schema.fields if f.name not in ("_u", "_v")]
    schema = T.StructType([*fields, T.StructField("score", T.FloatType())])
    return joined.mapInArrow(_cosine_batches, schema)


@cache
def beta_rank_probs(k: int, alpha: float) -> tuple[tuple[float, ...], ...]:
    """probs[n-1][r-1]: chance that a Beta(alpha, alpha) draw over n ranked candidates picks rank r."""
    grid = 4096
    out = []
    for n in range(1, k + 1):
        x = (np.arange(n * grid) + 0.5) / (n * grid)  # midpoints: the density is finite there
        dens = x ** (alpha - 1) * (1 - x) ** (alpha - 1)
        mass = dens.reshape(n, grid).sum(axis=1)
        out.append(tuple(float(v) for v in mass / mass.sum()))
    return tuple(out)


def ranked(scored: DataFrame, keys: list[str]) -> DataFrame:
    """`rank` 1..n by `selection` within each `keys` group (ties: smaller item id)."""
    w = Window.partitionBy(*keys).orderBy(F.col("selection").desc(), F.col("aug_item_id").asc())
    return scored.withColumn("rank", F.row_number().over(w))


def top_k(scored: DataFrame, keys: list[str], k: int, skip: int = 0) -> DataFrame:
    """Keep the k best candidates by `selection` per `keys` group after the `skip` best, ranked 1..k."""
    kept = ranked(scored, keys).where((F.col("rank") > skip) & (F.col("rank") <= skip + k))
    return kept.withColumn("rank", F.col("rank") - skip) if skip else kept


# Which strategy keeps an item that several offer for one positive (augment.dedup): the real clicks
# of similar users first, then the positive's neighbours, the teacher's own top-k last.
DEDUP_ORDER = ("u2u2i", "i2i", "u2i")


def dedup(cands: DataFrame) -> DataFrame:
    """One row per (user, positive, candidate item), from the first strategy of DEDUP_ORDER that
    offers it; each strategy's survivors re-ranked 1..n by `selection`."""
    first = F.array_position(F.array(*[F.lit(s) for s in DEDUP_ORDER]), F.col("strategy"))
    one = Window.partitionBy("user_id", "item_id", "aug_item_id").orderBy(first)
    kept = cands.withColumn("_d", F.row_number().over(one)).where(F.col("_d") == 1).drop("_d")
    return ranked(kept, GROUP)


def sample(candidates: DataFrame, cfg: AugmentConfig, seed: int) -> DataFrame:
    """m of each group's ranked candidates (user_id, item_id, strategy, aug_item_id, rank, score and
    optionally selection, which is the score that draws and weighs them when present)."""
    whole = Window.partitionBy(*GROUP).orderBy("aug_item_id").rowsBetween(Window.unboundedPreceding,
                                                                          Window.unboundedFollowing)
    by = "selection" if "selection" in candidates.columns else "score"
    floor = F.greatest(F.col(by), F.lit(cfg.min_score))
    n = F.count(F.lit(1)).over(whole)
    if cfg.sampler == "uniform":
        prob = F.lit(1.0) / n
    elif cfg.sampler == "importance":
        prob = floor / F.sum(floor).over(whole)
    else:
        table = F.array(*[F.array(*[F.lit(p) for p in row]) for row in beta_rank_probs(cfg.k, cfg.beta_alpha)])
        prob = F.element_at(F.element_at(table, n.cast("int")), F.col("rank"))
    h = F.xxhash64(F.lit(seed), "user_id", "item_id", "strategy", "aug_item_id")
    uniform = (F.pmod(h, F.lit(2**53)).cast("double") + F.lit(0.5)) / F.lit(_TWO53)
    keyed = candidates.withColumn("_key", F.log(uniform) / prob)
    pick = Window.partitionBy(*GROUP).orderBy(F.col("_key").desc(), F.col("aug_item_id").asc())
    chosen = keyed.withColumn("_pick", F.row_number().over(pick)).where(F.col("_pick") <= cfg.m)
    weight = floor / F.sum(floor).over(whole)
    return chosen.withColumn("weight", weight.cast("float")).drop("_key", "_pick", "selection")


def excluded_clicks(examples: DataFrame, exclude: str) -> DataFrame:
    """(user_id, item_id) pairs no candidate may be (augment.exclude): the fitted train clicks, or
    every train click with the validation slice."""
    rows = examples if exclude == "train" else examples.where(~F.col("is_val"))
    return rows.select("user_id", "item_id").distinct()


def debias_factors(cfg: AugmentConfig, item_clicks: DataFrame | None) -> tuple[DataFrame, float] | None:
    """(aug_item_id, _f = (n_max / n_v)^g) per item, and the factor of an item no fitted click holds
    (seen only in validation: counted as clicked once); None for the paper's rule (g = 0).

    item_clicks: (item_id, n) fitted train clicks per item, small enough to broadcast (one row an
    item). Built once per augmentation and shared by every strategy: n_max costs one Spark job.
    """
    if not cfg.popularity_debias or item_clicks is None:
        return None
    top = float(item_clicks.agg(F.max("n")).first()[0] or 1)
    factor = item_clicks.select(F.col("item_id").alias("aug_item_id"), F.pow(
        F.lit(top) / F.col("n").cast("double"), F.lit(cfg.popularity_debias)).alias("_f"))
    return F.broadcast(factor), top ** cfg.popularity_debias


def selection(scored: DataFrame, factors: tuple[DataFrame, float] | None, by: str = "score") -> DataFrame:
    """Add `selection`: the teacher's score (or the strategy's neighbour similarity `_nb`, by =
    "_nb", then dropped), times the item's popularity discount when there is one."""
    if factors is None:
        return scored.withColumn("selection", F.col(by).cast("double")).drop("_nb")
    factor, unseen = factors
    with_f = scored.join(factor, "aug_item_id", "left")
    f = F.coalesce(F.col("_f"), F.lit(unseen))
    return with_f.withColumn("selection", (F.col(by) * f).cast("double")).drop("_f", "_nb")


def candidates(cfg: AugmentConfig, positives: DataFrame, seen: DataFrame, neighbours: DataFrame,
               peer_clicks: DataFrame, user_vecs: DataFrame, item_vecs: DataFrame,
               item_clicks: DataFrame | None = None) -> DataFrame:
    """Top-k re-scored candidates per (user, positive, strategy) for the enabled strategies.

    positives: (user_id, item_id) train positives; seen: (user_id, item_id) every train click;
    neighbours: (strategy, query_id, neighbour_id); peer_clicks: (user_id, item_id) clicks that u2u
    neighbours contribute to u2u2i; *_vecs: (id, vector) of the teacher; item_clicks: (item_id, n)
    fitted clicks per item, for augment.popularity_debias.
    """
    seen_pairs = seen.select("user_id", F.col("item_id").alias("aug_item_id"))
    factors = debias_factors(cfg, item_clicks)

    parts: list[DataFrame] = []
    per_user: list[tuple[str, DataFrame]] = []  # candidates shared by all of a user's positives
    if "u2i" in cfg.strategies:
        per_user.append(("u2i", neighbours.where(F.col("strategy") == "u2i").select(
            F.col("query_id").alias("user_id"), F.col("neighbour_id").alias("aug_item_id"), F.lit("u2i").alias("strategy"))))
    own = cfg.rank_by == "neighbour"  # i2i and u2u2i ranked by their own similarity, not s(u, v)
    if "u2u2i" in cfg.strategies:
        similar = neighbours.where(F.col("strategy") == "u2u").select(
            F.col("query_id").alias("user_id"), F.col("neighbour_id").alias("_peer"), F.col("score").alias("_sim"))
        clicks = peer_clicks.select(F.col("user_id").alias("_peer"), F.col("item_id").alias("aug_item_id"))
        peers = similar.join(clicks, "_peer")
        if own:  # the item's support among similar users: the sum of their similarities to u
            pooled = peers.groupBy("user_id", "aug_item_id").agg(F.sum("_sim").alias("_nb"))
        else:
            pooled = peers.select("user_id", "aug_item_id").distinct()
        per_user.append(("u2u2i", pooled.withColumn("strategy", F.lit("u2u2i"))))
    for name, df in per_user:
        fresh = df.join(seen_pairs, ["user_id", "aug_item_id"], "left_anti")
        scored = selection(rescore(fresh, user_vecs, item_vecs), factors, "_nb" if own and name == "u2u2i" else "score")
        kept = top_k(scored, ["user_id", "strategy"], cfg.k, skip=cfg.u2i_skip if name == "u2i" else 0)
        parts.append(positives.join(kept, "user_id"))
    if "i2i" in cfg.strategies:
        similar = neighbours.where(F.col("strategy") == "i2i").select(
            F.col("query_id").alias("item_id"), F.col("neighbour_id").alias("aug_item_id"), F.col("score").alias("_nb"))
        pairs = positives.join(similar, "item_id").join(seen_pairs, ["user_id", "aug_item_id"], "left_anti")
        scored = rescore(pairs.withColumn("strategy", F.lit("i2i")), user_vecs, item_vecs)
        parts.append(top_k(selection(scored, factors, "_nb" if own else "score"), GROUP, cfg.k))
    if not parts:  # every strategy ablated
        return positives.select("user_id", "item_id", F.lit("").alias("strategy"), F.lit(0).cast("bigint").alias(
            "aug_item_id"), F.lit(0).alias("rank"), F.lit(0.0).cast("float").alias("score"),
            F.lit(0.0).cast("double").alias("selection")).limit(0)
    cols = ["user_id", "item_id", "strategy", "aug_item_id", "rank", "score", "selection"]
    out = parts[0].select(*cols)
    for p in parts[1:]:
        out = out.unionByName(p.select(*cols))
    return dedup(out) if cfg.dedup and len(parts) > 1 else out
