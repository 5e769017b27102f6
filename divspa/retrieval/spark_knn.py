"""Distributed top-k: queries stream through `mapInArrow`, the corpus is broadcast or mapped.

Broadcast (an index within `retrieve.broadcast_max_mb`): the driver builds one faiss index from
the corpus and broadcasts it. Mapped (larger): one Spark task builds one index (nothing on the
driver) and writes it, with the ids and the vectors for exact re-scoring, as plain files under a
scratch directory; each Python worker memory-maps them, so a host reads the pages once and its
workers share them, and a task's own memory stays bounded by its query batch. One index, not
shards of a fixed size: every query visits every shard, so with shards the cost per query grew
with the corpus (u2u: users^2 in all), with one IVF index as its square root. `retrieve.shards`
still forces hash shards (each a mapped index; per query, their top-k are merged exactly).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from divspa.config import RetrieveConfig
from divspa.retrieval.index import (
    TUNE_QUERIES,
    Shard,
    build_index,
    deserialize,
    normalise,
    search_topk,
    serialize,
)
from divspa.storage import StorageSettings, is_local, join, resolve

log = logging.getLogger(__name__)
# NOT NULL as in schemas/neighbours.json: Spark then skips a null check per value when it turns
# the Arrow batches into rows (8 % faster; docs/benchmarks/history.md, "Retrieval speed and recall"), and the Delta guard's
# null checks fold away.
RESULT_SCHEMA = "query_id bigint not null, rank int not null, neighbour_id bigint not null, score float not null"
_CACHE: dict[str, list[Shard]] = {}  # per Python worker: broadcast digest or shard paths -> shards
SHARD_FILES = ("ids.npy", "vectors.npy", "index.faiss")  # a mapped shard: one directory of these, written in this order


def list_vectors(table: pa.Table | pa.RecordBatch, column: str = "vector") -> np.ndarray:
    """A list<float> column as an [n, d] float32 matrix."""
    col = table.column(column)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    flat = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(n, -1) if n else np.empty((0, 0), np.float32)


def _indexed(ids: np.ndarray, vectors: np.ndarray, cfg: RetrieveConfig, seed: int, k: int,
             self_search: bool, queries: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, faiss.Index]:
    """(ids, normalised vectors, index) of one shard, in id order: the index never depends on row order."""
    order = np.argsort(ids, kind="stable")
    ids, vectors = ids[order], normalise(vectors[order])
    return ids, vectors, build_index(vectors, cfg, seed, k, self_search, queries)


def _shard_bytes(ids: np.ndarray, vectors: np.ndarray, cfg: RetrieveConfig, seed: int, k: int,
                 self_search: bool, queries: np.ndarray | None) -> bytes:
    ids, vectors, index = _indexed(ids, vectors, cfg, seed, k, self_search, queries)
    buf = io.BytesIO()
    np.savez(buf, index=np.frombuffer(serialize(index), np.uint8), ids=ids, vectors=vectors)
    return buf.getvalue()


def _load_shard(data: bytes) -> Shard:
    z = np.load(io.BytesIO(data))
    return Shard(deserialize(z["index"].tobytes()), z["ids"], z["vectors"])


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_mapped_shard(location: str, ids: np.ndarray, vectors: np.ndarray, cfg: RetrieveConfig, seed: int, k: int,
                       self_search: bool, queries: np.ndarray | None, settings: StorageSettings) -> None:
    """The shard's index, ids and normalised vectors as the files of SHARD_FILES under `location`."""
    ids, vectors, index = _indexed(ids, vectors, cfg, seed, k, self_search, queries)
    settings.write_bytes(join(location, "ids.npy"), _npy_bytes(ids))
    settings.write_bytes(join(location, "vectors.npy"), _npy_bytes(vectors))
    settings.write_bytes(join(location, "index.faiss"), serialize(index))  # last: the shard is whole once it exists


def _local_dir(location: str, settings: StorageSettings) -> str:
    """A local directory holding the shard's files: the scratch directory itself when it is a path
    (which every executor reaches), else a copy in this application's SparkFiles directory (removed
    with the application), made once per host: the workers there then map the same pages."""
    if is_local(location):
        return resolve(location)
    from pyspark import SparkFiles

    target = os.path.join(SparkFiles.getRootDirectory(), "divspa-corpus",
                          hashlib.sha256(location.encode()).hexdigest()[:24])
    for name in SHARD_FILES:  # in the order written: index.faiss present means the copy is whole
        path = os.path.join(target, name)
        if not os.path.exists(path):
            settings.write_bytes(path, settings.read_bytes(join(location, name)))  # temporary name, then rename
    return target


def open_mapped_shard(location: str, settings: StorageSettings) -> Shard:
    """The shard with its index and vectors memory-mapped: pages are read on demand and shared by
    the processes of a host, so a worker holds no private copy of the corpus."""
    local = _local_dir(location, settings)
    # IO_FLAG_MMAP_IFC: the index's arrays point into the mapped file (zero copy), searched as fast
    # as in memory; IO_FLAG_MMAP's on-disk inverted lists searched 941k users' IVF 20 % slower.
    index = faiss.read_index(os.path.join(local, "index.faiss"), faiss.IO_FLAG_MMAP_IFC)
    return Shard(index, np.load(os.path.join(local, "ids.npy")),
                 np.load(os.path.join(local, "vectors.npy"), mmap_mode="r"))


@dataclass
class Corpus:
    """How query tasks reach the corpus: a broadcast shard, or mapped shard directories under a scratch dir."""

    broadcast: object | None = None  # pyspark Broadcast of shard bytes
    key: str = ""
    paths: tuple[str, ...] = ()
    settings: StorageSettings | None = None  # how tasks reach the shard files (object-store options)

    def shards(self) -> list[Shard]:
        """This worker's handles on the corpus, opened once per worker and kept for its next tasks."""
        key = self.key or "\n".join(self.paths)
        if key not in _CACHE:
            _CACHE.clear()
            if self.broadcast is not None:
                _CACHE[key] = [_load_shard(self.broadcast.value)]  # type: ignore[attr-defined]
            else:
                _CACHE[key] = [open_mapped_shard(p, self.settings or StorageSettings()) for p in self.paths]
        return _CACHE[key]


def tuning_queries(queries: DataFrame, seed: int) -> np.ndarray:
    """The normalised vectors of the `TUNE_QUERIES` queries (id, vector) with the smallest hash of
    (seed, id): a sample of what will search, whatever its partitioning, for tuning nprobe."""
    table = queries.orderBy(F.xxhash64(F.lit(seed), "id"), "id").limit(TUNE_QUERIES).select("vector").toArrow()
    return normalise(list_vectors(table))


def prepare_corpus(corpus: DataFrame, cfg: RetrieveConfig, scratch: str, name: str, seed: int,
                   settings: StorageSettings | None = None, k: int = 50, self_search: bool = False,
                   queries: DataFrame | None = None) -> Corpus:
    """Index the corpus (id, vector) for search, broadcast or mapped by its size (k, self_search
    and queries: the neighbours searches keep, whether the corpus will search itself, and else
    the queries (id, vector) that will search it, for an IVF index's tuned nprobe, see `build_index`).

    Mapped indexes are written under `scratch` (a path or URI every executor reaches), read back
    with `settings`."""
    settings = settings or StorageSettings()
    spark = corpus.sparkSession
    stats = corpus.agg(F.count(F.lit(1)).alias("n"), F.max(F.size("vector")).alias("d")).first()
    n, d = int(stats["n"]), int(stats["d"] or 0)
    if n == 0:
        raise ValueError(f"{name}: the corpus is empty")
    tune = tuning_queries(queries, seed) if queries is not None and cfg.index == "ivf" and not cfg.ivf_nprobe else None
    overhead = 1.0 + (2.0 * cfg.hnsw_m / d if cfg.index == "hnsw" and d else 0.0)
    mb = n * d * 4 * 2 * overhead / 2**20  # vectors twice (index + exact re-scoring copy)
    if not cfg.shards and mb <= cfg.broadcast_max_mb:
        table = corpus.select("id", "vector").toArrow()
        data = _shard_bytes(table.column("id").to_numpy(), list_vectors(table), cfg, seed, k, self_search, tune)
        log.info("%s: broadcasting a %s index of %d vectors (%.1f MB)", name, cfg.index, n, len(data) / 2**20)
        return Corpus(broadcast=spark.sparkContext.broadcast(data), key=hashlib.sha256(data).hexdigest())
    shards = cfg.shards or 1
    base = join(scratch, name)

    def build(table: pa.Table) -> pa.Table:
        shard = int(table.column("shard")[0].as_py())
        if shards == 1:  # the job's only task: training the IVF quantizer may use the host's cores
            faiss.omp_set_num_threads(os.cpu_count() or 1)
        path = join(base, f"shard-{shard:05d}")
        write_mapped_shard(path, table.column("id").to_numpy(), list_vectors(table), cfg, seed + shard, k, self_search,
                           tune, settings)
        return pa.table({"shard": pa.array([shard], pa.int32()), "path": [path], "rows": pa.array([table.num_rows], pa.int64())})

    built = (
        corpus.select("id", "vector", F.pmod(F.xxhash64("id"), F.lit(shards)).cast("int").alias("shard"))
        .groupBy("shard").applyInArrow(build, "shard int, path string, rows bigint")
        .orderBy("shard").collect()
    )
    log.info("%s: %d vectors (%.0f MB) in %d mapped %s index(es) under %s", name, n, mb, len(built), cfg.index, base)
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
    """Search a partition's queries `batch` at a time: results stream out while the next batch is
    searched, and a task's memory stays bounded by the batch (the corpus is broadcast or mapped)."""
    faiss.omp_set_num_threads(1)  # one Spark task per core
    for table in _query_tables(batches, batch):
        yield _topk_rows(corpus, k, table, batch)


def exact_topk_of_few(queries: pa.Table, corpus: DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top k of a few queries (query_id, vector, exclude; e.g. the recall check's sample) in
    one pass over the corpus (id, vector): the queries are broadcast, each partition searches its
    Arrow batches as flat shards through `search_topk` (which merges them exactly), and a window
    keeps each query's best k of the partitions', so the driver receives queries x k rows. No index
    of the whole corpus is built or written: the cost is one read of the corpus. Returns (query row
    in `queries`, neighbour id, score), sorted by query row, then rank: the order and ties of `knn`
    with a flat index."""
    vectors = normalise(list_vectors(queries))
    exclude = [np.asarray(e or [], np.int64) for e in queries.column("exclude").to_pylist()]
    shipped = corpus.sparkSession.sparkContext.broadcast((vectors, exclude))

    def flat_shard(batch: pa.RecordBatch) -> Shard:
        vec = normalise(list_vectors(batch))
        index = faiss.IndexFlatIP(vec.shape[1])
        index.add(vec)
        return Shard(index, batch.column(0).to_numpy(), vec)

    def scan(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        faiss.omp_set_num_threads(1)  # one Spark task per core
        qv, excl = shipped.value
        shards = (flat_shard(b) for b in batches if b.num_rows)  # one batch's shard in memory at a time
        first = next(shards, None)
        if first is None:  # an empty partition
            return
        rows, ids, scores = search_topk(itertools.chain([first], shards), qv, excl, k)
        yield pa.RecordBatch.from_arrays([pa.array(rows, pa.int64()), pa.array(ids, pa.int64()),
                                          pa.array(scores, pa.float32())], names=["row", "id", "score"])

    best = Window.partitionBy("row").orderBy(F.col("score").desc(), F.col("id"))  # search_topk's order
    try:
        got = (corpus.select("id", "vector").mapInArrow(scan, "row bigint, id bigint, score float")
               .withColumn("rank", F.row_number().over(best)).where(F.col("rank") <= k)
               .orderBy("row", "rank").toArrow())
    finally:
        shipped.unpersist()
    return got.column("row").to_numpy(), got.column("id").to_numpy(), got.column("score").to_numpy()


def knn(queries: DataFrame, corpus: Corpus, k: int, partitions: int = 0, batch: int = 4096) -> DataFrame:
    """Top-k neighbours of each query (query_id, vector, exclude) in the prepared corpus.

    Results never depend on `partitions` or `batch` (see `search_topk`): they only trade memory
    per task against the number of faiss calls.
    """
    if partitions:
        queries = queries.repartition(partitions, "query_id")
    search: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]] = lambda it: _search(corpus, k, batch, it)  # noqa: E731
    return queries.select("query_id", "vector", "exclude").mapInArrow(search, RESULT_SCHEMA)
