"""DivSPA positive augmentation (paper §3.2): one Arrow pass over each user's rows.

For each train positive (u, v+):
  u2i    the user's u2i neighbours;
  i2i    v+'s i2i neighbours;
  u2u2i  the train clicks of the user's u2u neighbours (real positives of similar users);
each candidate re-scored by the teacher as s(u, v) = cosine(u, v), v+ and u's fitted train items
excluded, the top k kept per strategy, m sampled, and weighted
w_i = s(u, v_i) / sum_j s(u, v_j) within (u, v+, strategy).

How it runs, and why (issue 18): Spark gathers one row per user (vector, positives, excluded
items, u2i list, pooled u2u2i items) and every task holds the items' side as one broadcast (item
vectors, each item's i2i list, its popularity discount). A task then re-scores, ranks and samples
a user's candidates in numpy: nothing is shuffled per candidate, no vector is joined onto a
candidate row, and the per-user lists of u2i and u2u2i are ranked once per user, not once per
positive. Spark moves rows per user and writes rows per sampled positive, so the cost grows with
clicks, not with clicks times candidates.

With augment.popularity_debias = g > 0 (not in the paper) every candidate is ranked, drawn and
weighted by its `selection` s(u, v) * (n_max / n_v)^g instead of s(u, v), n_v being v's fitted
train clicks: the teacher ranks what it saw often high, so its top-k alone narrows the student;
the discount trades some of that agreement for long-tail candidates. g = 0 is the paper's rule.
augment.rank_by = neighbour (the default; "teacher" is the paper's rule) ranks, draws and weighs i2i
candidates by s(v+, v) and u2u2i ones by the summed similarity to u of the similar users who
clicked them, instead of s(u, v).

Sampling is Efraimidis-Spirakis weighted sampling without replacement: candidate i gets the key
log(r_i) / p_i and the m largest keys win, where r_i is a uniform number hashed from
(seed, u, v+, strategy, candidate) with Spark's xxhash64 (divspa.xxhash, the same numbers
`F.xxhash64` gives). Every draw is a pure function of its row, so the table is identical whatever
the partitioning, executor count or retry history. Sums are taken in candidate-id order, one term
after the other, as Spark's window sums took them before this pass replaced them: the same seed
gives the same table bit for bit.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from divspa.config import AugmentConfig
from divspa.retrieval.spark_knn import list_vectors
from divspa.xxhash import uniform, xxhash64

log = logging.getLogger(__name__)

GROUP = ["user_id", "item_id", "strategy"]
STRATEGIES = ("u2i", "i2i", "u2u2i")
SAMPLED = "user_id bigint, item_id bigint, strategy string, aug_item_id bigint, rank int, score float, weight float"
CANDIDATES = ("user_id bigint, item_id bigint, strategy string, aug_item_id bigint, rank int, score float, "
              "selection double")
# Positives handled together in one numpy step: bounds a task's memory (i2i re-scores
# positives x retrieve.k vectors at once) whatever the Arrow batch size.
CHUNK_POSITIVES = 4096


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


def fitted_clicks(examples: DataFrame) -> DataFrame:
    """(user_id, item_id) pairs the models are fitted on: no candidate may be one. The validation
    slice is left out, so it is to a student what the test split is, and early stopping judges
    students fairly (excluding it read students' validation HR 0.009-0.016 low on ML-100K)."""
    return examples.where(~F.col("is_val")).select("user_id", "item_id").distinct()


# ---------------------------------------------------------------------------------------------
# The items' side: one broadcast per augmentation.


def find_sorted(sorted_values: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each value in `sorted_values`, clipped to the array; whether it is there)."""
    at = np.minimum(np.searchsorted(sorted_values, values), max(len(sorted_values) - 1, 0))
    found = sorted_values[at] == values if len(sorted_values) else np.zeros(len(values), bool)
    return at, found


@dataclass
class Items:
    """Every item's vector, i2i list and discount, by row of the sorted ids."""

    ids: np.ndarray  # [N] int64, sorted
    vectors: np.ndarray  # [N, d] float32
    i2i: np.ndarray  # [N, K] int64 neighbour ids, -1 past the list's end
    i2i_score: np.ndarray  # [N, K] float32 s(v, neighbour)
    factor: np.ndarray | None  # [N] float64 popularity discount (augment.popularity_debias), else None
    unseen: float  # discount of an item without fitted clicks

    @cached_property
    def sq_norms(self) -> np.ndarray:
        """[N] float64 squared norms, summed as _cosine would sum them per candidate."""
        v = self.vectors.astype(np.float64)
        return (v * v).sum(axis=1)

    @cached_property
    def _lookup(self) -> np.ndarray | None:
        """Row of each id by indexing, when the ids are dense enough (at most 4 slots an item, as in
        ML-100K and the synthetic logs); None: rows() searches the sorted ids."""
        if not len(self.ids) or self.ids[0] < 0 or self.ids[-1] >= 4 * len(self.ids) + 1024:
            return None
        lookup = np.full(int(self.ids[-1]) + 1, -1, np.int64)
        lookup[self.ids] = np.arange(len(self.ids))
        return lookup

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of each id, whether it has one; 0 where not)."""
        lookup = self._lookup
        if lookup is not None:
            inside = (ids >= 0) & (ids < len(lookup))
            at = np.where(inside, lookup[np.where(inside, ids, 0)], -1)
            return np.maximum(at, 0), at >= 0
        return find_sorted(self.ids, ids)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        extra = {} if self.factor is None else {"factor": self.factor}
        np.savez(buf, ids=self.ids, vectors=self.vectors, i2i=self.i2i, i2i_score=self.i2i_score,
                 unseen=np.array([self.unseen]), **extra)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Items:
        z = np.load(io.BytesIO(data))
        return cls(z["ids"], z["vectors"], z["i2i"], z["i2i_score"], z.get("factor"), float(z["unseen"][0]))


_ITEMS: dict[str, Items] = {}  # per Python worker: broadcast digest -> items


@dataclass
class ItemSide:
    """How tasks reach the items' side: a broadcast, loaded once per Python worker."""

    broadcast: object
    key: str
    items: Items | None = None  # the driver's copy: never shipped with the tasks' closures

    def __getstate__(self) -> dict:
        return {"broadcast": self.broadcast, "key": self.key, "items": None}

    def get(self) -> Items:
        if self.key not in _ITEMS:
            _ITEMS.clear()
            _ITEMS[self.key] = Items.from_bytes(self.broadcast.value)  # type: ignore[attr-defined]
        return _ITEMS[self.key]


def _flatten(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(row of each value, flat values) of a list array; null lists are empty."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.repeat(np.arange(len(col)), lengths), pc.list_flatten(col)


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(row of each value, flat values as numpy) of a list column; null lists are empty."""
    rows, values = _flatten(table.column(name))
    return rows, values.to_numpy(zero_copy_only=False)


def item_side(cfg: AugmentConfig, items: DataFrame, neighbours: DataFrame, item_clicks: DataFrame | None) -> ItemSide:
    """Collect the items' vectors, i2i lists and discounts once and broadcast them.

    items: (id, vector); neighbours: this teacher's lists; item_clicks: (item_id, n) fitted clicks
    per item, for augment.popularity_debias. One row an item: it fits where retrieve's own item
    corpus is broadcast. The discount is computed by Spark (its pow) so the table keeps its bits.
    """
    spark = items.sparkSession
    table = items.select("id", "vector").toArrow()
    ids = table.column("id").to_numpy()
    order = np.argsort(ids, kind="stable")
    vectors, ids = list_vectors(table)[order], ids[order].astype(np.int64)
    side = Items(ids, vectors, np.full((len(ids), 0), -1, np.int64), np.zeros((len(ids), 0), np.float32), None, 1.0)
    if "i2i" in cfg.strategies:
        nb = neighbours.where(F.col("strategy") == "i2i").select("query_id", "rank", "neighbour_id", "score").toArrow()
        q, found = side.rows(nb.column("query_id").to_numpy())
        rank = nb.column("rank").to_numpy().astype(np.int64)[found]
        width = int(rank.max()) if len(rank) else 0
        side.i2i = np.full((len(ids), width), -1, np.int64)
        side.i2i_score = np.zeros((len(ids), width), np.float32)
        side.i2i[q[found], rank - 1] = nb.column("neighbour_id").to_numpy()[found]
        side.i2i_score[q[found], rank - 1] = nb.column("score").to_numpy()[found]
    if cfg.popularity_debias and item_clicks is not None:
        top = float(item_clicks.agg(F.max("n")).first()[0] or 1)
        f = item_clicks.select("item_id", F.pow(F.lit(top) / F.col("n").cast("double"),
                                                F.lit(cfg.popularity_debias)).alias("f")).toArrow()
        side.unseen = top ** cfg.popularity_debias  # an item seen only in validation counts as clicked once
        side.factor = np.full(len(ids), side.unseen, np.float64)
        at, found = side.rows(f.column("item_id").to_numpy())
        side.factor[at[found]] = f.column("f").to_numpy()[found]
    return broadcast(spark, side)


def broadcast(spark: SparkSession, items: Items) -> ItemSide:
    data = items.to_bytes()
    log.info("augment: broadcasting %d items' vectors and lists (%.1f MB)", len(items.ids), len(data) / 2**20)
    return ItemSide(spark.sparkContext.broadcast(data), hashlib.sha256(data).hexdigest(), items)


# ---------------------------------------------------------------------------------------------
# The users' side: one row per user with a positive.


def user_rows(cfg: AugmentConfig, positives: DataFrame, neighbours: DataFrame, peer_clicks: DataFrame,
              user_vecs: DataFrame) -> DataFrame:
    """(user_id, _u, pos[, u2i][, peer_sim, peer_items]) per user with a positive and a vector.

    positives: (user_id, item_id) fitted train positives, which are also what no candidate of the
    user may be; neighbours: (strategy, query_id, neighbour_id, score); peer_clicks: (user_id,
    item_id) clicks that u2u neighbours contribute to u2u2i; user_vecs: (id, vector) of the teacher.
    """
    rows = (positives.groupBy("user_id").agg(F.collect_list("item_id").alias("pos"))
            .join(user_vecs.select(F.col("id").alias("user_id"), F.col("vector").alias("_u")), "user_id"))
    if "u2i" in cfg.strategies:
        u2i = neighbours.where(F.col("strategy") == "u2i").groupBy(F.col("query_id").alias("user_id")).agg(
            F.collect_list("neighbour_id").alias("u2i"))
        rows = rows.join(u2i, "user_id", "left")
    if "u2u2i" in cfg.strategies:
        similar = neighbours.where(F.col("strategy") == "u2u").select(
            F.col("query_id").alias("user_id"), F.col("neighbour_id").alias("_peer"), F.col("score").alias("_sim"))
        # Each similar user joins as one row holding their click list, not one row per click: the
        # rows shuffled to the user are k_users, not k_users x clicks, and the Arrow pass pools the
        # items (pooled_peers), not a Spark grouping by (user, item). Repartitioned by user before
        # the grouping: a partial collect_list before the shuffle sorts a whole input split of
        # list rows at once and ran out of execution memory at 2M users (6 GB heap).
        lists = peer_clicks.groupBy(F.col("user_id").alias("_peer")).agg(F.collect_list("item_id").alias("_items"))
        peers = similar.join(lists, "_peer").repartition("user_id").groupBy("user_id").agg(
            F.collect_list(F.struct("_sim", "_items")).alias("_peers"))
        rows = rows.join(peers.select("user_id", F.col("_peers._sim").alias("peer_sim"),
                                      F.col("_peers._items").alias("peer_items")), "user_id", "left")
    return rows


# ---------------------------------------------------------------------------------------------
# numpy: re-score, rank, sample.


def pooled_peers(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, item, support) per distinct (user row, item) that the user's similar users clicked:
    support is the sum of those users' similarities to u (augment.rank_by neighbour). The sums add
    at most k_users float32 values in double, exactly unless their magnitudes differ by more than
    2^29: the order they are added in does not matter."""
    _, sim = _list_column(table, "peer_sim")
    peer_user, lists = _flatten(table.column("peer_items"))  # one item list per similar user, as peer_sim
    peer, items = _flatten(lists)
    user, item = peer_user[peer], items.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((item, user))
    user, item, support = user[order], item[order], sim[peer[order]].astype(np.float64)
    start = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (item[1:] != item[:-1])]) if len(user) else user
    return user[start], item[start], np.add.reduceat(support, start) if len(start) else support


def _cosine(u: np.ndarray, uu: np.ndarray, v: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64 (the same bits whatever else the arrays hold), as float32; uu
    and vv are the rows' squared norms, summed once per user and item, not once per candidate."""
    dot = (u * v).sum(axis=1)
    norms = np.sqrt(uu * vv)
    return (dot / np.maximum(norms, 1e-12)).astype(np.float32)


def ranks_in(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based position of each row of `order` (rows sorted by group first) within its group."""
    g = group[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1] if len(g) else np.zeros(0, np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return np.arange(len(g)) - first + 1


def top_k(group: np.ndarray, aug: np.ndarray, sel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, their rank 1..k): each group's k best by `sel` (ties: smaller id)."""
    order = np.lexsort((aug, -sel, group))
    rank = ranks_in(group, order)
    keep = rank <= k
    return order[keep], rank[keep]


def _sequential_sums(group: np.ndarray, aug: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row: the sum of its group's values added one after another in candidate-id order (how
    Spark's window sum adds them), so a weight has the same bits as before."""
    order = np.lexsort((aug, group))
    pos = ranks_in(group, order) - 1
    ids, slot = np.unique(group[order], return_inverse=True)
    grid = np.zeros((len(ids), int(pos.max()) + 1 if len(pos) else 0))
    grid[slot, pos] = values[order]
    total = np.zeros(len(ids))
    for j in range(grid.shape[1]):  # x + 0.0 == x: padding changes no sum
        total = total + grid[:, j]
    return total[np.searchsorted(ids, group)]


def sample_groups(group: np.ndarray, aug: np.ndarray, sel: np.ndarray, rank: np.ndarray, r: np.ndarray,
                  cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows chosen, their weight): m of each group's candidates by Efraimidis-Spirakis keys
    log(r) / p, p from augment.sampler; weights floor(sel) / their sum over the chosen."""
    floor = np.maximum(sel, cfg.min_score)
    _, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    n = counts[inverse]
    if cfg.sampler == "uniform":
        prob = 1.0 / n.astype(np.float64)
    elif cfg.sampler == "importance":
        prob = floor / _sequential_sums(group, aug, floor)
    else:
        table = np.zeros((cfg.k, cfg.k))
        for i, row in enumerate(beta_rank_probs(cfg.k, cfg.beta_alpha)):
            table[i, :len(row)] = row
        prob = table[n - 1, rank - 1]
    key = np.log(r) / prob
    order = np.lexsort((aug, -key, group))
    chosen = order[ranks_in(group, order) <= cfg.m]
    weight = floor[chosen] / _sequential_sums(group[chosen], aug[chosen], floor[chosen])
    return chosen, weight.astype(np.float32)


@dataclass
class Cands:
    """Candidate rows of one strategy in a chunk: `pos` indexes the chunk's positives."""

    pos: np.ndarray
    aug: np.ndarray
    score: np.ndarray
    sel: np.ndarray
    rank: np.ndarray

    def take(self, idx: np.ndarray) -> Cands:
        return Cands(self.pos[idx], self.aug[idx], self.score[idx], self.sel[idx], self.rank[idx])


class Chunk:
    """One chunk of user rows, flattened: users and their positives (which no candidate may be)."""

    def __init__(self, table: pa.Table, items: Items) -> None:
        self.items = items
        self.user_ids = table.column("user_id").to_numpy().astype(np.int64)
        self.user_vecs = list_vectors(table, "_u").astype(np.float64)
        self.user_sq = (self.user_vecs * self.user_vecs).sum(axis=1)
        self.pos_user, self.pos_item = _list_column(table, "pos")
        self.pos_item = self.pos_item.astype(np.int64)
        rows, found = items.rows(self.pos_item)
        self.seen = np.unique(self.pos_user[found] * len(items.ids) + rows[found])  # sorted

    def fresh(self, user: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of candidates with a vector that user may get, their item rows)."""
        rows, found = self.items.rows(item_ids)
        keys = user * len(self.items.ids) + rows
        return found & ~find_sorted(self.seen, keys)[1], rows

    def scored(self, user: np.ndarray, aug: np.ndarray, rows: np.ndarray, own: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(teacher's score, selection): the score or the strategy's own similarity, discounted."""
        score = _cosine(self.user_vecs[user], self.user_sq[user], self.items.vectors[rows].astype(np.float64),
                        self.items.sq_norms[rows])
        sel = (score if own is None else own).astype(np.float64)
        if self.items.factor is not None:
            sel = sel * self.items.factor[rows]
        return score, sel

    def per_user(self, cfg: AugmentConfig, user: np.ndarray, aug: np.ndarray, own: np.ndarray | None) -> Cands:
        """A per-user strategy's top-k, ranked once per user, offered to each of the user's positives."""
        ok, rows = self.fresh(user, aug)
        user, aug, rows = user[ok], aug[ok], rows[ok]
        score, sel = self.scored(user, aug, rows, None if own is None else own[ok])
        kept, rank = top_k(user, aug, sel, cfg.k)  # sorted by user first: one run of rows a user
        per = np.bincount(user[kept], minlength=len(self.user_ids))
        start = np.cumsum(per) - per
        reps = per[self.pos_user]
        pos = np.repeat(np.arange(len(self.pos_user)), reps)
        src = start[self.pos_user[pos]] + np.arange(len(pos)) - np.repeat(np.cumsum(reps) - reps, reps)
        idx = kept[src]
        return Cands(pos, aug[idx], score[idx], sel[idx], rank[src])

    def i2i(self, cfg: AugmentConfig, own: bool) -> Cands:
        rows, found = self.items.rows(self.pos_item)
        width = self.items.i2i.shape[1]
        pos = np.repeat(np.arange(len(self.pos_item)), width)
        nb = np.where(found[:, None], self.items.i2i[rows], -1).reshape(-1)
        nb_score = self.items.i2i_score[rows].reshape(-1)
        keep = nb >= 0
        pos, aug, nb_score = pos[keep], nb[keep], nb_score[keep]
        ok, item_rows = self.fresh(self.pos_user[pos], aug)
        pos, aug, item_rows, nb_score = pos[ok], aug[ok], item_rows[ok], nb_score[ok]
        score, sel = self.scored(self.pos_user[pos], aug, item_rows, nb_score if own else None)
        kept, rank = top_k(pos, aug, sel, cfg.k)
        return Cands(pos[kept], aug[kept], score[kept], sel[kept], rank)


def chunk_candidates(cfg: AugmentConfig, table: pa.Table, items: Items) -> tuple[Chunk, dict[str, Cands]]:
    """Every positive's ranked candidates per enabled strategy, for one chunk of user rows."""
    chunk = Chunk(table, items)
    own = cfg.rank_by == "neighbour"  # i2i and u2u2i ranked by their own similarity, not s(u, v)
    out: dict[str, Cands] = {}
    if "u2i" in cfg.strategies:
        user, aug = _list_column(table, "u2i")
        out["u2i"] = chunk.per_user(cfg, user, aug.astype(np.int64), None)
    if "i2i" in cfg.strategies:
        out["i2i"] = chunk.i2i(cfg, own)
    if "u2u2i" in cfg.strategies:
        user, aug, nb = pooled_peers(table)
        out["u2u2i"] = chunk.per_user(cfg, user, aug, nb if own else None)
    return chunk, out


def _chunks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    """User rows in chunks of at most CHUNK_POSITIVES positives (or one user, never split)."""
    for batch in batches:
        cum = np.cumsum(pc.fill_null(pc.list_value_length(batch.column("pos")), 0).to_numpy(zero_copy_only=False))
        lo = 0
        while lo < batch.num_rows:
            before = int(cum[lo - 1]) if lo else 0
            hi = max(int(np.searchsorted(cum, before + CHUNK_POSITIVES, side="right")), lo + 1)
            yield pa.Table.from_batches([batch.slice(lo, hi - lo)])
            lo = hi


def _rows(chunk: Chunk, strategy: str, c: Cands, extra: dict[str, np.ndarray]) -> pa.RecordBatch:
    cols = {"user_id": pa.array(chunk.user_ids[chunk.pos_user[c.pos]], pa.int64()),
            "item_id": pa.array(chunk.pos_item[c.pos], pa.int64()),
            "strategy": pa.array(np.full(len(c.pos), strategy, dtype=object), pa.string()),
            "aug_item_id": pa.array(c.aug, pa.int64()), "rank": pa.array(c.rank.astype(np.int32), pa.int32()),
            "score": pa.array(c.score, pa.float32()), **{k: pa.array(v) for k, v in extra.items()}}
    return pa.RecordBatch.from_pydict(cols)


def augment_batches(cfg: AugmentConfig, seed: int, side: ItemSide, mode: str):
    """mapInArrow body: user rows in; out, by mode, sampled rows ("sample") or ranked candidates
    ("candidates")."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        items = side.get()
        for table in _chunks(batches):
            chunk, cands = chunk_candidates(cfg, table, items)
            for strategy in STRATEGIES:
                c = cands.get(strategy)
                if c is None or not len(c.pos):
                    continue
                if mode == "candidates":
                    yield _rows(chunk, strategy, c, {"selection": c.sel})
                    continue
                users, positives = chunk.user_ids[chunk.pos_user[c.pos]], chunk.pos_item[c.pos]
                r = uniform(xxhash64(seed, users, positives, strategy, c.aug))
                chosen, weight = sample_groups(c.pos, c.aug, c.sel, c.rank, r, cfg)
                yield _rows(chunk, strategy, c.take(chosen), {"weight": weight})

    return run


def candidates(cfg: AugmentConfig, users: DataFrame, side: ItemSide) -> DataFrame:
    """Ranked candidates before sampling (user_id, item_id, strategy, aug_item_id, rank, score, selection)."""
    return users.mapInArrow(augment_batches(cfg, 0, side, "candidates"), CANDIDATES)


def augmented_rows(cfg: AugmentConfig, users: DataFrame, side: ItemSide, seed: int) -> DataFrame:
    """m weighted augmented positives per (user, positive, strategy)."""
    return users.mapInArrow(augment_batches(cfg, seed, side, "sample"), SAMPLED)
