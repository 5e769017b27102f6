"""The Delta layer: the one way any divspa table is read or written.

`Warehouse` is a thin façade over a location (location.py), a log reader (log.py: delta-rs, no
JVM), one engine for reads and writes chosen once (engines.py) and maintenance (maintenance.py).

Embedded mode (no delta-spark jars, e.g. these machines): Spark writes Parquet in parallel into
a private staging directory under the table; the driver moves the files into the table's
partition directories, reads each file's footer for statistics (rows, min/max, null counts),
and commits them to `_delta_log` in one transaction with delta-rs. Until that commit the files
are invisible to every Delta reader, so a failed write leaves the table exactly at its previous
version; the staging directory and moved files are removed on failure.

Native mode (delta-spark's jars on the classpath: ./dev.sh setup fetches them, clusters pass
--jars/--packages): the same calls use `format("delta")` with `replaceWhere` and
`txnAppId`/`txnVersion`; delta-spark commits. Reads of the log (versions, history, committed
transactions, row counts) go through delta-rs in both modes: it answers in milliseconds and
needs no Spark job.

Either way the result is an ordinary Delta table, readable by delta-rs, delta-spark, DuckDB...
The warehouse root may be a local path or a URI (s3a://, gs://, abfss://, hdfs://): Spark gets
the s3a:// spelling, delta-rs and pyarrow the s3:// one, with options from `divspa.storage`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow.dataset as pads
from pyspark.sql import DataFrame, SparkSession

from divspa import storage
from divspa.delta.common import STAGING_DIR, Txn, WriteMode, WriteResult
from divspa.delta.engines import EmbeddedEngine, Engine, NativeEngine, cleanup_staging, guard
from divspa.delta.location import Location
from divspa.delta.log import Log
from divspa.delta.maintenance import Maintenance
from divspa.errors import DeltaWriteError
from divspa.schemas import load_schema
from divspa.snapshot import Snapshot
from divspa.spark import delta_spark_available

__all__ = ["STAGING_DIR", "DeltaWriteError", "Txn", "Warehouse", "WriteResult"]
log = logging.getLogger(__name__)


class Warehouse:
    """A directory (or object-store prefix) of Delta tables, one per name in `schemas/`."""

    def __init__(self, spark: SparkSession | None, root: str, native: bool | None = None,
                 settings: storage.StorageSettings | None = None, checkpoint_interval: int = 10) -> None:
        """Without a session (`spark=None`) only the log-level methods work: exists, tables,
        version, committed, history, row_count, dataset, snapshot and maintenance. They are all
        delta-rs, so metadata commands answer without starting a JVM."""
        self.spark = spark  # type: ignore[assignment]
        available = spark is not None and delta_spark_available(spark)
        if native and not available:
            raise DeltaWriteError("native Delta was asked for, but this Spark session has no delta-spark "
                                  "(jars and spark.sql.extensions): run ./dev.sh setup, or pass --jars/--packages")
        self.native = available if native is None else native
        self.loc = Location(root, settings)
        self.root = self.loc.root
        self.log = Log(self.loc)
        self.maintenance = Maintenance(self.log, checkpoint_interval)
        self._engine: Engine | None = None
        if spark is not None:
            kind = NativeEngine if self.native else EmbeddedEngine
            self._engine = kind(spark, self.loc, self.log, checkpoint_interval)

    @property
    def mode(self) -> str:
        return "native (delta-spark)" if self.native else "embedded (Spark writes Parquet, delta-rs commits)"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("this Warehouse has no Spark session: it reads logs only")
        return self._engine

    # --- the log (delta-rs) ------------------------------------------------------------------

    def path(self, table: str) -> str:
        return self.loc.path(table)

    def exists(self, table: str) -> bool:
        return self.log.exists(table)

    def tables(self) -> list[str]:
        return self.log.tables()

    def version(self, table: str) -> int | None:
        return self.log.version(table)

    def committed(self, table: str, app_id: str) -> int | None:
        return self.log.committed(table, app_id)

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        return self.log.history(table, limit)

    def row_count(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> int:
        return self.log.row_count(table, version, where)

    def snapshot(self, table: str, version: int | None = None) -> Snapshot:
        return self.log.snapshot(table, version)

    def dataset(self, table: str, version: int | None = None) -> pads.Dataset:
        """The table as a pyarrow dataset (for PyTorch readers outside Spark); see divspa/snapshot.py."""
        return self.log.snapshot(table, version).dataset()

    def runs_on_disk(self, table: str) -> dict[str, int]:
        return self.log.runs_on_disk(table)

    # --- Spark reads and writes (the engine) ---------------------------------------------------

    def read(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> DataFrame:
        """The table (current or pinned version) as a Spark DataFrame.

        `where` holds equality filters (column -> value); files whose partition values or
        min/max statistics exclude them are skipped before Spark opens anything.
        """
        return self.engine.read(table, version, where)

    def write(
        self,
        table: str,
        df: DataFrame,
        mode: WriteMode = "append",
        replace: dict[str, Any] | None = None,
        txn: Txn | None = None,
        metadata: dict[str, str] | None = None,
    ) -> WriteResult:
        """Write `df` to `table` as one atomic Delta commit.

        mode "append" adds rows; "overwrite" replaces the whole table; "replace" replaces exactly
        the partitions named by `replace` (e.g. {"run_id": "2026-11-22"}), and every row of `df`
        must belong to them. With `txn`, a write whose (app_id, version) the table has already
        committed is skipped, so a re-run is a no-op.
        """
        schema = load_schema(table)
        if mode == "replace":
            if not replace:
                raise ValueError(f"table {table}: mode='replace' needs the partitions to replace")
            bad = sorted(set(replace) - set(schema.partition_by))
            if bad:
                raise ValueError(f"table {table}: can only replace by partition columns "
                                 f"{list(schema.partition_by)}, not {bad}")
        elif replace:
            raise ValueError(f"table {table}: `replace` goes with mode='replace', not {mode!r}")
        if txn is not None:
            done = self.committed(table, txn.app_id)
            if done is not None and done >= txn.version:
                version = self.version(table)
                log.info("%s: transaction %s v%d already committed; skipping write", table, txn.app_id, txn.version)
                return WriteResult(table, version if version is not None else -1, 0, 0, skipped=True)
        guarded = guard(schema, df, replace if mode == "replace" else None)
        started = time.monotonic()
        result = self.engine.write(schema, guarded, mode, replace, txn, metadata)
        log.info("%s: %s committed version %d (%d rows in %d files) in %.1fs", table, mode, result.version,
                 result.rows, result.files, time.monotonic() - started)
        return result

    # --- maintenance (delta-rs) ----------------------------------------------------------------

    def cleanup(self, table: str, older_than_s: float = 0) -> int:
        """Remove staging directories of embedded writes that died (older than `older_than_s`)."""
        return cleanup_staging(self.loc, table, older_than_s)

    def drop_runs(self, table: str, run_ids: list[str]) -> int:
        return self.maintenance.drop_runs(table, run_ids)

    def checkpoint(self, table: str) -> None:
        self.maintenance.checkpoint(table)

    def compact(self, table: str) -> dict[str, Any]:
        return self.maintenance.compact(table)

    def vacuum(self, table: str, retention_hours: int = 168) -> list[str]:
        return self.maintenance.vacuum(table, retention_hours)
