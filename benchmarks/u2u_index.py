"""u2u's faiss index alone, on a scale rung's user vectors: build time, µs a query, recall@20 (issue 18).

    .venv/bin/python benchmarks/u2u_index.py divspa-output/bench-scale33/warehouse/user_embeddings u2000000
    .venv/bin/python benchmarks/u2u_index.py divspa-output/bench-scale33/warehouse/user_embeddings u2000000 --lists
    .venv/bin/python benchmarks/u2u_index.py divspa-output/bench-scale33/warehouse/user_embeddings u2000000 --nprobe

--lists: the retrieve stage's own `build_index` (nprobe tuned to min_recall + 0.01 as in a run) at
list sizes 256, 128 and 64 (`retrieve.ivf_list_size`), against the rule before it (about 4·sqrt(n)
lists, flat quantizer, flat k-means).

--nprobe: the stage's default index, searched at each nprobe from 24 to 64 in steps of 8, and the
nprobe its tuning picks from each ladder of steps (`index.nprobe_steps`) against the ladder of
powers of two and 1.5 times them that came before it.

Reads the base model's user vectors of one run (the rung's run id, e.g. u2000000) from the Delta
table, takes 2,000 random users as queries and their exact top 20 (self excluded) as truth, and
tries IVF-flat (the retrieve stage's index, ~4·sqrt(n) lists), IVF-SQ8 and IVF-PQ 4-bit fast scan
with exact re-ranking of a deeper list, and HNSW. Search is timed on one thread (a Spark task's
share), builds on two.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import faiss
import numpy as np
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa.config import RetrieveConfig  # noqa: E402
from divspa.retrieval import index as index_module  # noqa: E402
from divspa.retrieval.index import build_index, normalise  # noqa: E402
from divspa.retrieval.spark_knn import list_vectors  # noqa: E402


def coarse_nprobe_steps(nlist: int) -> list[int]:
    """The ladder before stop 35: powers of two and 1.5 times them."""
    steps = sorted({s for i in range(max(1, nlist).bit_length() + 1) for s in (2**i, 3 * 2**i // 2) if s < nlist})
    return [*steps, nlist]


def main() -> None:
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["--lists"], ["--nprobe"]):
        sys.exit(__doc__)
    faiss.omp_set_num_threads(2)
    tab = DeltaTable(sys.argv[1]).to_pyarrow_table(
        filters=[("run_id", "=", sys.argv[2]), ("model_version", "=", "base")], columns=["user_id", "vector"])
    vec = normalise(list_vectors(tab))
    n, d = vec.shape
    if not n:
        sys.exit(f"no base user vectors for run {sys.argv[2]} in {sys.argv[1]}")
    qi = np.random.default_rng(0).choice(n, min(2000, n), replace=False)
    q = vec[qi]
    flat = faiss.IndexFlatIP(d)
    flat.add(vec)
    _, exact = flat.search(q, 21)
    truth = [set(r[r != i][:20]) for r, i in zip(exact, qi, strict=True)]

    def recall(rows: np.ndarray) -> float:
        return float(np.mean([len(t & set(r[r != i][:20])) / 20 for t, r, i in zip(truth, rows, qi, strict=True)]))

    def rerank(cand: np.ndarray) -> np.ndarray:  # exact scores of the candidates, best 21 kept
        s = np.einsum("bkd,bd->bk", vec[np.maximum(cand, 0)], q)
        s[cand < 0] = -np.inf
        return np.take_along_axis(cand, np.argsort(-s, axis=1)[:, :21], axis=1)

    def timed_search(ix: faiss.Index, depth: int) -> tuple[np.ndarray, float]:
        faiss.omp_set_num_threads(1)
        t = time.perf_counter()
        _, rows = ix.search(q, depth)
        us = 1e6 * (time.perf_counter() - t) / len(q)
        faiss.omp_set_num_threads(2)
        return rows, us

    if sys.argv[3:] == ["--lists"]:
        large = index_module.LARGE_IVF_LISTS
        for size in (n, 256, 128, 64):  # n: no cap on a list, the earlier rule
            # the earlier rule also trained flat k-means with a flat quantizer, whatever the lists
            index_module.LARGE_IVF_LISTS = 10**9 if size == n else large
            t = time.perf_counter()
            ix = build_index(vec, RetrieveConfig(index="ivf", ivf_list_size=size), seed=1, k=20, self_search=True)
            build = time.perf_counter() - t
            rows, us = timed_search(ix, 21)
            quantizer = type(faiss.downcast_index(ix.quantizer)).__name__
            print(f"{'4*sqrt(n) lists' if size == n else f'lists of {size}'}: nlist {ix.nlist} ({quantizer}), build and "
                  f"tune {build:.1f}s, nprobe {ix.nprobe}: {us:.0f} us/query, recall@20 {recall(rows):.4f}", flush=True)
        return
    if sys.argv[3:] == ["--nprobe"]:
        cfg = RetrieveConfig(index="ivf")
        t = time.perf_counter()
        ix = build_index(vec, cfg, seed=1, k=20, self_search=True)
        print(f"default index: nlist {ix.nlist}, build and tune {time.perf_counter() - t:.1f}s, tuned nprobe "
              f"{ix.nprobe} (steps {index_module.nprobe_steps(ix.nlist)[:12]} ...)", flush=True)
        target = cfg.min_recall + index_module.TUNED_MARGIN
        finer = index_module.nprobe_steps
        for name, steps in (("this ladder", finer), ("powers of two and 1.5x", coarse_nprobe_steps)):
            index_module.nprobe_steps = steps
            nprobe, got = index_module.tune_nprobe(ix, vec, 20, target, 1, self_search=True)
            print(f"tuned on {name}: nprobe {nprobe} (tuning recall@20 {got:.4f}, target {target:.2f})", flush=True)
        index_module.nprobe_steps = finer
        for nprobe in range(24, 65, 8):
            index_module._set_nprobe(ix, nprobe)
            rows, us = timed_search(ix, 21)
            print(f"nprobe {nprobe}: {us:.0f} us/query, recall@20 {recall(rows):.4f}", flush=True)
        return
    nlist = int(4 * np.sqrt(n))
    for kind in ("flat", "sq8", "pq4"):
        quant = faiss.IndexFlatIP(d)
        if kind == "flat":
            ix = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        elif kind == "sq8":
            ix = faiss.IndexIVFScalarQuantizer(quant, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                               faiss.METRIC_INNER_PRODUCT)
        else:
            ix = faiss.IndexIVFPQFastScan(quant, d, nlist, d // 2, 4, faiss.METRIC_INNER_PRODUCT)
        ix.cp.max_points_per_centroid = 64  # as divspa.retrieval.index.build_index trains
        t = time.perf_counter()
        ix.train(vec)
        ix.add(vec)
        build = time.perf_counter() - t
        for nprobe in (16, 32, 64):
            ix.nprobe = nprobe
            for depth in ((21,) if kind == "flat" else (42, 84)):
                rows, us = timed_search(ix, depth)
                got = recall(rerank(rows) if depth > 21 else rows)
                print(f"ivf-{kind} nlist {nlist} build {build:.0f}s nprobe {nprobe} depth {depth}: "
                      f"{us:.0f} us/query, recall@20 {got:.4f}", flush=True)
    for m in (16, 32):
        ix = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 40
        t = time.perf_counter()
        ix.add(vec)
        build = time.perf_counter() - t
        for ef in (32, 64, 128):
            ix.hnsw.efSearch = ef
            rows, us = timed_search(ix, 21)
            print(f"hnsw M{m} efC40 build {build:.0f}s (2 threads) ef {ef}: {us:.0f} us/query, "
                  f"recall@20 {recall(rows):.4f}", flush=True)


if __name__ == "__main__":
    main()
