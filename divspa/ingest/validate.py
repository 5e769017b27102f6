"""Validation of raw click rows: typed clicks out, every rejected row kept with its reason.

Rules, in order (a row is reported under the first it breaks): null or non-integer or negative
ids; null, unparsable or out-of-range event times; exact duplicates of a valid row (one copy
is kept, the others are quarantined).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

log = logging.getLogger(__name__)

EPOCH_FACTORS = {"s": 1_000_000, "ms": 1_000, "us": 1}
DUPLICATE = "exact duplicate"


@dataclass
class Validated:
    clicks: DataFrame  # user_id, item_id, event_time
    quarantine: DataFrame  # raw_user_id, raw_item_id, raw_event_time, reason
    total: int
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    cached: list[DataFrame] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return sum(self.bad_by_reason.values())

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.total if self.total else 0.0

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def parse_id(col: Column, dtype: T.DataType) -> Column:
    """A long id, or null when the value is not an integer (strings like '12.5', 'abc', 1.5)."""
    if isinstance(dtype, (T.LongType, T.IntegerType, T.ShortType, T.ByteType)):
        return col.cast("long")
    if isinstance(dtype, (T.DoubleType, T.FloatType, T.DecimalType)):
        return F.when(col == F.floor(col), col.try_cast("long"))
    text = F.trim(col.cast("string"))
    return F.when(text.rlike(r"^[+-]?[0-9]+$"), text.try_cast("long"))


def parse_time(col: Column, dtype: T.DataType, unit: str, fmt: str | None) -> Column:
    """A UTC timestamp, or null when the value cannot be read as the configured unit/format."""
    if fmt:
        return F.try_to_timestamp(col.cast("string"), F.lit(fmt))
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return col.cast("timestamp")
    if unit == "timestamp":
        return col.cast("string").try_cast("timestamp")
    number = col.try_cast("double")
    micros = number * F.lit(EPOCH_FACTORS[unit])
    # Guard before the cast: under ANSI a huge value would fail the job instead of one row. Such a
    # value is a number, just not a plausible time: clamp it so the range rule reports it.
    in_range = F.abs(micros) < F.lit(1e17)
    return (F.when(number.isNull(), None)
            .when(in_range, F.timestamp_micros(micros.cast("long")))
            .when(micros > 0, F.lit(dt.datetime(9999, 12, 31, tzinfo=dt.UTC)))
            .otherwise(F.lit(dt.datetime(1, 1, 2, tzinfo=dt.UTC))))


def validate(raw: DataFrame, time_unit: str, time_format: str | None, min_time: dt.datetime,
             max_time: dt.datetime) -> Validated:
    types = {f.name: f.dataType for f in raw.schema.fields}
    user = parse_id(F.col("raw_user"), types["raw_user"])
    item = parse_id(F.col("raw_item"), types["raw_item"])
    ts = parse_time(F.col("raw_time"), types["raw_time"], time_unit, time_format)
    extra = F.col("extra_fields") if "extra_fields" in raw.columns else F.lit(False)  # CSV rows only
    parsed = raw.select("raw_user", "raw_item", "raw_time", user.alias("user_id"), item.alias("item_id"),
                        ts.alias("event_time"), extra.alias("extra_fields"))
    reason = (
        F.when(F.col("extra_fields"), "more fields than the header")
        .when(F.col("raw_user").isNull(), "null user_id")
        .when(F.col("user_id").isNull(), "non-integer user_id")
        .when(F.col("user_id") < 0, "negative user_id")
        .when(F.col("raw_item").isNull(), "null item_id")
        .when(F.col("item_id").isNull(), "non-integer item_id")
        .when(F.col("item_id") < 0, "negative item_id")
        .when(F.col("raw_time").isNull(), "null event_time")
        .when(F.col("event_time").isNull(), "unparsable event_time")
        .when((F.col("event_time") < F.lit(min_time)) | (F.col("event_time") > F.lit(max_time)),
              "event_time out of range")
    )
    # Cached: the source is read once for the counts, the clicks and the quarantine.
    judged = parsed.withColumn("reason", reason).persist(StorageLevel.MEMORY_AND_DISK)
    # Exact duplicates: group valid rows by their parsed value; n-1 copies of each go to quarantine.
    grouped = (
        judged.where(F.col("reason").isNull())
        .groupBy("user_id", "item_id", "event_time")
        .agg(F.count(F.lit(1)).alias("copies"))
    ).persist(StorageLevel.MEMORY_AND_DISK)
    clicks = grouped.select("user_id", "item_id", "event_time")
    invalid = judged.where(F.col("reason").isNotNull()).select(
        F.col("raw_user").cast("string").alias("raw_user_id"),
        F.col("raw_item").cast("string").alias("raw_item_id"),
        F.col("raw_time").cast("string").alias("raw_event_time"),
        "reason",
    )
    duplicates = grouped.where(F.col("copies") > 1).select(
        F.col("user_id").cast("string").alias("raw_user_id"),
        F.col("item_id").cast("string").alias("raw_item_id"),
        F.col("event_time").cast("string").alias("raw_event_time"),
        F.lit(DUPLICATE).alias("reason"),
        F.explode(F.array_repeat(F.lit(1), (F.col("copies") - 1).cast("int"))).alias("_copy"),
    ).drop("_copy")
    counts = {r["reason"]: r["n"] for r in judged.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
    valid_rows = counts.pop(None, 0)
    dup_rows = grouped.agg(F.sum(F.col("copies") - 1)).first()[0] or 0
    if dup_rows:
        counts[DUPLICATE] = int(dup_rows)
    total = valid_rows + sum(counts.values()) - int(dup_rows)
    return Validated(clicks, invalid.unionByName(duplicates), total, dict(sorted(counts.items())), [judged, grouped])
