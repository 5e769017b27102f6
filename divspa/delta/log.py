"""Reading a warehouse's Delta logs with delta-rs: which tables exist, their versions, committed
transactions, history and row counts, and snapshots as file lists. No JVM: this is what the
metadata commands, the trainers' readers and retention use."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema

from divspa import storage
from divspa.delta.common import matches
from divspa.delta.location import Location
from divspa.errors import DeltaWriteError
from divspa.schemas import TableSchema
from divspa.snapshot import Snapshot

log = logging.getLogger(__name__)


class Log:
    def __init__(self, loc: Location) -> None:
        self.loc = loc

    def exists(self, table: str) -> bool:
        try:
            return DeltaTable.is_deltatable(self.loc.rs_uri(table), storage_options=self.loc.options)
        except Exception as exc:  # delta-rs raises a bare OSError/Exception for unreachable stores
            raise storage.StorageError(f"cannot reach {self.loc.path(table)}: {str(exc).splitlines()[0]}") from exc

    def tables(self) -> list[str]:
        info = self.loc.fs.get_file_info(pafs.FileSelector(self.loc.fs_root, allow_not_found=True))
        return sorted(i.base_name for i in info if i.type == pafs.FileType.Directory and self.exists(i.base_name))

    def delta(self, table: str, version: int | None = None) -> DeltaTable:
        if not self.exists(table):
            raise FileNotFoundError(f"table {table!r} does not exist under {self.loc.root}")
        return DeltaTable(self.loc.rs_uri(table), version=version, storage_options=self.loc.options)

    def version(self, table: str) -> int | None:
        return self.delta(table).version() if self.exists(table) else None

    def committed(self, table: str, app_id: str) -> int | None:
        """The last committed version of application transaction `app_id` in `table`, if any."""
        return self.delta(table).transaction_version(app_id) if self.exists(table) else None

    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first. divspa's commit metadata appears as top-level `divspa.*` keys
        in both modes (delta-spark keeps it in `userMetadata`, delta-rs as commit info)."""
        out = []
        for entry in self.delta(table).history(limit):
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
        actions = pa.table(self.delta(table, version).get_add_actions(flatten=True)).to_pylist()
        return sum(a["num_records"] or 0 for a in actions if matches(a, where))

    def snapshot(self, table: str, version: int | None = None) -> Snapshot:
        """One version of the table (the latest by default) as a picklable list of files."""
        if not self.exists(table):
            raise FileNotFoundError(f"table {table!r} does not exist under {self.loc.root}")
        return Snapshot.load(self.loc.rs_uri(table), version, self.loc.options)

    def runs_on_disk(self, table: str) -> dict[str, int]:
        """run_id -> newest file modification time (ms) of that run's rows in `table` (from the log)."""
        out: dict[str, int] = {}
        for a in pa.table(self.delta(table).get_add_actions(flatten=True)).to_pylist():
            run, mtime = a.get("partition.run_id"), a.get("modification_time")
            ms = int(mtime.timestamp() * 1000) if isinstance(mtime, dt.datetime) else int(mtime or 0)
            if run is not None:
                out[run] = max(out.get(run, 0), ms)
        return out


def add_new_columns(schema: TableSchema, dtable: DeltaTable) -> None:
    """Columns a newer divspa appended to a table's schema file, added to the table on disk (one
    metadata commit; existing rows read null there), so a warehouse outlives an upgrade. Only
    nullable columns at the end qualify; any other difference is `check_schema_unchanged`'s error."""
    have = pa.schema(dtable.schema().to_arrow()).names
    want = schema.arrow_with_docs
    new = [want.field(n) for n in want.names[len(have):]]
    if not new or want.names[:len(have)] != have or not all(f.nullable for f in new):
        return
    dtable.alter.add_columns(list(DeltaSchema.from_arrow(pa.schema(new)).fields))
    dtable.update_incremental()
    log.info("%s: added columns %s (schemas/%s.json is newer than the table on disk)", schema.table,
             [f.name for f in new], schema.table)


def check_schema_unchanged(schema: TableSchema, dtable: DeltaTable) -> None:
    """Before each write into an existing table: columns the schema file appended are added first
    (an upgrade), any other difference is refused."""
    add_new_columns(schema, dtable)
    have = pa.schema(dtable.schema().to_arrow())
    if have.names != schema.arrow.names or [f.type for f in have] != [f.type for f in schema.arrow]:
        raise DeltaWriteError(
            f"table {schema.table} on disk has columns {have.names} ({', '.join(map(str, have.types))}), "
            f"schemas/{schema.table}.json says {schema.names}: migrate or remove the table first")


def check_plain_parquet(table: str, dtable: DeltaTable) -> None:
    """Reading by file list is only correct for tables without deletion vectors / column mapping."""
    proto = dtable.protocol()
    features = set(proto.reader_features or [])
    unsupported = features & {"deletionVectors", "columnMapping", "v2Checkpoint"}
    if unsupported or proto.min_reader_version > 3:
        raise DeltaWriteError(f"table {table} uses reader features {sorted(unsupported)} that need delta-spark; "
                              "run on a cluster with delta-spark jars")
