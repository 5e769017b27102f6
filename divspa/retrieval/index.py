"""faiss indexes over L2-normalised vectors (inner product = cosine) and exact top-k search.

`search_topk` returns, per query, the true top k of the corpus after removing that query's
excluded ids, however many they are: each query is searched to depth at least k + |excluded|
(queries are grouped by that depth), so at least k survivors remain whenever the corpus has them.
Scores are recomputed in float64 from the vectors and ties broken by id, so the result of a
query never depends on which other queries share its batch, task or partition.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from divspa.config import RetrieveConfig

log = logging.getLogger(__name__)


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


# Queries searched when IVF's nprobe is tuned (retrieve.ivf_nprobe = 0): corpus vectors, or a
# sample of the queries that will search it.
TUNE_QUERIES = 500
# Above min_recall when the tuning queries are drawn from those that will search (about two
# standard errors of a 500-query estimate).
TUNED_MARGIN = 0.01
# A found neighbour whose score is within this of the k-th exact score counts as found: scores are
# float32 inner products of the same vectors, summed in another order by another faiss index.
TIE_TOLERANCE = 1e-6
TRAIN_POINTS_PER_LIST = 64  # k-means sample per IVF list (faiss warns below 39)
# From this many lists on, an IVF index is trained by two-level k-means and its coarse quantizer
# is an HNSW graph over the centroids (see `_train_large_ivf`).
LARGE_IVF_LISTS = 4096
QUANTIZER_HNSW_M = 32


def nprobe_steps(nlist: int) -> list[int]:
    """The nprobe values tuning tries: powers of two times 1, 1.25, 1.5 and 1.75 (1, 2, 3, 4, 5, 6,
    7, 8, 10, 12, 14, 16, 20, ...), up to nlist, so a tuned nprobe is at most 25 % above the least
    that reaches the target. Powers of two alone overshot (u2u on 941k users needed 32 lists for
    recall@20 0.9735 and got 64, at half the speed), and so did steps of 1.5x: u2u on the 2M rung's
    1.88M users got 48 where 40 reaches the target, at 193 against 161 µs a query
    (benchmarks/u2u_index.py --nprobe)."""
    steps = sorted({s for i in range(max(1, nlist).bit_length() + 1) for s in (4 * 2**i // 4, 5 * 2**i // 4,
                                                                             6 * 2**i // 4, 7 * 2**i // 4)
                    if 0 < s < nlist})
    return [*steps, nlist]


def found_share(found: np.ndarray, exact: np.ndarray) -> float:
    """One query's recall: the share of its exact neighbours (their scores `exact`) matched by
    returned neighbours (scores `found`) scoring at least the lowest exact score. Equal vectors
    tie, and which of them an index returns is no loss. Both nprobe tuning and the retrieve stage's
    recall check count this way. 0 for a query with no exact neighbours."""
    if not len(exact):
        return 0.0
    return min(int(np.sum(found >= exact.min() - TIE_TOLERANCE)), len(exact)) / len(exact)


def tune_nprobe(index: faiss.IndexIVF, vectors: np.ndarray, k: int, target: float, seed: int,
                self_search: bool = False, queries: np.ndarray | None = None) -> tuple[int, float]:
    """(nprobe, recall@k there): the smallest of `nprobe_steps` whose recall@k against exact search
    reaches `target`, for `queries` or else a seeded sample of the corpus's own vectors. self_search
    (corpus vectors as queries): each query's own vector is not counted (u2u excludes the user
    itself; it would always be found).

    How many lists a query must visit depends on how clustered the vectors are, which a fixed
    default cannot know: nprobe 16 gave i2i recall@50 0.79 on 18,000 items (docs/benchmarks/history.md, "Scale")."""
    n = len(vectors)
    # what each query's results drop: itself (self_search), else only faiss's -1 for a missing slot
    if queries is None:
        rows = np.sort(np.random.default_rng(seed).choice(n, min(TUNE_QUERIES, n), replace=False))
        queries, own = vectors[rows], rows.tolist() if self_search else [-1] * len(rows)
    else:
        self_search, own = False, [-1] * len(queries)
    k = min(k, n - 1 if self_search else n)
    depth = k + 1 if self_search else k
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)

    def top(ix: faiss.Index) -> list[np.ndarray]:  # each query's k best scores, by the index's ranking
        scores, got = ix.search(queries, depth)
        return [row[(ids != r) & (ids >= 0)][:k] for row, ids, r in zip(scores, got, own, strict=True)]

    truth = top(exact)
    recall = 0.0
    for nprobe in nprobe_steps(index.nlist):
        _set_nprobe(index, nprobe)
        recall = float(np.mean([found_share(a, b) for a, b in zip(top(index), truth, strict=True)]))
        if recall >= target:
            break
    return index.nprobe, recall


def ivf_nlist(n: int, cfg: RetrieveConfig) -> int:
    """Lists of an IVF index over n vectors: about 4·sqrt(n) (balances the coarse search against
    the scan when both are linear in their size) until lists would hold more than ivf_list_size
    vectors, then n / ivf_list_size, so that the vectors a query scans stop growing with the corpus.
    On the 2M-user rung's 1.88M user vectors, 14,704 lists of 128 (tuned nprobe 48) gave u2u
    recall@20 0.966 at 208 µs a query, 5,487 lists of 343 (nprobe 32) 0.970 at 278 µs
    (benchmarks/u2u_index.py --lists; docs/benchmarks/history.md)."""
    return cfg.ivf_nlist or max(1, min(max(int(4 * math.sqrt(n)), n // cfg.ivf_list_size), n // 39))


def _set_nprobe(index: faiss.IndexIVF, nprobe: int) -> None:
    """nprobe, and an HNSW coarse quantizer's search breadth with it (it must find nprobe lists)."""
    index.nprobe = nprobe
    quantizer = faiss.downcast_index(index.quantizer)
    if isinstance(quantizer, faiss.IndexHNSWFlat):
        quantizer.hnsw.efSearch = max(64, 2 * nprobe)


def _train_large_ivf(index: faiss.IndexIVFFlat, vectors: np.ndarray, seed: int) -> None:
    """Train an IVF index of many lists: two-level k-means (sqrt(nlist) clusters, then each split
    in proportion to its size) on TRAIN_POINTS_PER_LIST sampled points per list, its centroids added
    one at a time to the HNSW quantizer (single-threaded: the same graph every run). Flat k-means
    costs points x lists, i.e. grows with corpus^2 at a fixed list size; two-level costs points x
    2·sqrt(lists)."""
    with contextlib.redirect_stdout(io.StringIO()):  # its import prints a notice about scipy, unused here
        from faiss.contrib.clustering import two_level_clustering

    n, nlist = len(vectors), index.nlist
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, TRAIN_POINTS_PER_LIST * nlist), replace=False))
    centroids, _ = two_level_clustering(vectors[rows], int(math.sqrt(nlist)), nlist, spherical=True, seed=seed)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    index.is_trained = True


def build_index(vectors: np.ndarray, cfg: RetrieveConfig, seed: int = 0, k: int = 50,
                self_search: bool = False, queries: np.ndarray | None = None) -> faiss.Index:
    """An inner-product index of the (already normalised) vectors; row i has faiss id i. k: the
    neighbours its searches keep (what ivf_nprobe = 0 tunes the recall of). Tuning measures the
    real thing when self_search (the queries will be these vectors themselves, u2u, i2i) or when
    `queries` holds a (normalised) sample of those that will search (u2i: users' vectors)."""
    n, d = vectors.shape
    if cfg.index == "flat" or n < 1000:  # approximate indexes need enough points to train on
        index = faiss.IndexFlatIP(d)
    elif cfg.index == "ivf":
        nlist = ivf_nlist(n, cfg)
        large = nlist >= LARGE_IVF_LISTS
        if large:  # searching 4,096+ centroids exhaustively costs a query more than a graph walk
            quantizer = faiss.IndexHNSWFlat(d, QUANTIZER_HNSW_M, faiss.METRIC_INNER_PRODUCT)
        else:
            quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        if large:
            _train_large_ivf(index, vectors, seed)
        else:
            # k-means on 64 points per list, not faiss's 256: at 1M user vectors (3,880 lists)
            # training took 17.6 s instead of 65.9 s for the same recall@20 (0.972 vs 0.974 at nprobe 32)
            index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
            index.train(vectors)
        index.add(vectors)
        if cfg.ivf_nprobe:
            _set_nprobe(index, min(cfg.ivf_nprobe, nlist))
        else:
            # Tuned on what will be searched (the corpus itself, or a sample of the queries):
            # min_recall plus about two standard errors of the 500-query estimate (at 1.9M users
            # halfway to 1 meant 48 lists instead of 32, recall@20 0.986 instead of 0.971, at 70 %
            # of the speed). On corpus vectors standing in for other queries: halfway to 1.
            real = self_search or queries is not None
            target = cfg.min_recall + (TUNED_MARGIN if real else (1.0 - cfg.min_recall) / 2)
            nprobe, recall = tune_nprobe(index, vectors, k, target, seed, self_search, queries)
            _set_nprobe(index, nprobe)
            log.info("ivf: %d vectors in %d lists (%s quantizer), nprobe %d (recall@%d %.3f on %d %s as queries)",
                     n, nlist, "hnsw" if large else "flat", index.nprobe, k, recall, min(TUNE_QUERIES, n) if queries is None else len(queries),
                     "sampled queries" if queries is not None else "corpus vectors")
        return index
    else:
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    index.add(vectors)
    return index


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


@dataclass
class Shard:
    """One searchable piece of the corpus: an index plus the ids and vectors of its rows."""

    index: faiss.Index
    ids: np.ndarray  # int64 corpus ids; faiss row i is ids[i]
    vectors: np.ndarray  # normalised float32, for exact re-scoring


RESCORE_CHUNK = 64  # queries re-scored at a time: their candidates' vectors stay in cache


def _search_shard(shard: Shard, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    depth = min(depth, shard.index.ntotal)
    if depth == 0:
        return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float64)
    if isinstance(shard.index, faiss.IndexHNSWFlat):
        shard.index.hnsw.efSearch = max(shard.index.hnsw.efSearch, depth)
    _, rows = shard.index.search(queries, depth)
    ok = rows >= 0
    safe = np.maximum(rows, 0)
    ids = np.where(ok, np.take(shard.ids, safe), -1)
    # Exact, batch-independent scores: float64 dot products of the stored float32 vectors, a few
    # queries at a time (each element is its own reduction over d, whatever the chunk).
    scores = np.empty(rows.shape, np.float64)
    q64 = queries.astype(np.float64)
    for start in range(0, len(queries), RESCORE_CHUNK):
        end = start + RESCORE_CHUNK
        # np.take gathers rows about twice as fast as fancy indexing (measured, numpy 2)
        cand = np.take(shard.vectors, safe[start:end], axis=0).astype(np.float64)
        np.einsum("bkd,bd->bk", cand, q64[start:end], out=scores[start:end])
    scores[~ok] = -np.inf
    return ids, scores


def search_depth(k: int, n_excluded: np.ndarray) -> np.ndarray:
    """How deep each query is searched: k plus its exclusions rounded up to a power of two.

    A function of the query alone (never of its batch), so results are partition-independent;
    the rounding keeps the number of distinct depths, and so of faiss calls, logarithmic.
    """
    n = np.asarray(n_excluded, dtype=np.int64)
    pow2 = np.where(n > 0, 2 ** np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64), 0)
    return k + pow2


def _rank_order(ids: np.ndarray, score32: np.ndarray) -> np.ndarray:
    """Per row, positions by score descending and then id ascending: np.lexsort's order, faster.

    Rows arrive nearly sorted (faiss ranks by its own scores), which a stable sort by score
    alone handles quickly; only rows with equal finite scores then need the id tie-break.
    """
    neg = -score32.astype(np.float64)
    order = np.argsort(neg, axis=1, kind="stable")
    ranked = np.take_along_axis(neg, order, axis=1)
    tied = np.flatnonzero(((ranked[:, 1:] == ranked[:, :-1]) & np.isfinite(ranked[:, 1:])).any(axis=1))
    if len(tied):
        order[tied] = np.lexsort((ids[tied], neg[tied]), axis=1)
    return order


def search_topk(shards: Iterable[Shard], queries: np.ndarray, exclude: list[np.ndarray], k: int,
                batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top k per query over all shards (each visited once), minus each query's excluded ids.

    Candidates are masked and ranked `batch` queries at a time, so that the temporaries of that
    step scale with the batch, not with the number of queries passed in.
    Returns flat arrays (query row, neighbour id, score) sorted by query row, then rank.
    """
    n_excl = np.array([len(e) for e in exclude], dtype=np.int64)
    depth = search_depth(k, n_excl)
    groups = {int(b): np.flatnonzero(depth == b) for b in np.unique(depth)}
    found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {b: [] for b in groups}
    for shard in shards:  # one shard in memory at a time
        for b, sel in groups.items():
            found[b].append(_search_shard(shard, queries[sel], b))
    out_rows, out_ids, out_scores = [], [], []
    for b, sel_all in groups.items():
        ids_all = np.concatenate([p[0] for p in found[b]], axis=1)
        scores_all = np.concatenate([p[1] for p in found[b]], axis=1)
        del found[b]
        for start in range(0, len(sel_all), batch):
            sel = sel_all[start:start + batch]
            ids, scores = ids_all[start:start + batch], scores_all[start:start + batch]
            score32 = scores.astype(np.float32)  # missing candidates (id -1) already score -inf
            if n_excl[sel].any():
                # Mask excluded ids: (row, id) pairs encoded as one int64 key and looked up at once.
                excl_rows = np.repeat(np.arange(len(sel)), n_excl[sel])
                excl_ids = np.concatenate([exclude[i] for i in sel]).astype(np.int64)
                span = np.int64(max(int(ids.max(initial=0)), int(excl_ids.max(initial=0))) + 2)
                keys = np.arange(len(sel))[:, None] * span + (ids + 1)
                score32[np.isin(keys, excl_rows * span + (excl_ids + 1))] = -np.inf
            # Rank by score (float32, as stored), ties by id; keep the first k that are not banned.
            order = _rank_order(ids, score32)
            ids_sorted = np.take_along_axis(ids, order, axis=1)[:, :k]
            sc_sorted = np.take_along_axis(score32, order, axis=1)[:, :k]
            got_rows, got_ids, got_scores = np.repeat(sel, sc_sorted.shape[1]), ids_sorted.ravel(), sc_sorted.ravel()
            valid = np.isfinite(got_scores)
            if not valid.all():  # queries with fewer than k results left (small corpus, exclusions)
                got_rows, got_ids, got_scores = got_rows[valid], got_ids[valid], got_scores[valid]
            out_rows.append(got_rows)
            out_ids.append(got_ids)
            out_scores.append(got_scores)
    if not out_rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    rows, ids, scores = np.concatenate(out_rows), np.concatenate(out_ids), np.concatenate(out_scores)
    if len(groups) == 1:  # one depth: batches came out in query order already
        return rows, ids, scores
    order = np.argsort(rows, kind="stable")
    return rows[order], ids[order], scores[order]
