"""The Delta layer: the one way any divspa table is read or written.

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

import contextlib
import datetime as dt
import json
import logging
import math
import posixpath
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    Transaction,
    create_table_with_add_actions,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from divspa import storage
from divspa.errors import DeltaWriteError
from divspa.schemas import TableSchema, check_dataframe, load_schema
from divspa.snapshot import Snapshot
from divspa.spark import delta_spark_available

log = logging.getLogger(__name__)

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


class Warehouse:
    """A directory (or object-store prefix) of Delta tables, one per name in `schemas/`."""

    def __init__(self, spark: SparkSession | None, root: str, native: bool | None = None,
                 settings: storage.StorageSettings | None = None, checkpoint_interval: int = 10) -> None:
        """Without a session (`spark=None`) only the log-level methods work: exists, tables,
        version, committed, history, row_count, dataset. They are all delta-rs, so metadata
        commands answer without starting a JVM."""
        self.spark = spark  # type: ignore[assignment]
        self.root = storage.resolve(root)
        available = spark is not None and delta_spark_available(spark)
        if native and not available:
            raise DeltaWriteError("native Delta was asked for, but this Spark session has no delta-spark "
                                  "(jars and spark.sql.extensions): run ./dev.sh setup, or pass --jars/--packages")
        self.native = available if native is None else native
        # Delta's own default is 10 commits, delta-rs's 100: tables divspa creates say it explicitly.
        self.checkpoint_interval = checkpoint_interval
        if self.native:
            spark.conf.set("spark.databricks.delta.properties.defaults.checkpointInterval", str(checkpoint_interval))
        self.settings = settings or storage.settings()
        self.options = self.settings.delta_options(self.root)
        self.fs, self._fs_root = self.settings.filesystem(self.root)

    @property
    def mode(self) -> str:
        return "native (delta-spark)" if self.native else "embedded (Spark writes Parquet, delta-rs commits)"

    # --- locations ---------------------------------------------------------------------------

    def path(self, table: str) -> str:
        """The table's location as configured (a path, or a URI such as s3a://...)."""
        return storage.join(self.root, table)

    def _rs_uri(self, table: str) -> str:
        return storage.object_uri(self.path(table))

    def _spark_uri(self, table: str) -> str:
        return storage.spark_uri(self.path(table))

    def _fs_path(self, table: str, *parts: str) -> str:
        return posixpath.join(self._fs_root, table, *parts)

    def exists(self, table: str) -> bool:
        try:
            return DeltaTable.is_deltatable(self._rs_uri(table), storage_options=self.options)
        except Exception as exc:  # delta-rs raises a bare OSError/Exception for unreachable stores
            raise storage.StorageError(f"cannot reach {self.path(table)}: {str(exc).splitlines()[0]}") from exc

    def tables(self) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(self._fs_root, allow_not_found=True))
        return sorted(i.base_name for i in info if i.type == pafs.FileType.Directory and self.exists(i.base_name))

    def _delta(self, table: str, version: int | None = None) -> DeltaTable:
        if not self.exists(table):
            raise FileNotFoundError(f"table {table!r} does not exist under {self.root}")
        return DeltaTable(self._rs_uri(table), version=version, storage_options=self.options)

    def version(self, table: str) -> int | None:
        return self._delta(table).version() if self.exists(table) else None

    def committed(self, table: str, app_id: str) -> int | None:
        """The last committed version of application transaction `app_id` in `table`, if any."""
        return self._delta(table).transaction_version(app_id) if self.exists(table) else None

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first. divspa's commit metadata appears as top-level `divspa.*` keys
        in both modes (delta-spark keeps it in `userMetadata`, delta-rs as commit info)."""
        out = []
        for entry in self._delta(table).history(limit):
            user = entry.get("userMetadata")
            if isinstance(user, str) and user.startswith("{"):
                with contextlib.suppress(ValueError):
                    entry = {**json.loads(user), **entry}
            rows = (entry.get("operationMetrics") or {}).get("numOutputRows")
            if rows is not None and "divspa.rows" not in entry:
                entry["divspa.rows"] = str(rows)
            out.append(entry)
        return out

    def row_count(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> int:
        """Rows in the snapshot, from the per-file statistics in the log (no data is read)."""
        actions = pa.table(self._delta(table, version).get_add_actions(flatten=True)).to_pylist()
        return sum(a["num_records"] or 0 for a in actions if _matches(a, where))

    # --- reading -----------------------------------------------------------------------------

    def read(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> DataFrame:
        """The table (current or pinned version) as a Spark DataFrame.

        `where` holds equality filters (column -> value); files whose partition values or
        min/max statistics exclude them are skipped before Spark opens anything.
        """
        if self.native:
            if not self.exists(table):
                raise FileNotFoundError(f"table {table!r} does not exist under {self.root}")
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            return _filter(reader.load(self._spark_uri(table)), where)
        dtable = self._delta(table, version)
        _check_plain_parquet(table, dtable)
        spark_schema = from_arrow_schema(pa.schema(dtable.schema().to_arrow()))
        predicate = [(k, "=", _literal(v)) for k, v in (where or {}).items()] or None
        files = dtable.file_uris(file_pruning_predicate=predicate) if predicate else dtable.file_uris()
        if not files:
            return self.spark.createDataFrame([], spark_schema)
        df = (
            self.spark.read.schema(spark_schema)
            .option("basePath", self._spark_uri(table))
            .parquet(*map(storage.spark_uri, files))
            .select(*spark_schema.names)
        )
        return _filter(df, where)

    def dataset(self, table: str, version: int | None = None) -> pads.Dataset:
        """The table as a pyarrow dataset (for PyTorch readers outside Spark); see divspa/snapshot.py."""
        return self.snapshot(table, version).dataset()

    def snapshot(self, table: str, version: int | None = None) -> Snapshot:
        """One version of the table (the latest by default) as a picklable list of files."""
        if not self.exists(table):
            raise FileNotFoundError(f"table {table!r} does not exist under {self.root}")
        return Snapshot.load(self._rs_uri(table), version, self.options)

    # --- writing -----------------------------------------------------------------------------

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
        guarded = _guard(schema, df, replace if mode == "replace" else None)
        started = time.monotonic()
        if self.native:
            for attempt in range(1, NATIVE_ATTEMPTS + 1):
                try:
                    result = self._write_native(schema, guarded, mode, replace, txn, metadata)
                    break
                except Exception as exc:
                    if attempt < NATIVE_ATTEMPTS and _is_commit_race(exc):
                        # Another run committed first (two runs creating one table, a concurrent
                        # metadata change): this write's partitions are its own, so write again.
                        log.warning("%s: concurrent commit (%s); retrying the write (%d/%d)", table,
                                    _first_line(exc)[:200], attempt, NATIVE_ATTEMPTS - 1)
                        time.sleep(0.5 * attempt)
                        continue
                    raise DeltaWriteError(f"write to table {table} failed; the table is unchanged: "
                                          f"{_first_line(exc)}") from exc
        else:
            result = self._write_embedded(schema, guarded, mode, replace, txn, metadata)
        log.info("%s: %s committed version %d (%d rows in %d files) in %.1fs", table, mode, result.version,
                 result.rows, result.files, time.monotonic() - started)
        return result

    def _write_native(self, schema: TableSchema, df: DataFrame, mode: WriteMode, replace: dict[str, Any] | None,
                      txn: Txn | None, metadata: dict[str, str] | None) -> WriteResult:
        if self.exists(schema.table):
            _check_schema_unchanged(schema, self._delta(schema.table))
        writer = df.write.format("delta").partitionBy(*schema.partition_by)
        if mode == "replace":
            cond = " AND ".join(f"`{k}` = {_sql_literal(v)}" for k, v in (replace or {}).items())
            writer = writer.mode("overwrite").option("replaceWhere", cond)
        else:
            writer = writer.mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "false")
        if txn is not None:
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        meta = {"divspa.mode": mode, **(metadata or {})}
        writer = writer.option("userMetadata", json.dumps(meta, sort_keys=True))
        writer.save(self._spark_uri(schema.table))
        dtable = self._delta(schema.table)
        last = dtable.history(1)[0]
        metrics = last.get("operationMetrics") or {}
        return WriteResult(schema.table, dtable.version(), int(metrics.get("numFiles", 0)),
                           int(metrics.get("numOutputRows", 0)))

    def _write_embedded(self, schema: TableSchema, df: DataFrame, mode: WriteMode, replace: dict[str, Any] | None,
                        txn: Txn | None, metadata: dict[str, str] | None) -> WriteResult:
        table = schema.table
        self.cleanup(table, older_than_s=STALE_STAGING_SECONDS)
        txn_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        staging = self._fs_path(table, STAGING_DIR, txn_id)
        moved: list[str] = []
        committed = False
        try:
            df.write.mode("errorifexists").partitionBy(*schema.partition_by).parquet(
                storage.join(self._spark_uri(table), STAGING_DIR, txn_id))
            adds = self._move_into_table(schema, staging, moved)
            rows = sum(json.loads(a.stats)["numRecords"] for a in adds)
            props = CommitProperties(
                custom_metadata={"divspa.mode": mode, "divspa.rows": str(rows), **(metadata or {})},
                app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
            )
            version = self._commit(schema, adds, mode, replace, props)
            committed = True
            return WriteResult(table, version, len(adds), rows)
        except Exception as exc:
            raise DeltaWriteError(f"write to table {table} failed; the table is unchanged: {exc}") from exc
        finally:
            self._delete_dir(staging)
            if not committed:
                for path in moved:
                    self.fs.delete_file(path)

    def _move_into_table(self, schema: TableSchema, staging: str, moved: list[str]) -> list[AddAction]:
        infos = self.fs.get_file_info(pafs.FileSelector(staging, recursive=True, allow_not_found=True))
        files = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                 and not i.base_name.startswith(("_", "."))]
        rels = [posixpath.relpath(i.path, staging) for i in files]
        for rel in rels:
            dest = self._fs_path(schema.table, rel)
            self.fs.create_dir(posixpath.dirname(dest), recursive=True)
            self.fs.move(posixpath.join(staging, rel), dest)
            moved.append(dest)
        # Footers are small; reading them in parallel keeps commits of thousands of files quick.
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda rel: self._add_action(schema, rel), rels))

    def _add_action(self, schema: TableSchema, rel: str) -> AddAction:
        path = self._fs_path(schema.table, rel)
        info = self.fs.get_file_info(path)
        with self.fs.open_input_file(path) as fh:
            meta = pq.ParquetFile(fh).metadata
        parts = {}
        for segment in posixpath.dirname(rel).split("/"):
            if "=" in segment:
                key, _, value = segment.partition("=")
                value = unquote(value)
                parts[unquote(key)] = None if value == HIVE_NULL else value
        if set(parts) != set(schema.partition_by):
            raise DeltaWriteError(f"file {rel} does not carry the partition columns {schema.partition_by}")
        return AddAction(
            path=quote(rel, safe="/="),
            size=info.size,
            partition_values=parts,
            modification_time=int(info.mtime_ns // 1_000_000) if info.mtime_ns else int(time.time() * 1000),
            data_change=True,
            stats=json.dumps(file_stats(meta, schema)),
        )

    def _commit(self, schema: TableSchema, adds: list[AddAction], mode: WriteMode,
                replace: dict[str, Any] | None, props: CommitProperties) -> int:
        path = self._rs_uri(schema.table)
        arrow_schema = schema.arrow_with_docs  # a commit carrying a schema must keep the column comments
        partition_by = list(schema.partition_by)
        if not self.exists(schema.table):
            try:
                create_table_with_add_actions(
                    path, DeltaSchema.from_arrow(schema.arrow_with_docs), adds, mode="error",
                    partition_by=partition_by, name=schema.table, description=schema.description,
                    commit_properties=props, storage_options=self.options,
                    configuration={"delta.checkpointInterval": str(self.checkpoint_interval)},
                )
                return DeltaTable(path, storage_options=self.options).version()
            except Exception:
                if not self.exists(schema.table):
                    raise
                # Another run created the table between our check and our commit: commit into it.
                log.info("%s: created concurrently by another writer; committing into it", schema.table)
        dtable = DeltaTable(path, storage_options=self.options)
        _check_schema_unchanged(schema, dtable)
        if mode == "append":
            dtable.create_write_transaction(adds, "append", arrow_schema, partition_by, commit_properties=props)
        elif mode == "overwrite":
            dtable.create_write_transaction(adds, "overwrite", arrow_schema, partition_by, commit_properties=props)
        else:
            filters = [(k, "=", str(v)) for k, v in (replace or {}).items()]
            dtable.create_write_transaction(adds, "overwrite", arrow_schema, partition_by,
                                            partition_filters=filters, commit_properties=props)
        dtable.update_incremental()
        return dtable.version()

    # --- maintenance -------------------------------------------------------------------------

    def cleanup(self, table: str, older_than_s: float = 0) -> int:
        """Remove staging directories of writes that died (older than `older_than_s`)."""
        root = self._fs_path(table, STAGING_DIR)
        infos = self.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        now_ns = time.time_ns()
        removed = 0
        for info in infos:
            age_s = (now_ns - (info.mtime_ns or now_ns)) / 1e9
            if info.type == pafs.FileType.Directory and age_s >= older_than_s:
                log.warning("%s: removing leftover staging directory %s of a failed write", table, info.base_name)
                self._delete_dir(info.path)
                removed += 1
        return removed

    def runs_on_disk(self, table: str) -> dict[str, int]:
        """run_id -> newest file modification time (ms) of that run's rows in `table` (from the log)."""
        out: dict[str, int] = {}
        for a in pa.table(self._delta(table).get_add_actions(flatten=True)).to_pylist():
            run, mtime = a.get("partition.run_id"), a.get("modification_time")
            ms = int(mtime.timestamp() * 1000) if isinstance(mtime, dt.datetime) else int(mtime or 0)
            if run is not None:
                out[run] = max(out.get(run, 0), ms)
        return out

    def drop_runs(self, table: str, run_ids: list[str]) -> int:
        """Remove every row of `run_ids` from `table` in one commit; returns the version (or the
        current one when none was there). A partition delete: files are unlinked from the log,
        not rewritten, and stay on disk for time travel until `vacuum`. delta-rs commits it in
        both modes, so retention needs no JVM."""
        present = sorted(set(run_ids) & set(self.runs_on_disk(table)))
        dtable = self._delta(table)
        self._set_checkpoint_interval(dtable, self.checkpoint_interval)  # tables made before the setting
        if not present:
            return dtable.version()
        predicate = "run_id IN (" + ", ".join(_sql_literal(r) for r in present) + ")"
        try:
            dtable.delete(predicate, commit_properties=CommitProperties(
                custom_metadata={"divspa.mode": "gc", "divspa.dropped_runs": ",".join(present)}))
        except Exception as exc:
            raise DeltaWriteError(f"gc of table {table} failed; the table is unchanged: {_first_line(exc)}") from exc
        dtable.update_incremental()
        log.info("%s: dropped runs %s (version %d)", table, ", ".join(present), dtable.version())
        return dtable.version()

    @staticmethod
    def _set_checkpoint_interval(dtable: DeltaTable, interval: int) -> None:
        if dtable.metadata().configuration.get("delta.checkpointInterval") != str(interval):
            dtable.alter.set_table_properties({"delta.checkpointInterval": str(interval)}, raise_if_not_exists=False)

    def checkpoint(self, table: str) -> None:
        """Write a Delta checkpoint now: readers then replay at most the commits after it."""
        self._delta(table).create_checkpoint()

    def compact(self, table: str) -> dict[str, Any]:
        """Rewrite small files into larger ones (Delta OPTIMIZE; the old files go at vacuum)."""
        return self._delta(table).optimize.compact()

    def vacuum(self, table: str, retention_hours: int = 168) -> list[str]:
        """Delete files no version within the retention window needs (delta-rs vacuum)."""
        return self._delta(table).vacuum(retention_hours=retention_hours, dry_run=False,
                                         enforce_retention_duration=retention_hours >= 168)

    def _delete_dir(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.Directory:
            self.fs.delete_dir(path)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


NATIVE_ATTEMPTS = 4
_RACES = ("ConcurrentAppend", "ConcurrentWrite", "ConcurrentDelete", "ConcurrentTransaction", "ProtocolChanged",
          "MetadataChanged", "DELTA_CONCURRENT", "DELTA_PROTOCOL_CHANGED", "DELTA_METADATA_CHANGED")


def _is_commit_race(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(r in text for r in _RACES)


def _literal(value: Any) -> Any:
    return value if isinstance(value, (int, float)) else str(value)


def _sql_literal(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_line(exc: BaseException) -> str:
    """The cause in one line (Py4J errors carry a JVM stack trace after it)."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("An error occurred while calling", "Traceback", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__


def _filter(df: DataFrame, where: dict[str, Any] | None) -> DataFrame:
    for key, value in (where or {}).items():
        df = df.filter(F.col(key) == F.lit(value))
    return df


def _matches(action: dict[str, Any], where: dict[str, Any] | None) -> bool:
    return all(action.get(f"partition.{k}") == str(v) for k, v in (where or {}).items())


def _guard(schema: TableSchema, df: DataFrame, replace: dict[str, Any] | None) -> DataFrame:
    """Check the DataFrame against the table's schema before any file is written.

    Name/type mismatches fail here, on the driver. Non-null columns and replaced partitions are
    checked row by row inside the write job (raise_error), so a violation fails the Spark job
    and nothing is committed, without an extra pass over the data.
    """
    check_dataframe(schema, df.schema)
    exprs = []
    for col in schema.columns:
        target = schema.spark[col.name].dataType
        expr = F.col(col.name).cast(target)
        if not col.nullable:
            expr = F.when(F.col(col.name).isNull(), F.raise_error(
                F.lit(f"table {schema.table}: column {col.name} is null in a row, but the schema forbids nulls"))
            ).otherwise(expr)
        if replace and col.name in replace:
            expr = F.when(F.col(col.name) != F.lit(str(replace[col.name])), F.raise_error(F.concat(
                F.lit(f"table {schema.table}: a row has {col.name}="), F.col(col.name).cast("string"),
                F.lit(f" outside the partition being replaced ({col.name}={replace[col.name]})")))
            ).otherwise(expr)
        # The schema file's doc becomes the column's comment (DESCRIBE shows it; Delta keeps it).
        exprs.append(expr.alias(col.name, metadata={"comment": col.doc}) if col.doc else expr.alias(col.name))
    return df.select(*exprs)


def _add_new_columns(schema: TableSchema, dtable: DeltaTable) -> None:
    """Columns a newer divspa appended to a table's schema file, added to the table on disk (one
    metadata commit; existing rows read null there), so a warehouse outlives an upgrade. Only
    nullable columns at the end qualify; any other difference is `_check_schema_unchanged`'s error."""
    have = pa.schema(dtable.schema().to_arrow()).names
    want = schema.arrow_with_docs
    new = [want.field(n) for n in want.names[len(have):]]
    if not new or want.names[:len(have)] != have or not all(f.nullable for f in new):
        return
    dtable.alter.add_columns(list(DeltaSchema.from_arrow(pa.schema(new)).fields))
    dtable.update_incremental()
    log.info("%s: added columns %s (schemas/%s.json is newer than the table on disk)", schema.table,
             [f.name for f in new], schema.table)


def _check_schema_unchanged(schema: TableSchema, dtable: DeltaTable) -> None:
    """Before each write into an existing table: columns the schema file appended are added first
    (an upgrade), any other difference is refused."""
    _add_new_columns(schema, dtable)
    have = pa.schema(dtable.schema().to_arrow())
    if have.names != schema.arrow.names or [f.type for f in have] != [f.type for f in schema.arrow]:
        raise DeltaWriteError(
            f"table {schema.table} on disk has columns {have.names} ({', '.join(map(str, have.types))}), "
            f"schemas/{schema.table}.json says {schema.names}: migrate or remove the table first")


def _check_plain_parquet(table: str, dtable: DeltaTable) -> None:
    """Reading by file list is only correct for tables without deletion vectors / column mapping."""
    proto = dtable.protocol()
    features = set(proto.reader_features or [])
    unsupported = features & {"deletionVectors", "columnMapping", "v2Checkpoint"}
    if unsupported or proto.min_reader_version > 3:
        raise DeltaWriteError(f"table {table} uses reader features {sorted(unsupported)} that need delta-spark; "
                              "run on a cluster with delta-spark jars")


def _stat_value(value: Any, arrow_type: pa.DataType, is_max: bool) -> Any:
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
            lo = _stat_value(stats.min, stat_cols[name], False)
            hi = _stat_value(stats.max, stat_cols[name], True)
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
