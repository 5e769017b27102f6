"""The items' side of an augmentation: every item's vector, i2i list and popularity discount,
collected once on the driver and broadcast to every task (one load per Python worker)."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from divspa.config import AugmentConfig
from divspa.retrieval.spark_knn import list_vectors

log = logging.getLogger(__name__)


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
