"""What every part of the Delta layer shares: the write's vocabulary and small helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

WriteMode = Literal["append", "overwrite", "replace"]
STAGING_DIR = "_staging"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
STALE_STAGING_SECONDS = 6 * 3600  # a staging dir this old belongs to a writer that died


@dataclass(frozen=True)
class Txn:
    """A Delta application transaction: a write with (app_id, version) happens at most once."""

    app_id: str
    version: int


@dataclass(frozen=True)
class WriteResult:
    table: str
    version: int  # table version after the write (the existing one when skipped)
    files: int
    rows: int
    skipped: bool = False


def literal(value: Any) -> Any:
    return value if isinstance(value, (int, float)) else str(value)


def sql_literal(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def first_line(exc: BaseException) -> str:
    """The cause in one line (Py4J errors carry a JVM stack trace after it)."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("An error occurred while calling", "Traceback", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__


def filter_rows(df: DataFrame, where: dict[str, Any] | None) -> DataFrame:
    for key, value in (where or {}).items():
        df = df.filter(F.col(key) == F.lit(value))
    return df


def matches(action: dict[str, Any], where: dict[str, Any] | None) -> bool:
    return all(action.get(f"partition.{k}") == str(v) for k, v in (where or {}).items())
