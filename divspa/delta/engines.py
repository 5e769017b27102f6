"""The two ways a write reaches a Delta table, behind one interface chosen once per warehouse.

NativeEngine: delta-spark's `format("delta")` with `replaceWhere` and `txnAppId`/`txnVersion`;
delta-spark commits (a concurrent commit is retried: the write's partitions are its own).
EmbeddedEngine: Spark writes Parquet in parallel into a private staging directory under the
table; the driver moves the files into the table's partition directories, reads each footer for
statistics and commits them in one delta-rs transaction. Until that commit the files are
invisible to every Delta reader; on failure the staging directory and moved files are removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import quote, unquote

import pyarrow as pa
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
from divspa.delta.common import (
    HIVE_NULL,
    STAGING_DIR,
    STALE_STAGING_SECONDS,
    Txn,
    WriteMode,
    WriteResult,
    filter_rows,
    first_line,
    literal,
    sql_literal,
)
from divspa.delta.location import Location
from divspa.delta.log import Log, check_plain_parquet, check_schema_unchanged
from divspa.delta.stats import file_stats
from divspa.errors import DeltaWriteError
from divspa.schemas import TableSchema, check_dataframe

log = logging.getLogger(__name__)

NATIVE_ATTEMPTS = 4
_RACES = ("ConcurrentAppend", "ConcurrentWrite", "ConcurrentDelete", "ConcurrentTransaction", "ProtocolChanged",
          "MetadataChanged", "DELTA_CONCURRENT", "DELTA_PROTOCOL_CHANGED", "DELTA_METADATA_CHANGED")


def is_commit_race(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(r in text for r in _RACES)




class Engine(Protocol):
    def read(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> DataFrame: ...

    def write(self, schema: TableSchema, df: DataFrame, mode: WriteMode, replace: dict[str, Any] | None,
              txn: Txn | None, metadata: dict[str, str] | None) -> WriteResult: ...


class NativeEngine:
    def __init__(self, spark: SparkSession, loc: Location, log_: Log, checkpoint_interval: int) -> None:
        self.spark, self.loc, self.log = spark, loc, log_
        # Delta's own default is 10 commits, delta-rs's 100: tables divspa creates say it explicitly.
        spark.conf.set("spark.databricks.delta.properties.defaults.checkpointInterval", str(checkpoint_interval))

    def read(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> DataFrame:
        if not self.log.exists(table):
            raise FileNotFoundError(f"table {table!r} does not exist under {self.loc.root}")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return filter_rows(reader.load(self.loc.spark_uri(table)), where)

    def write(self, schema: TableSchema, df: DataFrame, mode: WriteMode, replace: dict[str, Any] | None,
              txn: Txn | None, metadata: dict[str, str] | None) -> WriteResult:
        for attempt in range(1, NATIVE_ATTEMPTS + 1):
            try:
                return self._write(schema, df, mode, replace, txn, metadata)
            except Exception as exc:
                if attempt < NATIVE_ATTEMPTS and is_commit_race(exc):
                    # Another run committed first (two runs creating one table, a concurrent
                    # metadata change): this write's partitions are its own, so write again.
                    log.warning("%s: concurrent commit (%s); retrying the write (%d/%d)", schema.table,
                                first_line(exc)[:200], attempt, NATIVE_ATTEMPTS - 1)
                    time.sleep(0.5 * attempt)
                    continue
                raise DeltaWriteError(f"write to table {schema.table} failed; the table is unchanged: "
                                      f"{first_line(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, schema: TableSchema, df: DataFrame, mode: WriteMode, replace: dict[str, Any] | None,
               txn: Txn | None, metadata: dict[str, str] | None) -> WriteResult:
        if self.log.exists(schema.table):
            check_schema_unchanged(schema, self.log.delta(schema.table))
        writer = df.write.format("delta").partitionBy(*schema.partition_by)
        if mode == "replace":
            cond = " AND ".join(f"`{k}` = {sql_literal(v)}" for k, v in (replace or {}).items())
            writer = writer.mode("overwrite").option("replaceWhere", cond)
        else:
            writer = writer.mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "false")
        if txn is not None:
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        meta = {"divspa.mode": mode, **(metadata or {})}
        writer = writer.option("userMetadata", json.dumps(meta, sort_keys=True))
        writer.save(self.loc.spark_uri(schema.table))
        dtable = self.log.delta(schema.table)
        last = dtable.history(1)[0]
        metrics = last.get("operationMetrics") or {}
        return WriteResult(schema.table, dtable.version(), int(metrics.get("numFiles", 0)),
                           int(metrics.get("numOutputRows", 0)))


class EmbeddedEngine:
    def __init__(self, spark: SparkSession, loc: Location, log_: Log, checkpoint_interval: int) -> None:
        self.spark, self.loc, self.log, self.checkpoint_interval = spark, loc, log_, checkpoint_interval

    def read(self, table: str, version: int | None = None, where: dict[str, Any] | None = None) -> DataFrame:
        dtable = self.log.delta(table, version)
        check_plain_parquet(table, dtable)
        spark_schema = from_arrow_schema(pa.schema(dtable.schema().to_arrow()))
        predicate = [(k, "=", literal(v)) for k, v in (where or {}).items()] or None
        files = dtable.file_uris(file_pruning_predicate=predicate) if predicate else dtable.file_uris()
        if not files:
            return self.spark.createDataFrame([], spark_schema)
        df = (
            self.spark.read.schema(spark_schema)
            .option("basePath", self.loc.spark_uri(table))
            .parquet(*map(storage.spark_uri, files))
            .select(*spark_schema.names)
        )
        return filter_rows(df, where)

    def write(self, schema: TableSchema, df: DataFrame, mode: WriteMode, replace: dict[str, Any] | None,
              txn: Txn | None, metadata: dict[str, str] | None) -> WriteResult:
        table = schema.table
        cleanup_staging(self.loc, table, older_than_s=STALE_STAGING_SECONDS)
        txn_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        staging = self.loc.fs_path(table, STAGING_DIR, txn_id)
        moved: list[str] = []
        committed = False
        try:
            df.write.mode("errorifexists").partitionBy(*schema.partition_by).parquet(
                storage.join(self.loc.spark_uri(table), STAGING_DIR, txn_id))
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
            self.loc.delete_dir(staging)
            if not committed:
                for path in moved:
                    self.loc.fs.delete_file(path)

    def _move_into_table(self, schema: TableSchema, staging: str, moved: list[str]) -> list[AddAction]:
        infos = self.loc.fs.get_file_info(pafs.FileSelector(staging, recursive=True, allow_not_found=True))
        files = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                 and not i.base_name.startswith(("_", "."))]
        rels = [posixpath.relpath(i.path, staging) for i in files]
        for rel in rels:
            dest = self.loc.fs_path(schema.table, rel)
            self.loc.fs.create_dir(posixpath.dirname(dest), recursive=True)
            self.loc.fs.move(posixpath.join(staging, rel), dest)
            moved.append(dest)
        # Footers are small; reading them in parallel keeps commits of thousands of files quick.
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda rel: self._add_action(schema, rel), rels))

    def _add_action(self, schema: TableSchema, rel: str) -> AddAction:
        path = self.loc.fs_path(schema.table, rel)
        info = self.loc.fs.get_file_info(path)
        with self.loc.fs.open_input_file(path) as fh:
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
        path = self.loc.rs_uri(schema.table)
        arrow_schema = schema.arrow_with_docs  # a commit carrying a schema must keep the column comments
        partition_by = list(schema.partition_by)
        if not self.log.exists(schema.table):
            try:
                create_table_with_add_actions(
                    path, DeltaSchema.from_arrow(schema.arrow_with_docs), adds, mode="error",
                    partition_by=partition_by, name=schema.table, description=schema.description,
                    commit_properties=props, storage_options=self.loc.options,
                    configuration={"delta.checkpointInterval": str(self.checkpoint_interval)},
                )
                return DeltaTable(path, storage_options=self.loc.options).version()
            except Exception:
                if not self.log.exists(schema.table):
                    raise
                # Another run created the table between our check and our commit: commit into it.
                log.info("%s: created concurrently by another writer; committing into it", schema.table)
        dtable = DeltaTable(path, storage_options=self.loc.options)
        check_schema_unchanged(schema, dtable)
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


def cleanup_staging(loc: Location, table: str, older_than_s: float = 0) -> int:
    """Remove staging directories of embedded writes that died (older than `older_than_s`)."""
    root = loc.fs_path(table, STAGING_DIR)
    infos = loc.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    now_ns = time.time_ns()
    removed = 0
    for info in infos:
        age_s = (now_ns - (info.mtime_ns or now_ns)) / 1e9
        if info.type == pafs.FileType.Directory and age_s >= older_than_s:
            log.warning("%s: removing leftover staging directory %s of a failed write", table, info.base_name)
            loc.delete_dir(info.path)
            removed += 1
    return removed


def guard(schema: TableSchema, df: DataFrame, replace: dict[str, Any] | None) -> DataFrame:
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
