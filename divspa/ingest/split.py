"""Chronological split; test keeps only users and items seen in train.

`global` (the default): one time cut, which is what a scheduled retrieval model faces: trained
on everything before a moment, serving everything after it. `per_user`: each user's latest
clicks are test, so every user with enough clicks is evaluated; it is the protocol for small
public datasets, whose users are rarely active after a global cut.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from divspa.config import SplitConfig
from divspa.errors import SplitError


@dataclass
class Split:
    rows: DataFrame  # user_id, item_id, event_time, split
    cut: dt.datetime | None  # the global cut; None for per_user


def cut_time(clicks: DataFrame, cfg: SplitConfig) -> dt.datetime:
    if cfg.cut_time:
        cut = dt.datetime.fromisoformat(cfg.cut_time)
        return cut if cut.tzinfo else cut.replace(tzinfo=dt.UTC)
    # Quantile of the event times in microseconds (relative error 1e-4: a few seconds on a year).
    q = clicks.select(F.unix_micros("event_time").alias("t")).approxQuantile("t", [1.0 - cfg.test_fraction], 1e-4)
    if not q:
        raise SplitError("the clicks table holds no rows for this run: nothing to split")
    return dt.datetime.fromtimestamp(0, dt.UTC) + dt.timedelta(microseconds=int(q[0]))


def chronological_split(clicks: DataFrame, cfg: SplitConfig) -> Split:
    if cfg.mode == "per_user":
        # A user's n clicks, latest first (ties by item id): the first floor(n * test_fraction) are test.
        latest = Window.partitionBy("user_id").orderBy(F.col("event_time").desc(), F.col("item_id").desc())
        ranked = clicks.select("*", F.row_number().over(latest).alias("_r"),
                               F.count(F.lit(1)).over(Window.partitionBy("user_id")).alias("_n"))
        is_test = F.col("_r") <= F.floor(F.col("_n") * F.lit(cfg.test_fraction))
        cut = None
    else:
        cut = cut_time(clicks, cfg)
        ranked = clicks
        is_test = F.col("event_time") >= F.lit(cut)
    train = ranked.where(~is_test)
    if cfg.max_train_clicks:
        draw = Window.partitionBy("user_id").orderBy(
            F.xxhash64("user_id", "item_id", "event_time"), F.col("event_time"), F.col("item_id"))
        train = train.withColumn("_t", F.row_number().over(draw)).where(F.col("_t") <= cfg.max_train_clicks).drop("_t")
    test = (
        ranked.where(is_test)
        .join(train.select("user_id").distinct(), "user_id", "left_semi")
        .join(train.select("item_id").distinct(), "item_id", "left_semi")
    )
    rows = train.withColumn("split", F.lit("train")).unionByName(test.withColumn("split", F.lit("test")))
    return Split(rows.select("user_id", "item_id", "event_time", "split"), cut)
