"""Augmentation: exclusions, weights, partition independence and sampler distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from divspa.augmentation.sampling import beta_rank_probs, sample_groups
from divspa.config import AugmentConfig
from divspa.models.checkpoint import load_checkpoint
from divspa.stages.train_base import BASE_VERSION, checkpoint_path
from divspa.stages.train_divspa import train_student
from tests.conftest import overridden, rerun


@pytest.fixture(scope="module")
def augmented(trained):
    rerun(trained, "retrieve")
    rerun(trained, "augment")
    return trained


def test_neighbours_respect_exclusions(augmented):
    nb = augmented.read("neighbours")
    assert nb.where((F.col("strategy").isin("i2i", "u2u")) & (F.col("query_id") == F.col("neighbour_id"))).count() == 0
    examples = augmented.read("train_examples")
    fitted = examples.where(~F.col("is_val")).select(F.col("user_id").alias("query_id"),
                                                     F.col("item_id").alias("neighbour_id"))
    assert nb.where("strategy = 'u2i'").join(fitted, ["query_id", "neighbour_id"]).count() == 0
    # The validation slice is not excluded (augment.exclude = fit): like test items, its items may
    # be retrieved, so early stopping sees students under test conditions.
    val_only = examples.where(F.col("is_val")).select(F.col("user_id").alias("query_id"),
                                                      F.col("item_id").alias("neighbour_id")).subtract(fitted)
    assert val_only.count() > 0
    assert nb.where("strategy = 'u2i'").join(val_only, ["query_id", "neighbour_id"]).count() > 0
    per_query = nb.groupBy("strategy", "query_id").agg(F.max("rank").alias("r"), F.count(F.lit(1)).alias("n"))
    assert per_query.where("r != n").count() == 0
    assert per_query.where("strategy = 'u2u' and n > 5").count() == 0
    assert per_query.where("strategy != 'u2u' and n > 20").count() == 0


def test_augmented_rows_are_valid(augmented):
    aug = augmented.read("augmented_positives")
    assert {r[0] for r in aug.select("strategy").distinct().collect()} == {"u2i", "i2i", "u2u2i"}
    seen = augmented.read("train_examples").where(~F.col("is_val")).select(
        "user_id", F.col("item_id").alias("aug_item_id"))
    assert aug.join(seen, ["user_id", "aug_item_id"]).count() == 0  # neither v+ nor any fitted train item of u
    groups = aug.groupBy("user_id", "item_id", "strategy").agg(
        F.sum("weight").alias("w"), F.count(F.lit(1)).alias("n"), F.max("rank").alias("r"))
    assert groups.where(F.abs(F.col("w") - 1.0) > 1e-5).count() == 0
    assert groups.where("n > 3").count() == 0 and groups.where("r > 10").count() == 0
    assert aug.where("weight <= 0 or score > 1.0001").count() == 0


def test_augmentation_metrics_describe_the_written_table(augmented):
    from divspa.long_tail import long_tail_mask

    ctx = augmented
    rows = ctx.read("augmented_positives").collect()
    n: dict[int, int] = {}
    for r in ctx.read("train_examples").select("item_id").collect():
        n[r.item_id] = n.get(r.item_id, 0) + 1
    items = sorted(n)
    tail = {i for i, t in zip(items, long_tail_mask([n[i] for i in items], ctx.cfg.augment.long_tail_share)[1:],
                              strict=True) if t}
    metrics = {(r.model, r.metric): r.value for r in ctx.read("metrics").where("stage = 'augment'").collect()}
    for s in ("u2i", "i2i", "u2u2i"):
        mine = [r for r in rows if r.strategy == s]
        assert metrics[(s, "rows")] == len(mine)
        assert metrics[(s, "positives")] == len({(r.user_id, r.item_id) for r in mine})
        assert metrics[(s, "distinct_aug_items")] == len({r.aug_item_id for r in mine})
        assert metrics[(s, "long_tail_share")] == pytest.approx(sum(r.aug_item_id in tail for r in mine) / len(mine))
        weights = sorted(r.weight for r in mine)
        assert weights[0] <= metrics[(s, "weight_p10")] <= metrics[(s, "weight_p50")] <= metrics[(s, "weight_p90")] <= weights[-1]
        assert metrics[(s, "score_p50")] == pytest.approx(sorted(r.score for r in mine)[len(mine) // 2], abs=0.02)


def test_scores_are_the_teachers_cosine(augmented):
    aug = augmented.read("augmented_positives").limit(50).collect()
    users = {r["user_id"]: np.array(r["vector"]) for r in augmented.read("user_embeddings").collect()}
    items = {r["item_id"]: np.array(r["vector"]) for r in augmented.read("item_embeddings").collect()}
    for r in aug:
        u, v = users[r["user_id"]], items[r["aug_item_id"]]
        assert abs(r["score"] - u @ v / np.linalg.norm(u) / np.linalg.norm(v)) < 1e-5


def rows(ctx):
    return sorted(tuple(r) for r in ctx.read("augmented_positives").collect())


def test_table_is_identical_with_1_3_and_8_partitions(augmented):
    """In both Delta modes (native: delta-spark commits; embedded: delta-rs commits)."""
    from divspa.delta import Warehouse

    ctx = augmented
    original = ctx.warehouse
    results = []
    # Each mode with different partition counts: every result must equal every other.
    plan = [("native", 1), ("embedded", 3), ("native", 8)] if original.native else \
        [("embedded", 1), ("embedded", 3), ("embedded", 8)]
    session_shuffle = ctx.spark.conf.get("spark.sql.shuffle.partitions")
    for mode, parts in plan:
        with overridden(ctx, warehouse=Warehouse(ctx.spark, original.root, native=mode == "native")), \
                overridden(ctx.cfg.retrieve, partitions=parts), overridden(ctx.cfg.augment, partitions=parts):
            rerun(ctx, "retrieve")
            rerun(ctx, "augment")
            results.append(rows(ctx))
        # augment.partitions holds for the stage only: later stages see the session's setting
        assert ctx.spark.conf.get("spark.sql.shuffle.partitions") == session_shuffle
    assert results[0] and all(r == results[0] for r in results)


def test_popularity_debias_moves_candidates_to_the_long_tail(augmented):
    from divspa.stages.augment import augmented as augmented_rows

    ctx = augmented
    clicks = ctx.read("train_examples").where(~F.col("is_val")).groupBy(F.col("item_id").alias("aug_item_id")).agg(
        F.count(F.lit(1)).alias("n"))
    default = augmented_rows(ctx, BASE_VERSION).cache()
    with overridden(ctx.cfg.augment, popularity_debias=1.0):
        debiased = augmented_rows(ctx, BASE_VERSION).cache()
    # The table written with g = 0 is the configured rule, unchanged by the option's existence.
    written = ctx.read("augmented_positives").where(F.col("model_version") == BASE_VERSION)
    assert sorted(map(tuple, default.collect())) == sorted(map(tuple, written.select(*default.columns).collect()))
    mean_clicks = {name: df.join(clicks, "aug_item_id").agg(F.avg("n")).first()[0]
                   for name, df in (("default", default), ("debiased", debiased))}
    assert mean_clicks["debiased"] < 0.9 * mean_clicks["default"], mean_clicks
    # Same groups and sizes, weights still sum to 1; `score` stays the teacher's own cosine.
    groups = debiased.groupBy("user_id", "item_id", "strategy").agg(F.sum("weight").alias("w"), F.count("*").alias("n"))
    assert groups.where(F.abs(F.col("w") - 1.0) > 1e-5).count() == 0 and groups.where("n > 3").count() == 0
    assert groups.count() == default.select("user_id", "item_id", "strategy").distinct().count()
    assert debiased.where("score > 1.0001").count() == 0


def test_candidates_exclude_the_fitted_clicks_not_the_validation_slice(augmented):
    from divspa.stages.augment import candidate_rows

    ctx = augmented
    examples = ctx.read("train_examples")
    fitted = examples.where(~F.col("is_val")).select("user_id", F.col("item_id").alias("aug_item_id"))
    val_only = examples.where(F.col("is_val")).select("user_id", F.col("item_id").alias("aug_item_id")).subtract(fitted)
    fit = candidate_rows(ctx, BASE_VERSION)
    # The validation slice is to a student what the test split is: its items may be candidates.
    assert fit.join(fitted, ["user_id", "aug_item_id"]).count() == 0
    assert fit.join(val_only, ["user_id", "aug_item_id"]).count() > 0


def test_rank_by_neighbour_uses_each_strategys_own_similarity(augmented):
    from divspa.stages.augment import candidate_rows

    ctx = augmented
    with overridden(ctx.cfg.augment, rank_by="neighbour"):
        rows = candidate_rows(ctx, BASE_VERSION).collect()
    nb = ctx.read("neighbours").where(F.col("model_version") == BASE_VERSION).collect()
    sim = {(r.strategy, r.query_id, r.neighbour_id): r.score for r in nb}
    clicked: dict[int, set[int]] = {}
    for r in ctx.read("user_histories").collect():
        clicked[r.user_id] = set(r.history)
    peers: dict[int, list[tuple[int, float]]] = {}
    for (strategy, q, n), score in sim.items():
        if strategy == "u2u":
            peers.setdefault(q, []).append((n, score))
    i2i = [r for r in rows if r.strategy == "i2i"]
    u2u2i = [r for r in rows if r.strategy == "u2u2i"]
    assert i2i and u2u2i
    # i2i: s(v+, v) from the neighbours table, ranks in its order; u2u2i: summed peer similarity.
    assert all(abs(r.selection - sim[("i2i", r.item_id, r.aug_item_id)]) < 1e-6 for r in i2i)
    for r in u2u2i:
        expected = sum(s for p, s in peers[r.user_id] if r.aug_item_id in clicked.get(p, ()))
        assert abs(r.selection - expected) < 1e-4, (r, expected)
    groups: dict[tuple, list] = {}
    for r in i2i + u2u2i:
        groups.setdefault((r.user_id, r.item_id, r.strategy), []).append(r)
    for g in groups.values():
        ordered = sorted(g, key=lambda r: r["rank"])
        assert all(a.selection >= b.selection for a, b in zip(ordered, ordered[1:], strict=False))
    # `score` stays the teacher's cosine: it differs from the selection somewhere.
    assert any(abs(r.score - r.selection) > 1e-3 for r in i2i)


def test_ablation_switches_strategies_off(augmented):
    ctx = augmented
    with overridden(ctx.cfg.augment, strategies=["i2i"]):
        rerun(ctx, "augment")
        assert {r[0] for r in ctx.read("augmented_positives").select("strategy").distinct().collect()} == {"i2i"}
    rerun(ctx, "augment")


def test_student_without_strategies_is_the_base_model(augmented):
    # DESIGN: "with all off the student is the base model". Same examples in the same layout, same
    # seed: the student must stream the base model's batches and negatives and end bit-identical.
    ctx = augmented
    base = load_checkpoint(checkpoint_path(ctx, BASE_VERSION)).model.state_dict()
    students = {}
    for name, strategies in (("wo-all", []), ("all", ["u2i", "i2i", "u2u2i"])):
        with overridden(ctx.cfg.augment, strategies=strategies):
            train_student(ctx, f"test.{name}", BASE_VERSION, f"test-{name}")
        students[name] = load_checkpoint(checkpoint_path(ctx, f"test-{name}")).model.state_dict()
    assert base.keys() == students["wo-all"].keys()
    assert all(torch.equal(base[k], students["wo-all"][k]) for k in base)
    assert not all(torch.equal(base[k], students["all"][k]) for k in base)  # augmentation does change it


def synthetic_candidates(groups: int, k: int) -> tuple[np.ndarray, ...]:
    """(group, candidate id, selection, rank) of `groups` groups of k ranked candidates, and uniform
    numbers hashed as the augmentation hashes them."""
    from divspa.xxhash import uniform, xxhash64

    scores = np.array([0.9 - 0.08 * r for r in range(k)], np.float32)  # rank 1 best
    group = np.repeat(np.arange(groups), k)
    aug = np.tile(1000 + np.arange(k), groups).astype(np.int64)
    rank = np.tile(np.arange(1, k + 1), groups)
    r = uniform(xxhash64(11, group.astype(np.int64), group.astype(np.int64), "u2i", aug))
    return group, aug, np.tile(scores.astype(np.float64), groups), rank, r, scores


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# 99.9% quantile of chi-square with 9 degrees of freedom (k = 10 ranks).
CHI2_9_999 = 27.877


@pytest.mark.parametrize("sampler", ["uniform", "importance", "beta"])
def test_samplers_have_the_intended_distribution(sampler):
    k, groups = 10, 6000
    group, aug, sel, rank, r, scores = synthetic_candidates(groups, k)
    cfg = AugmentConfig(k=k, m=1, sampler=sampler, beta_alpha=0.5)
    chosen, _ = sample_groups(group, aug, sel, rank, r, cfg)
    counts = np.bincount(rank[chosen] - 1, minlength=k).astype(float)
    assert counts.sum() == groups
    probs = {"uniform": np.full(k, 1 / k), "importance": scores / scores.sum(),
             "beta": np.array(beta_rank_probs(k, 0.5)[k - 1])}[sampler]
    assert chi_square(counts, probs) < CHI2_9_999
    if sampler == "beta":  # Beta(0.5, 0.5) favours both ends of the ranking
        assert counts[0] > counts[4] and counts[-1] > counts[5]


def test_sampling_without_replacement_and_weights():
    group, aug, sel, rank, r, _ = synthetic_candidates(50, 10)
    chosen, weight = sample_groups(group, aug, sel, rank, r, AugmentConfig(k=10, m=3))
    for g in range(50):
        mine = group[chosen] == g
        picks, w = aug[chosen][mine], weight[mine]
        assert len(picks) == 3 and len(set(picks.tolist())) == 3
        assert np.allclose(w, sel[chosen][mine] / sel[chosen][mine].sum(), atol=1e-6)


def test_the_sampler_is_sparks_window_sampler(spark):
    """The numpy sampler draws what the Spark SQL windows it replaced drew (same hash, same keys,
    same sums in the same order): the same seed gives the same table as before the Arrow pass."""
    from pyspark.sql import Window

    rng = np.random.default_rng(3)
    n = 4000
    group = rng.integers(0, 300, n)
    aug = rng.integers(0, 10**6, n)
    group, aug = np.unique(np.stack([group, aug], 1), axis=0).T  # one row per (group, candidate)
    sel = rng.uniform(0.0, 1.0, len(group))
    for sampler in ("importance", "uniform"):
        cfg = AugmentConfig(k=50, m=3, sampler=sampler)
        df = spark.createDataFrame([(int(g), int(a), float(x)) for g, a, x in zip(group, aug, sel, strict=True)],
                                   "user_id bigint, aug_item_id bigint, sel double")
        whole = Window.partitionBy("user_id").orderBy("aug_item_id").rowsBetween(Window.unboundedPreceding,
                                                                                 Window.unboundedFollowing)
        floor = F.greatest(F.col("sel"), F.lit(cfg.min_score))
        prob = floor / F.sum(floor).over(whole) if sampler == "importance" else F.lit(1.0) / F.count(F.lit(1)).over(whole)
        h = F.xxhash64(F.lit(7), "user_id", "user_id", F.lit("i2i"), "aug_item_id")
        u = (F.pmod(h, F.lit(2**53)).cast("double") + F.lit(0.5)) / F.lit(float(2**53))
        pick = Window.partitionBy("user_id").orderBy(F.col("_key").desc(), F.col("aug_item_id").asc())
        chosen = (df.withColumn("_key", F.log(u) / prob).withColumn("_p", F.row_number().over(pick))
                  .where("_p <= 3").withColumn("w", (floor / F.sum(floor).over(whole)).cast("float")))
        expected = sorted((r.user_id, r.aug_item_id, r.w) for r in chosen.collect())
        from divspa.xxhash import uniform, xxhash64

        r = uniform(xxhash64(7, group, group, "i2i", aug))
        idx, weight = sample_groups(group, aug, sel, np.ones(len(group), np.int64), r, cfg)
        got = sorted(zip(group[idx].tolist(), aug[idx].tolist(), weight.tolist(), strict=True))
        assert got == expected, sampler

