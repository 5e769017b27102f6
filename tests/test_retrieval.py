"""faiss top-k through Spark equals a numpy brute force, broadcast, mapped and sharded, with exclusions."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from divspa.config import RetrieveConfig
from divspa.retrieval import index as index_module
from divspa.retrieval.index import Shard, build_index, ivf_nlist, normalise, search_topk
from divspa.retrieval.spark_knn import SHARD_FILES, knn, prepare_corpus
from divspa.spark import session_conf


def brute_force(queries, qids, corpus, cids, exclude, k):
    q, c = normalise(queries).astype(np.float64), normalise(corpus).astype(np.float64)
    scores = q @ c.T
    out = {}
    for i, qid in enumerate(qids):
        s = scores[i].astype(np.float32)
        order = sorted((j for j in range(len(cids)) if cids[j] not in set(exclude[i])), key=lambda j: (-s[j], cids[j]))
        out[int(qid)] = [(int(cids[j]), float(s[j])) for j in order[:k]]
    return out


def spark_frames(spark, qids, queries, exclude, cids, corpus):
    q = spark.createDataFrame([(int(i), v.tolist(), [int(e) for e in ex]) for i, v, ex in zip(qids, queries, exclude, strict=True)],
                              "query_id bigint, vector array<float>, exclude array<bigint>")
    c = spark.createDataFrame([(int(i), v.tolist()) for i, v in zip(cids, corpus, strict=True)], "id bigint, vector array<float>")
    return q, c


def clustered(rng: np.random.Generator, n: int, spread: float = 0.6, centres: np.ndarray | None = None) -> np.ndarray:
    """n unit vectors around 40 centres (shared by the calls that pass `centres`): embeddings' shape."""
    centres = rng.normal(size=(40, 16)) if centres is None else centres
    return normalise((centres[rng.integers(0, 40, n)] + spread * rng.normal(size=(n, 16))).astype(np.float32))


def recall(index: faiss.Index, queries: np.ndarray, corpus: np.ndarray, k: int, itself: bool = False) -> float:
    """recall@k of `index` against exact search; with `itself` the queries are corpus vectors and
    the first hit (the query itself) is left out of both lists."""
    skip = int(itself)
    _, truth = build_index(corpus, RetrieveConfig(index="flat")).search(queries, k + skip)
    _, got = index.search(queries, k + skip)
    return float(np.mean([len(set(a[skip:]) & set(b[skip:])) / k for a, b in zip(got.tolist(), truth.tolist(), strict=True)]))


# How tasks reach the corpus: broadcast (small), one memory-mapped index (over broadcast_max_mb),
# three hash shards, each mapped and merged per query.
CORPUS_WAYS = {"broadcast": RetrieveConfig(), "mapped": RetrieveConfig(broadcast_max_mb=0.001),
               "shards": RetrieveConfig(shards=3)}


def _topk_case(spark, case: str):
    rng = np.random.default_rng(0)
    cids = rng.choice(100_000, 300, replace=False).astype(np.int64)
    corpus = rng.normal(size=(300, 16)).astype(np.float32)
    if case == "u2i":  # users against items, excluding long train histories
        qids = np.arange(40, dtype=np.int64)
        queries = rng.normal(size=(40, 16)).astype(np.float32)
        exclude = [rng.choice(cids, size=int(rng.integers(0, 120)), replace=False) for _ in qids]
    else:  # items against items / users against users: the query is in the corpus, excluded
        pick = rng.choice(300, 40, replace=False)
        qids, queries = cids[pick], corpus[pick]
        exclude = [np.array([q]) for q in qids]
    q, c = spark_frames(spark, qids, queries, exclude, cids, corpus)
    return q, c, brute_force(queries, qids, corpus, cids, exclude, 7), dict(zip(qids.tolist(), exclude, strict=True))


def _assert_topk(q, prepared, expected, exclude) -> None:
    got: dict[int, list] = {}
    # 40 queries in 3 partitions, searched 5 at a time
    for r in knn(q, prepared, 7, partitions=3, batch=5).orderBy("query_id", "rank").collect():
        got.setdefault(r["query_id"], []).append((r["neighbour_id"], r["score"]))
    assert set(got) == set(expected)
    for qid, rows in expected.items():
        assert [i for i, _ in got[qid]] == [i for i, _ in rows]
        assert np.allclose([s for _, s in got[qid]], [s for _, s in rows], atol=1e-6)
        assert not set(exclude[qid].tolist()) & {i for i, _ in got[qid]}


@pytest.mark.parametrize("way", list(CORPUS_WAYS))
@pytest.mark.parametrize("case", ["u2i", "i2i", "u2u"])
def test_spark_topk_equals_brute_force(spark, tmp_path, way, case):
    q, c, expected, exclude = _topk_case(spark, case)
    prepared = prepare_corpus(c, CORPUS_WAYS[way], str(tmp_path / "scratch"), case, seed=1)
    assert (prepared.broadcast is None) == (way != "broadcast")
    assert len(prepared.paths) == {"broadcast": 0, "mapped": 1, "shards": 3}[way]
    for path in prepared.paths:  # plain files a worker maps, not bytes it copies
        assert sorted(os.listdir(path)) == sorted(SHARD_FILES)
    _assert_topk(q, prepared, expected, exclude)


@pytest.mark.parametrize("case", ["u2i", "u2u"])
def test_exact_topk_of_a_few_queries_in_one_pass_equals_brute_force(spark, case):
    """The recall check's exact side: the queries broadcast, the corpus scanned batch by batch in
    three partitions, each query's best k merged: the same neighbours, order and ties as brute force,
    exclusions included (u2i: up to 120 of 300 items)."""
    from divspa.retrieval.spark_knn import exact_topk_of_few

    q, c, expected, _ = _topk_case(spark, case)
    sample = q.orderBy("query_id").toArrow()
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": "40"}):
        rows, ids, scores = exact_topk_of_few(sample, c.repartition(3), 7)
    qids = sample.column("query_id").to_numpy()
    got: dict[int, list] = {}
    for r, i, s in zip(qids[rows].tolist(), ids.tolist(), scores.tolist(), strict=True):
        got.setdefault(r, []).append((i, s))
    assert set(got) == set(expected)
    for qid, want in expected.items():
        assert [i for i, _ in got[qid]] == [i for i, _ in want]
        assert np.allclose([s for _, s in got[qid]], [s for _, s in want], atol=1e-6)


def test_a_corpus_mapped_from_an_object_store(spark, s3, tmp_path):
    """Scratch on S3: each host copies the index files once into its SparkFiles directory and maps them."""
    from divspa.storage import StorageSettings

    q, c, expected, exclude = _topk_case(spark, "u2i")
    settings = StorageSettings(spark_conf=s3.spark_conf())
    prepared = prepare_corpus(c, CORPUS_WAYS["mapped"], f"s3a://{s3.bucket}/scratch", "u2i", seed=1, settings=settings)
    assert prepared.paths == (f"s3a://{s3.bucket}/scratch/u2i/shard-00000",)
    assert sorted(k.rsplit("/", 1)[1] for k in s3.keys("scratch/")) == sorted(SHARD_FILES)
    _assert_topk(q, prepared, expected, exclude)


def test_true_topk_survives_long_exclusion_lists():
    rng = np.random.default_rng(3)
    corpus = normalise(rng.normal(size=(500, 8)).astype(np.float32))
    ids = np.arange(500, dtype=np.int64) * 10
    shard = Shard(build_index(corpus, RetrieveConfig()), ids, corpus)
    query = corpus[:1] + 0.01
    ranked = np.argsort(-(corpus @ normalise(query)[0]))
    exclude = [ids[ranked[:450]]]  # the best 450 items are all excluded
    rows, got, _ = search_topk([shard], normalise(query), exclude, 10)
    assert got.tolist() == ids[ranked[450:460]].tolist()


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_have_high_recall(index):
    rng = np.random.default_rng(5)
    corpus = normalise(rng.normal(size=(5000, 16)).astype(np.float32))
    queries = normalise(rng.normal(size=(200, 16)).astype(np.float32))
    approx = build_index(corpus, RetrieveConfig(index=index, ivf_nprobe=32), seed=1)
    assert recall(approx, queries, corpus, 10) > 0.9


def test_ivf_nprobe_is_tuned_to_the_recall_target():
    """ivf_nprobe = 0: the index visits the fewest lists (nprobe_steps) that reach halfway from
    min_recall to 1 on its own vectors; measured independently on other queries it holds up, where
    one list does not."""
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(40, 16))
    corpus, queries = clustered(rng, 8000, centres=centres), clustered(rng, 300, centres=centres)
    tuned = build_index(corpus, RetrieveConfig(index="ivf", min_recall=0.95), seed=1, k=20)
    assert 1 < tuned.nprobe < tuned.nlist
    assert recall(tuned, queries, corpus, 20) >= 0.95
    fixed = build_index(corpus, RetrieveConfig(index="ivf", ivf_nprobe=1), seed=1, k=20)
    assert fixed.nprobe == 1 and recall(fixed, queries, corpus, 20) < 0.95
    # one fewer halving would have missed the target on the corpus's own vectors
    tuned.nprobe //= 2
    assert recall(tuned, queries, corpus, 20) < 0.975 or tuned.nprobe == 1


def test_query_batches_are_regrouped_in_order_and_bounded():
    from divspa.retrieval.spark_knn import _query_tables

    batches = [pa.record_batch({"query_id": pa.array(np.arange(a, b), pa.int64())}) for a, b in ((0, 3), (3, 3), (3, 11), (11, 12))]
    tables = list(_query_tables(iter(batches), 4))
    assert [t.num_rows for t in tables] == [4, 4, 4]
    assert np.concatenate([t.column("query_id").to_numpy() for t in tables]).tolist() == list(range(12))
    assert [t.num_rows for t in _query_tables(iter(batches), 5)] == [5, 5, 2]
    assert list(_query_tables(iter([]), 4)) == []


def test_ranking_in_batches_changes_nothing():
    rng = np.random.default_rng(5)
    corpus = normalise(rng.normal(size=(400, 8)).astype(np.float32))
    ids = rng.choice(10_000, 400, replace=False).astype(np.int64)
    shards = [Shard(build_index(corpus[:250], RetrieveConfig()), ids[:250], corpus[:250]),
              Shard(build_index(corpus[250:], RetrieveConfig()), ids[250:], corpus[250:])]
    queries = normalise(rng.normal(size=(50, 8)).astype(np.float32))
    exclude = [rng.choice(ids, size=int(rng.integers(0, 40)), replace=False) for _ in range(50)]
    whole = search_topk(shards, queries, exclude, 9, batch=10_000)
    for batch in (1, 3, 7):
        got = search_topk(shards, queries, exclude, 9, batch=batch)
        for a, b in zip(got, whole, strict=True):
            assert np.array_equal(a, b)
    assert len(whole[0]) == 50 * 9


@pytest.mark.parametrize("with_exclusions", [False, True])
def test_corpus_smaller_than_k_returns_every_survivor_in_order(with_exclusions):
    rng = np.random.default_rng(11)
    corpus = normalise(rng.normal(size=(6, 4)).astype(np.float32))
    ids = np.array([50, 10, 40, 20, 60, 30], dtype=np.int64)
    queries = normalise(rng.normal(size=(4, 4)).astype(np.float32))
    exclude = ([np.array([10, 60]), np.empty(0, np.int64), np.array([30]), np.empty(0, np.int64)] if with_exclusions
               else [np.empty(0, np.int64)] * 4)
    rows, got, scores = search_topk([Shard(build_index(corpus, RetrieveConfig()), ids, corpus)], queries, exclude, 10)
    expected = brute_force(queries, np.arange(4), corpus, ids, exclude, 10)
    assert rows.tolist() == [q for q in range(4) for _ in expected[q]]  # grouped by query, in order
    assert got.tolist() == [i for q in range(4) for i, _ in expected[q]]
    assert np.allclose(scores, [s for q in range(4) for _, s in expected[q]], atol=1e-6)


def test_approximate_recall_is_measured_against_exact_search(spark, tmp_path):
    """IVF probing all 16 lists is exact (recall 1.0); probing one loses neighbours, and
    `ann_recall` says how many, on the same sampled queries whoever runs it."""
    from divspa.stages.retrieve import ann_recall

    rng = np.random.default_rng(0)
    cids = np.arange(2000)
    corpus = rng.normal(size=(2000, 16)).astype(np.float32)
    qids = np.arange(10_000, 10_300)
    queries = rng.normal(size=(300, 16)).astype(np.float32)
    q, c = spark_frames(spark, qids, queries, [[] for _ in qids], cids, corpus)
    found = {}
    for nprobe in (16, 1):
        cfg = RetrieveConfig(index="ivf", ivf_nlist=16, ivf_nprobe=nprobe, recall_sample=100)
        approx = knn(q, prepare_corpus(c, cfg, str(tmp_path / "ivf"), "c", 1), 10)
        found[nprobe] = ann_recall(q, c, approx, 10, cfg, 7)
    assert found[16] == (1.0, 100)
    assert found[1][1] == 100 and 0.1 < found[1][0] < 0.9, found[1]


def test_recall_counts_an_equally_scored_neighbour_as_found(spark):
    """Ten corpus vectors are one vector: the exact top 5 keeps the five smallest ids, an index may
    return the other five; same scores, so recall 1.0. A neighbour below the 5th score is a miss."""
    from divspa.stages.retrieve import ann_recall

    rng = np.random.default_rng(3)
    corpus = rng.normal(size=(60, 8)).astype(np.float32)
    corpus[:10] = corpus[0]
    query = (corpus[0] + 0.3 * rng.normal(size=8)).astype(np.float32)[None]
    q, c = spark_frames(spark, np.array([1000]), query, [[]], np.arange(60), corpus)
    score = (normalise(corpus).astype(np.float64) @ normalise(query)[0].astype(np.float64)).astype(np.float32)
    cfg = RetrieveConfig(index="ivf", recall_sample=10)

    def approx(ids):
        return spark.createDataFrame([(1000, int(i), float(score[i])) for i in ids], "query_id bigint, neighbour_id bigint, score float")

    assert ann_recall(q, c, approx([5, 6, 7, 8, 9]), 5, cfg, 1) == (1.0, 1)
    worst = int(np.argmin(score))
    assert ann_recall(q, c, approx([5, 6, 7, 8, worst]), 5, cfg, 1) == (0.8, 1)


def test_retrieve_writes_recall_to_metrics(trained, tmp_path):
    """The stage checks each list of an approximate index and writes ann_recall (on this small
    corpus faiss falls back to an exact index: recall 1.0)."""
    import copy
    import shutil

    from divspa.delta import Warehouse
    from divspa.pipeline import BY_NAME, run_stage
    from divspa.runtime import RunContext

    out = tmp_path / "out"
    shutil.copytree(trained.cfg.run.output_dir, out)
    cfg = copy.deepcopy(trained.cfg)
    cfg.run.output_dir = str(out)
    cfg.retrieve.index, cfg.retrieve.recall_sample = "ivf", 50
    ctx = RunContext(cfg=cfg, spark=trained.spark, force=True,
                     warehouse=Warehouse(trained.spark, str(out / "warehouse"), native=trained.warehouse.native))
    info = run_stage(ctx, BY_NAME["retrieve"])
    rows = ctx.read("metrics").where("stage = 'retrieve' AND metric = 'ann_recall'").collect()
    assert {r["model"]: (r["k"], r["value"]) for r in rows} == {"i2i": (20, 1.0), "u2i": (20, 1.0), "u2u": (5, 1.0)}
    assert info["u2u_recall"] == 1.0
    from divspa.report import write_report

    page = Path(write_report(ctx.warehouse, ctx.cfg)).read_text()
    assert "recall against exact search" in page and "<td>u2u</td><td>5</td><td>1</td>" in page


def test_a_corpus_searching_itself_is_tuned_to_min_recall_without_counting_itself():
    """u2u: the queries are the corpus, so tuning aims at min_recall (plus a margin), measured on
    the neighbours other than the query itself; the result holds for the rest of the corpus."""
    rng = np.random.default_rng(4)
    corpus = clustered(rng, 8000)
    cfg = RetrieveConfig(index="ivf", min_recall=0.9)
    itself = build_index(corpus, cfg, seed=1, k=20, self_search=True)
    others = build_index(corpus, cfg, seed=1, k=20)
    assert itself.nprobe < others.nprobe  # 0.91 instead of 0.95
    assert recall(itself, corpus[rng.choice(8000, 300, replace=False)], corpus, 20, itself=True) >= 0.9


def test_ivf_lists_stop_growing_past_the_list_size():
    """Up to 16 * ivf_list_size^2 vectors an IVF index keeps about 4*sqrt(n) lists; beyond, lists
    hold ivf_list_size vectors, so what a query scans no longer grows with the corpus."""
    cfg = RetrieveConfig(index="ivf", ivf_list_size=128)
    assert ivf_nlist(100_000, cfg) == int(4 * np.sqrt(100_000))  # 1,264 lists of 79
    assert ivf_nlist(2_000_000, cfg) == 2_000_000 // 128
    assert ivf_nlist(2_000_000, RetrieveConfig(index="ivf", ivf_nlist=300)) == 300
    assert ivf_nlist(1000, cfg) == 1000 // 39  # k-means needs 39 points a list


def test_nprobe_tuning_steps_are_at_most_a_quarter_apart():
    """A tuned nprobe overshoots the least that reaches the target by at most 25 % (above 4), and
    the last step probes every list."""
    steps = index_module.nprobe_steps(14_704)
    assert steps[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16] and steps[-1] == 14_704
    assert all(b / a <= 1.25 for a, b in zip(steps[3:-2], steps[4:-1], strict=True))
    assert steps == sorted(set(steps)) and 40 in steps and 56 in steps
    assert index_module.nprobe_steps(1) == [1] and index_module.nprobe_steps(6) == [1, 2, 3, 4, 5, 6]


def test_an_ivf_of_many_lists_has_an_hnsw_quantizer_and_reaches_min_recall(monkeypatch, tmp_path):
    """Many lists: two-level k-means and an HNSW graph over the centroids (threshold lowered here
    so that small data takes the path). Same bytes for the same seed, tuned to min_recall on
    what searches it, and the same results once written and memory-mapped."""
    monkeypatch.setattr(index_module, "LARGE_IVF_LISTS", 64)
    rng = np.random.default_rng(6)
    corpus = clustered(rng, 12000)
    cfg = RetrieveConfig(index="ivf", ivf_list_size=64, min_recall=0.9)
    index = build_index(corpus, cfg, seed=3, k=20, self_search=True)
    assert index.nlist == ivf_nlist(12000, cfg) >= 64
    quantizer = faiss.downcast_index(index.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat) and quantizer.hnsw.efSearch >= index.nprobe
    again = build_index(corpus, cfg, seed=3, k=20, self_search=True)
    assert index_module.serialize(again) == index_module.serialize(index)
    queries = corpus[rng.choice(12000, 300, replace=False)]
    assert recall(index, queries, corpus, 20, itself=True) >= 0.9
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    mapped = faiss.read_index(str(tmp_path / "index.faiss"), faiss.IO_FLAG_MMAP_IFC)
    assert mapped.nprobe == index.nprobe and (mapped.search(queries, 21)[1] == index.search(queries, 21)[1]).all()


def test_an_index_tuned_on_a_sample_of_its_queries_reaches_min_recall_on_the_rest():
    """u2i: users search the items. Queries unlike the corpus's own vectors need more lists than
    the corpus vectors show, so nprobe is tuned on a sample of the queries themselves."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(40, 16))
    corpus, users = clustered(rng, 8000, centres=centres), clustered(rng, 1000, 2.0, centres)
    cfg = RetrieveConfig(index="ivf", min_recall=0.9)
    assert recall(build_index(corpus, cfg, seed=1, k=20, queries=users[:500]), users[500:], corpus, 20) >= 0.9
    # tuned on the corpus's own vectors instead
    assert recall(build_index(corpus, cfg, seed=1, k=20), users[500:], corpus, 20) < 0.85
