"""Delta's per-file statistics (numRecords, min/max, null counts) from a Parquet footer: what an
embedded commit writes into the log so readers can skip files."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from divspa.schemas import TableSchema


def stat_value(value: Any, arrow_type: pa.DataType, is_max: bool) -> Any:
    """A Parquet footer min/max as Delta JSON stats (timestamps at ms precision, widened outward)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        micros = value.microsecond
        floored = value.replace(microsecond=(micros // 1000) * 1000)
        if is_max and micros % 1000:
            floored += dt.timedelta(milliseconds=1)
        return floored.strftime("%Y-%m-%dT%H:%M:%S.") + f"{floored.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, str) and len(value) > 32:
        return value[:32] if not is_max else None  # a truncated max would understate the real one
    return value


def file_stats(meta: pq.FileMetaData, schema: TableSchema) -> dict[str, Any]:
    """Delta per-file statistics (numRecords, min/max, null counts) from a Parquet footer."""
    arrow = schema.arrow
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    stat_cols = {f.name: f.type for f in arrow if not pa.types.is_nested(f.type)}
    complete = set(stat_cols)
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for j in range(group.num_columns):
            chunk = group.column(j)
            name = chunk.path_in_schema
            if name not in stat_cols:
                continue
            stats = chunk.statistics
            if stats is None:
                complete.discard(name)
                continue
            nulls[name] = nulls.get(name, 0) + (stats.null_count or 0)
            if not stats.has_min_max:
                if (stats.null_count or 0) < group.num_rows:
                    complete.discard(name)
                continue
            lo = stat_value(stats.min, stat_cols[name], False)
            hi = stat_value(stats.max, stat_cols[name], True)
            if lo is None or hi is None:
                complete.discard(name)
                continue
            mins[name] = lo if name not in mins else min(mins[name], lo)
            maxs[name] = hi if name not in maxs else max(maxs[name], hi)
    keep = [n for n in mins if n in complete]
    return {
        "numRecords": meta.num_rows,
        "minValues": {n: mins[n] for n in keep},
        "maxValues": {n: maxs[n] for n in keep},
        "nullCount": {n: nulls[n] for n in nulls if n in stat_cols},
    }
