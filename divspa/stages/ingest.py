"""Stage `ingest`: read the configured source, validate, write clicks, quarantine and features."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from divspa.errors import TooManyBadRows
from divspa.ingest.sources import read_source
from divspa.ingest.validate import validate
from divspa.runtime import RunContext

log = logging.getLogger(__name__)
NAME = "ingest"


def _utc(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _features(df: DataFrame | None, id_col: str, ctx: RunContext) -> DataFrame:
    if df is None:
        return ctx.spark.createDataFrame([], f"{id_col} bigint, features array<string>, run_id string")
    # One row per id: tokens of repeated ids are merged, so the result does not depend on row order.
    return (
        df.where(F.col("id").isNotNull())
        .groupBy("id")
        .agg(F.sort_array(F.array_distinct(F.flatten(F.collect_list("features")))).alias("features"))
        .select(F.col("id").alias(id_col), "features", F.lit(ctx.run_id).alias("run_id"))
    )


def run(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    source = read_source(ctx.spark, cfg)
    max_time = (_utc(cfg.ingest.max_event_time) if cfg.ingest.max_event_time
                else dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    checked = validate(source.clicks, source.time_unit, source.time_format, _utc(cfg.ingest.min_event_time), max_time)
    try:
        log.info("ingest %s: %d rows read, %d quarantined (%.3f%%) %s", source.description, checked.total,
                 checked.bad, 100 * checked.bad_fraction, checked.bad_by_reason)
        if checked.total == 0:
            raise ValueError(f"source {source.description} holds no rows (after filters)")
        if checked.bad_fraction > cfg.ingest.max_bad_fraction:
            sample = [r.asDict() for r in checked.quarantine.limit(5).collect()]
            raise TooManyBadRows(
                f"{checked.bad} of {checked.total} rows ({100 * checked.bad_fraction:.2f}%) failed validation, above "
                f"ingest.max_bad_fraction={cfg.ingest.max_bad_fraction}; by reason: {checked.bad_by_reason}; "
                f"examples: {sample}. No table was changed.")
        run_id = F.lit(ctx.run_id)
        ctx.write(NAME, "clicks_quarantine", checked.quarantine.select(
            "*", F.lit(source.description).alias("source"), run_id.alias("run_id")))
        clicks = ctx.write(NAME, "clicks", checked.clicks.withColumn("run_id", run_id))
    finally:
        checked.release()
    users = ctx.write(NAME, "user_features", _features(source.user_features, "user_id", ctx))
    items = ctx.write(NAME, "item_features", _features(source.item_features, "item_id", ctx))
    return {"rows_read": checked.total, "clicks": clicks.rows, "quarantined": checked.bad,
            "quarantine_by_reason": checked.bad_by_reason, "user_features": users.rows, "item_features": items.rows}
