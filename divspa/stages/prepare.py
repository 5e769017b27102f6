"""Stage `prepare`: turn the split into what PyTorch streams.

train_examples: one row per train click with the user's previous `history_len` clicks, taken
strictly before the click's time (a click at the same instant is not history: no leakage), and
an `is_val` flag on the latest `val_fraction` of train for early stopping.

user_histories: one row per train user as of the cut: the last `history_len` train items (the
input of the exported user vector), every train item (excluded from retrieval and masked in
evaluation) and the test items not already clicked in train (the evaluation targets).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from divspa.runtime import RunContext

NAME = "prepare"


def _user_features(ctx: RunContext) -> DataFrame:
    return ctx.read("user_features").select("user_id", F.col("features").alias("user_features"))


def _with_features(df: DataFrame, features: DataFrame) -> DataFrame:
    joined = df.join(features, "user_id", "left")
    return joined.withColumn("user_features", F.coalesce("user_features", F.array().cast("array<string>")))


def train_examples(train: DataFrame, features: DataFrame, history_len: int, val_fraction: float) -> DataFrame:
    order = Window.partitionBy("user_id").orderBy("event_time", "item_id").rowsBetween(-history_len, -1)
    previous = F.collect_list(F.struct("event_time", "item_id")).over(order)
    earlier = F.filter(previous, lambda p: p["event_time"] < F.col("event_time"))
    examples = train.select("user_id", "item_id", "event_time",
                            F.transform(earlier, lambda p: p["item_id"]).alias("history"))
    if val_fraction > 0:
        q = train.select(F.unix_micros("event_time").alias("t")).approxQuantile("t", [1.0 - val_fraction], 1e-4)
        val_cut = dt.datetime.fromtimestamp(0, dt.UTC) + dt.timedelta(microseconds=int(q[0]))
        is_val = F.col("event_time") >= F.lit(val_cut)
    else:
        is_val = F.lit(False)
    return _with_features(examples.withColumn("is_val", is_val), features)


def in_example_order(examples: DataFrame, partitions: int) -> DataFrame:
    """The one file layout and row order of every example table (train_examples, divspa_examples).

    The trainer's seeded shuffle permutes row groups and rows, so two tables holding the same
    examples in the same layout stream the same batches. A student trained on divspa_examples
    with every strategy off then sees exactly the base model's batches (and negatives), and is
    the base model; with augmentation on, it differs from base by the augmentation alone.
    """
    # A computed key, not repartition(n, "user_id"): Spark drops a repartition on a column the plan
    # is already hash-partitioned by, and AQE then merges small partitions differently per table.
    key = F.pmod(F.xxhash64("user_id"), F.lit(partitions))
    return examples.repartition(partitions, key).sortWithinPartitions("user_id", "item_id", "history")


def user_histories(train: DataFrame, test: DataFrame, features: DataFrame, history_len: int) -> DataFrame:
    seq = train.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct("event_time", "item_id"))).alias("seq"),
        F.sort_array(F.collect_set("item_id")).alias("train_items"),
    )
    items = F.transform("seq", lambda p: p["item_id"])
    start = F.greatest(F.size("seq") - F.lit(history_len - 1), F.lit(1))
    hist = seq.select("user_id", F.slice(items, start, F.lit(history_len)).alias("history"), "train_items")
    targets = test.groupBy("user_id").agg(F.sort_array(F.collect_set("item_id")).alias("test_all"))
    out = hist.join(targets, "user_id", "left").select(
        "user_id", "history", "train_items",
        F.array_except(F.coalesce("test_all", F.array().cast("array<bigint>")), F.col("train_items")).alias("test_items"),
    )
    return _with_features(out, features)


def run(ctx: RunContext) -> dict[str, Any]:
    split = ctx.read("split_clicks")
    train = split.where(F.col("split") == "train").select("user_id", "item_id", "event_time")
    test = split.where(F.col("split") == "test").select("user_id", "item_id", "event_time")
    features = _user_features(ctx)
    mcfg, tcfg = ctx.cfg.model, ctx.cfg.train
    run_id = F.lit(ctx.run_id).alias("run_id")
    examples = train_examples(train, features, mcfg.history_len, tcfg.val_fraction)
    ex = ctx.write(NAME, "train_examples",
                   in_example_order(examples, ctx.cfg.spark.shuffle_partitions).select("*", run_id))
    hist = ctx.write(NAME, "user_histories",
                     user_histories(train, test, features, mcfg.history_len).select("*", run_id))
    return {"train_examples": ex.rows, "users": hist.rows}
