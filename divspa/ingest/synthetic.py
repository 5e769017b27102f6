"""Deterministic synthetic click logs with the structure of real feeds, streamed through Spark.

Structure: Zipf item popularity that drifts between an early and a late regime; items grouped
in interest clusters of unequal size; each user holds a few interests whose weights drift over
their active window, plus a share of exploratory clicks; log-normal activity per user. Users
and items carry categorical features correlated with their clusters (three a side, or as many as
the wide-log settings ask, with Zipf-distributed values, informative and noise fields and a
multi-valued tag field).

Users are generated in fixed blocks seeded by (seed, block id), and the item catalogue by
(seed), so the data depends only on the config, never on the number of partitions or
executors, and no task holds more than one block of users.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from divspa.config import SyntheticConfig

CLICK_SCHEMA = T.StructType([
    T.StructField("raw_user", T.LongType()),
    T.StructField("raw_item", T.LongType()),
    T.StructField("raw_time", T.TimestampType()),
])
FEATURE_SCHEMA = T.StructType([T.StructField("id", T.LongType()), T.StructField("features", T.ArrayType(T.StringType()))])
_ARROW_CLICKS = pa.schema([("raw_user", pa.int64()), ("raw_item", pa.int64()), ("raw_time", pa.timestamp("us", tz="UTC"))])
_ARROW_FEATURES = pa.schema([("id", pa.int64()), ("features", pa.list_(pa.string()))])
AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")


@dataclass(frozen=True)
class Params:
    """The generator's inputs as a hashable value (shipped to executors, key of their cache)."""

    seed: int
    num_users: int
    num_items: int
    mean_clicks: float
    max_clicks: int
    num_clusters: int
    max_interests: int
    popularity_exponent: float
    explore_prob: float
    days: int
    start_us: int
    bad_row_fraction: float
    users_per_block: int
    extra_user_fields: int = 0
    extra_item_fields: int = 0
    values_per_field: int = 1000
    value_exponent: float = 1.1
    informative_share: float = 0.5
    item_tags: int = 0

    @classmethod
    def of(cls, cfg: SyntheticConfig, seed: int) -> Params:
        start = dt.datetime.fromisoformat(cfg.start_date)
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
        return cls(seed, cfg.num_users, cfg.num_items, cfg.mean_clicks_per_user, cfg.max_clicks_per_user,
                   min(cfg.num_clusters, cfg.num_items), cfg.max_interests_per_user, cfg.popularity_exponent,
                   cfg.explore_prob, cfg.days, int(start.timestamp() * 1_000_000), cfg.bad_row_fraction,
                   cfg.users_per_block, cfg.extra_user_fields, cfg.extra_item_fields, cfg.values_per_field,
                   cfg.value_exponent, cfg.informative_share, cfg.item_tags)

    @property
    def num_blocks(self) -> int:
        return -(-self.num_users // self.users_per_block)


@dataclass(frozen=True)
class Catalogue:
    item_cluster: np.ndarray  # cluster of each item
    cluster_pop: np.ndarray  # share of all popularity held by each cluster
    order: np.ndarray  # item ids grouped by cluster
    seg_end: np.ndarray  # end offset of each cluster's segment in `order`
    cdf: tuple[np.ndarray, np.ndarray]  # per regime (early, late): within-segment CDF + cluster index
    early_rank: np.ndarray  # popularity rank of each item in the early regime


@lru_cache(maxsize=4)
def catalogue(params: Params) -> Catalogue:
    rng = np.random.default_rng([params.seed, 0xCA7A])
    k, n = params.num_clusters, params.num_items
    size_w = (np.arange(k) + 1.0) ** -0.7
    item_cluster = rng.choice(k, n, p=size_w / size_w.sum())
    item_cluster[rng.permutation(n)[:k]] = np.arange(k)  # every cluster holds at least one item
    early_rank = rng.permutation(n)
    late_rank = early_rank.copy()
    moved = rng.choice(n, size=n * 3 // 10, replace=False)  # 30% of items change popularity over time
    late_rank[moved] = late_rank[rng.permutation(moved)]
    order = np.argsort(item_cluster, kind="stable")
    seg_end = np.searchsorted(item_cluster[order], np.arange(k), side="right")
    seg_start = np.concatenate([[0], seg_end[:-1]])
    cdfs = []
    for rank in (early_rank, late_rank):
        w = (rank[order] + 1.0) ** -params.popularity_exponent
        cs = np.cumsum(w)
        before = np.concatenate([[0.0], cs])[seg_start]
        total = cs[seg_end - 1] - before
        cluster_of_pos = item_cluster[order]
        cdf = (cs - before[cluster_of_pos]) / total[cluster_of_pos]
        cdf[seg_end - 1] = 1.0
        cdfs.append(cdf + cluster_of_pos)
    pop = np.bincount(item_cluster, weights=(early_rank + 1.0) ** -params.popularity_exponent, minlength=k)
    return Catalogue(item_cluster, pop / pop.sum(), order, seg_end, (cdfs[0], cdfs[1]), early_rank)


@dataclass
class Block:
    users: np.ndarray
    clusters: np.ndarray  # (users, max_interests) interest clusters
    user: np.ndarray  # per click
    item: np.ndarray
    time_us: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    region: np.ndarray


def generate_block(params: Params, block: int) -> Block:
    cat = catalogue(params)
    rng = np.random.default_rng([params.seed, 0xB10C, block])
    lo = block * params.users_per_block
    users = np.arange(lo, min(lo + params.users_per_block, params.num_users), dtype=np.int64)
    n, m, k = len(users), params.max_interests, params.num_clusters
    sigma = 1.0
    counts = np.clip(np.rint(rng.lognormal(np.log(params.mean_clicks) - sigma**2 / 2, sigma, n)), 1,
                     params.max_clicks).astype(np.int64)
    n_int = 1 + rng.binomial(m - 1, 0.4, n) if m > 1 else np.ones(n, dtype=np.int64)
    clusters = rng.choice(k, size=(n, m), p=cat.cluster_pop)
    mask = np.arange(m)[None, :] < n_int[:, None]
    w0 = rng.gamma(1.0, size=(n, m)) * mask
    w1 = rng.gamma(1.0, size=(n, m)) * mask
    w0 /= w0.sum(axis=1, keepdims=True)
    w1 /= w1.sum(axis=1, keepdims=True)
    horizon = params.days * 86400.0
    start = rng.random(n) * horizon * 0.7
    end = np.minimum(start + horizon * (0.3 + 0.7 * rng.random(n)), horizon)
    idx = np.repeat(np.arange(n), counts)
    t = start[idx] + rng.random(len(idx)) * (end - start)[idx]
    f = t / horizon
    w = (1 - f)[:, None] * w0[idx] + f[:, None] * w1[idx]
    slot = np.minimum((rng.random(len(idx))[:, None] > np.cumsum(w, axis=1)).sum(axis=1), m - 1)
    cl = clusters[idx, slot]
    explore = rng.random(len(idx)) < params.explore_prob
    cl[explore] = rng.choice(k, int(explore.sum()), p=cat.cluster_pop)
    late = rng.random(len(idx)) < f
    u = 1.0 - rng.random(len(idx))  # in (0, 1]: lands inside the cluster's CDF segment
    items = np.empty(len(idx), dtype=np.int64)
    for regime, sel in ((0, ~late), (1, late)):
        pos = np.searchsorted(cat.cdf[regime], cl[sel] + u[sel], side="left")
        items[sel] = cat.order[np.minimum(pos, cat.seg_end[cl[sel]] - 1)]
    age = rng.integers(0, len(AGE_BUCKETS), n)
    gender = rng.integers(0, 2, n)
    region = np.where(rng.random(n) < 0.6, clusters[:, 0] % 50, rng.integers(0, 50, n))
    return Block(users, clusters, users[idx], items, params.start_us + (t * 1e6).astype(np.int64), age, gender, region)


def _click_batches(params: Params, blocks: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in blocks:
        for block_id in batch.column(0).to_numpy():
            b = generate_block(params, int(block_id))
            user, item, ts = b.user, b.item, b.time_us
            item_mask = None
            if params.bad_row_fraction > 0:
                user, item, ts, item_mask = _corrupt(params, int(block_id), user, item, ts)
            yield pa.RecordBatch.from_arrays([
                pa.array(user, pa.int64()),
                pa.array(item, pa.int64(), mask=item_mask),
                pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            ], schema=_ARROW_CLICKS)


def _corrupt(params: Params, block: int, user: np.ndarray, item: np.ndarray, ts: np.ndarray):
    """Inject bad rows (null items, ancient timestamps, exact duplicates) for quarantine demos."""
    rng = np.random.default_rng([params.seed, 0xBAD, block])
    bad = rng.random(len(user)) < params.bad_row_fraction
    kind = rng.integers(0, 3, len(user))
    null_item = bad & (kind == 0)
    ts = np.where(bad & (kind == 1), np.int64(-2_208_988_800_000_000), ts)  # 1900-01-01
    dup = np.flatnonzero(bad & (kind == 2))
    user = np.concatenate([user, user[dup]])
    item = np.concatenate([item, item[dup]])
    ts = np.concatenate([ts, ts[dup]])
    mask = np.concatenate([null_item, np.zeros(len(dup), dtype=bool)])
    return user, item, ts, mask


def _user_feature_batches(params: Params, blocks: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in blocks:
        for block_id in batch.column(0).to_numpy():
            b = generate_block(params, int(block_id))
            feats = [[f"age={AGE_BUCKETS[a]}", f"gender={'MF'[g]}", f"region={r}", *wide]
                     for a, g, r, wide in zip(b.age.tolist(), b.gender.tolist(), b.region.tolist(),
                                              wide_tokens(params, "u", b.users, b.clusters[:, 0]), strict=True)]
            yield pa.RecordBatch.from_arrays([pa.array(b.users), pa.array(feats, pa.list_(pa.string()))],
                                             schema=_ARROW_FEATURES)


def hash_uniform(seed: int, salt: int, ids: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, salt, id): splitmix64 of the id."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + salt) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@lru_cache(maxsize=8)
def _zipf_cdf(values: int, exponent: float) -> np.ndarray:
    cdf = np.cumsum((np.arange(values) + 1.0) ** -exponent)
    return cdf / cdf[-1]


def _zipf_ranks(params: Params, salt: int, ids: np.ndarray) -> np.ndarray:
    """A Zipf rank in [0, values_per_field) per id, drawn from a hash of (seed, salt, id)."""
    cdf = _zipf_cdf(params.values_per_field, params.value_exponent)
    rank = np.searchsorted(cdf, hash_uniform(params.seed, salt, ids), side="right")
    return np.minimum(rank, params.values_per_field - 1)


def wide_values(params: Params, side: str, ids: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """[len(ids), fields] values of a side's extra fields: field f's value is a Zipf rank drawn from
    a hash of (seed, side, f, id); an informative field shifts it by a per-field stride times the
    cluster (the item's, or the user's main interest), so each cluster has its own head values."""
    fields = params.extra_user_fields if side == "u" else params.extra_item_fields
    informative = round(params.informative_share * fields)
    out = np.empty((len(ids), fields), dtype=np.int64)
    for f in range(fields):
        rank = _zipf_ranks(params, (2 if side == "u" else 3) * 1_000_000 + f, ids)
        out[:, f] = (rank + cluster * (7919 * f + 1)) % params.values_per_field if f < informative else rank
    return out


def wide_tokens(params: Params, side: str, ids: np.ndarray, cluster: np.ndarray) -> list[list[str]]:
    """Each row's extra tokens ("u3=17", "i0=5", and for items up to item_tags "tag=..." tokens,
    one multi-valued field whose values follow the item's cluster); empty lists by default."""
    fields = wide_values(params, side, ids, cluster)
    rows = [[f"{side}{f}={v}" for f, v in enumerate(row)] for row in fields.tolist()]
    if side == "i" and params.item_tags:
        tags = np.stack([_zipf_ranks(params, 4_000_000 + j, ids) for j in range(params.item_tags)], axis=1)
        tags = (tags + cluster[:, None] * 31) % params.values_per_field
        for row, item_tags in zip(rows, tags.tolist(), strict=True):
            row.extend(f"tag={t}" for t in dict.fromkeys(item_tags))
    return rows


def _item_feature_batches(params: Params, ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    cat = catalogue(params)
    for batch in ids:
        items = batch.column(0).to_numpy()
        noisy = hash_uniform(params.seed, 1, items) < 0.15
        random_cat = (hash_uniform(params.seed, 2, items) * params.num_clusters).astype(np.int64)
        category = np.where(noisy, random_cat, cat.item_cluster[items])
        tier = np.minimum(cat.early_rank[items] * 10 // params.num_items, 9)
        creator = (items * 2654435761) % max(params.num_items // 20, 1)
        feats = [[f"category={c}", f"tier={t}", f"creator={cr}", *wide]
                 for c, t, cr, wide in zip(category.tolist(), tier.tolist(), creator.tolist(),
                                           wide_tokens(params, "i", items, cat.item_cluster[items]), strict=True)]
        yield pa.RecordBatch.from_arrays([pa.array(items), pa.array(feats, pa.list_(pa.string()))],
                                         schema=_ARROW_FEATURES)


def synthetic_clicks(spark: SparkSession, cfg: SyntheticConfig, seed: int) -> DataFrame:
    params = Params.of(cfg, seed)
    blocks = spark.range(0, params.num_blocks, numPartitions=min(cfg.partitions, params.num_blocks))
    return blocks.mapInArrow(lambda it: _click_batches(params, it), CLICK_SCHEMA)


def synthetic_user_features(spark: SparkSession, cfg: SyntheticConfig, seed: int) -> DataFrame:
    params = Params.of(cfg, seed)
    blocks = spark.range(0, params.num_blocks, numPartitions=min(cfg.partitions, params.num_blocks))
    return blocks.mapInArrow(lambda it: _user_feature_batches(params, it), FEATURE_SCHEMA)


def synthetic_item_features(spark: SparkSession, cfg: SyntheticConfig, seed: int) -> DataFrame:
    params = Params.of(cfg, seed)
    ids = spark.range(0, params.num_items, numPartitions=min(cfg.partitions, params.num_items))
    return ids.mapInArrow(lambda it: _item_feature_batches(params, it), FEATURE_SCHEMA)
