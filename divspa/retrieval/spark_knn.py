"""Distributed top-k: queries stream through `mapInArrow`, the corpus is broadcast or sharded.

Broadcast (corpus index within `retrieve.broadcast_max_mb`): the driver builds one faiss index
from the corpus and broadcasts it. Sharded (larger, or `retrieve.shards` set): a Spark job
builds one index per hash shard of the corpus (one task per shard, nothing on the driver) and
writes it to a scratch directory; every query partition then visits each shard in turn, one
in memory at a time, and merges the per-shard top-k exactly.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from divspa.config import RetrieveConfig
from divspa.retrieval.index import Shard, build_index, deserialize, normalise, search_topk, serialize
from divspa.storage import StorageSettings, join

log = logging.getLogger(__name__)
# NOT NULL as in schemas/neighbours.json: Spark then skips a null check per value when it turns
# the Arrow batches into rows (8 % faster in benchmarks/arrow_rows.py), and the Delta guard's
# null checks fold away.
RESULT_SCHEMA = "query_id bigint not null, rank int not null, neighbour_id bigint not null, score float not null"
_CACHE: dict[str, Shard] = {}  # per Python worker: broadcast digest -> shard


def list_vectors(table: pa.Table | pa.RecordBatch, column: str = "vector") -> np.ndarray:
    """A list<float> column as an [n, d] float32 matrix."""
    col = table.column(column)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    flat = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(n, -1) if n else np.empty((0, 0), np.float32)


def _shard_bytes(ids: np.ndarray, vectors: np.ndarray, cfg: RetrieveConfig, seed: int, k: int) -> bytes:
    order = np.argsort(ids, kind="stable")  # the index never depends on row order
    ids, vectors = ids[order], normalise(vectors[order])
    buf = io.BytesIO()
    np.savez(buf, index=np.frombuffer(serialize(build_index(vectors, cfg, seed, k)), np.uint8), ids=ids, vectors=vectors)
    return buf.getvalue()


def _load_shard(data: bytes) -> Shard:
    z = np.load(io.BytesIO(data))
    return Shard(deserialize(z["index"].tobytes()), z["ids"], z["vectors"])


@dataclass
class Corpus:
    """How query tasks reach the corpus: a broadcast shard, or shard files under a scratch dir."""

    broadcast: object | None = None  # pyspark Broadcast of shard bytes
    key: str = ""
    paths: tuple[str, ...] = ()
    settings: StorageSettings | None = None  # how tasks reach the shard files (object-store options)

    def shards(self) -> Iterator[Shard]:
        if self.broadcast is not None:
            if self.key not in _CACHE:
                _CACHE.clear()
                _CACHE[self.key] = _load_shard(self.broadcast.value)  # type: ignore[attr-defined]
            yield _CACHE[self.key]
            return
        for path in self.paths:
            yield _load_shard((self.settings or StorageSettings()).read_bytes(path))


def prepare_corpus(corpus: DataFrame, cfg: RetrieveConfig, scratch: str, name: str, seed: int,
                   settings: StorageSettings | None = None, k: int = 50) -> Corpus:
    """Index the corpus (id, vector) for search, broadcast or sharded by its size (k: the neighbours
    searches keep, for an IVF index's tuned nprobe).

    Shards too large to broadcast are written under `scratch` (a path or URI every executor
    reaches), read back with `settings`."""
    settings = settings or StorageSettings()
    spark = corpus.sparkSession
    stats = corpus.agg(F.count(F.lit(1)).alias("n"), F.max(F.size("vector")).alias("d")).first()
    n, d = int(stats["n"]), int(stats["d"] or 0)
    if n == 0:
        raise ValueError(f"{name}: the corpus is empty")
    overhead = 1.0 + (2.0 * cfg.hnsw_m / d if cfg.index == "hnsw" and d else 0.0)
    mb = n * d * 4 * 2 * overhead / 2**20  # vectors twice (index + exact re-scoring copy)
    shards = cfg.shards or (1 if mb <= cfg.broadcast_max_mb else math.ceil(mb / cfg.broadcast_max_mb))
    if shards == 1 and not cfg.shards:
        table = corpus.select("id", "vector").toArrow()
        data = _shard_bytes(table.column("id").to_numpy(), list_vectors(table), cfg, seed, k)
        log.info("%s: broadcasting a %s index of %d vectors (%.1f MB)", name, cfg.index, n, len(data) / 2**20)
        return Corpus(broadcast=spark.sparkContext.broadcast(data), key=hashlib.sha256(data).hexdigest())
    base = join(scratch, name)

    def build(table: pa.Table) -> pa.Table:
        shard = int(table.column("shard")[0].as_py())
        path = join(base, f"shard-{shard:05d}.npz")
        settings.write_bytes(path, _shard_bytes(table.column("id").to_numpy(), list_vectors(table), cfg, seed + shard, k))
        return pa.table({"shard": pa.array([shard], pa.int32()), "path": [path], "rows": pa.array([table.num_rows], pa.int64())})

    built = (
        corpus.select("id", "vector", F.pmod(F.xxhash64("id"), F.lit(shards)).cast("int").alias("shard"))
        .groupBy("shard").applyInArrow(build, "shard int, path string, rows bigint")
        .orderBy("shard").collect()
    )
    log.info("%s: %d vectors in %d %s shards under %s", name, n, len(built), cfg.index, base)
    return Corpus(paths=tuple(r["path"] for r in built), settings=settings)


def _query_tables(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """The partition's query batches regrouped into tables of `size` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for b in batches:
        while b.num_rows:
            take = min(b.num_rows, size - rows)
            pending.append(b.slice(0, take))
            rows += take
            b = b.slice(take)
            if rows == size:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending)


def _topk_rows(corpus: Corpus, k: int, table: pa.Table, batch: int = 4096) -> pa.RecordBatch:
    qids = table.column("query_id").to_numpy()
    queries = normalise(list_vectors(table))
    excl_col = table.column("exclude").combine_chunks()
    flat = np.asarray(pc.list_flatten(excl_col).to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = np.asarray(excl_col.offsets.to_numpy(), dtype=np.int64) - int(excl_col.offsets[0].as_py())
    exclude = [flat[offsets[i]:offsets[i + 1]] for i in range(len(qids))]
    rows, ids, scores = search_topk(corpus.shards(), queries, exclude, k, batch)
    # rank = position within each query's run of rows (rows are sorted by query, then rank)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.empty(0, np.int64)
    run_len = np.diff(np.r_[starts, len(rows)])
    rank = np.arange(len(rows)) - np.repeat(starts, run_len) + 1
    return pa.RecordBatch.from_arrays(
        [pa.array(qids[rows], pa.int64()), pa.array(rank, pa.int32()), pa.array(ids, pa.int64()),
         pa.array(scores, pa.float32())], names=["query_id", "rank", "neighbour_id", "score"])


def _search(corpus: Corpus, k: int, batch: int, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Search a partition's queries `batch` at a time against a broadcast corpus (results stream
    out while the next batch is searched, and memory stays bounded by the batch). Against shards,
    all of the partition's queries go together so that each shard file is read once per
    partition: the candidate lists then grow with the partition (queries x depth x shards), the
    ranking's temporaries still with the batch; `retrieve.partitions` bounds the rest."""
    faiss.omp_set_num_threads(1)  # one Spark task per core
    size = batch if corpus.broadcast is not None else 2**62
    for table in _query_tables(batches, size):
        yield _topk_rows(corpus, k, table, batch)


def knn(queries: DataFrame, corpus: Corpus, k: int, partitions: int = 0, batch: int = 4096) -> DataFrame:
    """Top-k neighbours of each query (query_id, vector, exclude) in the prepared corpus.

    Results never depend on `partitions` or `batch` (see `search_topk`): they only trade memory
    per task against the number of faiss calls.
    """
    if partitions:
        queries = queries.repartition(partitions, "query_id")
    search: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]] = lambda it: _search(corpus, k, batch, it)  # noqa: E731
    return queries.select("query_id", "vector", "exclude").mapInArrow(search, RESULT_SCHEMA)
