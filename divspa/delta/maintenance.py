"""Keeping a warehouse's tables small and fast to read: dropping old runs (retention),
checkpoints, compaction and vacuum. All delta-rs commits, in both engines: no JVM."""

from __future__ import annotations

import logging
from typing import Any

from deltalake import DeltaTable
from deltalake.transaction import CommitProperties

from divspa.delta.common import first_line, sql_literal
from divspa.delta.log import Log
from divspa.errors import DeltaWriteError

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, log_: Log, checkpoint_interval: int) -> None:
        self.log, self.checkpoint_interval = log_, checkpoint_interval

    def drop_runs(self, table: str, run_ids: list[str]) -> int:
        """Remove every row of `run_ids` from `table` in one commit; returns the version (or the
        current one when none was there). A partition delete: files are unlinked from the log,
        not rewritten, and stay on disk for time travel until `vacuum`. delta-rs commits it in
        both modes, so retention needs no JVM."""
        present = sorted(set(run_ids) & set(self.log.runs_on_disk(table)))
        dtable = self.log.delta(table)
        self._set_checkpoint_interval(dtable, self.checkpoint_interval)  # tables made before the setting
        if not present:
            return dtable.version()
        predicate = "run_id IN (" + ", ".join(sql_literal(r) for r in present) + ")"
        try:
            dtable.delete(predicate, commit_properties=CommitProperties(
                custom_metadata={"divspa.mode": "gc", "divspa.dropped_runs": ",".join(present)}))
        except Exception as exc:
            raise DeltaWriteError(f"gc of table {table} failed; the table is unchanged: {first_line(exc)}") from exc
        dtable.update_incremental()
        log.info("%s: dropped runs %s (version %d)", table, ", ".join(present), dtable.version())
        return dtable.version()

    @staticmethod
    def _set_checkpoint_interval(dtable: DeltaTable, interval: int) -> None:
        if dtable.metadata().configuration.get("delta.checkpointInterval") != str(interval):
            dtable.alter.set_table_properties({"delta.checkpointInterval": str(interval)}, raise_if_not_exists=False)

    def checkpoint(self, table: str) -> None:
        """Write a Delta checkpoint now: readers then replay at most the commits after it."""
        self.log.delta(table).create_checkpoint()

    def compact(self, table: str) -> dict[str, Any]:
        """Rewrite small files into larger ones (Delta OPTIMIZE; the old files go at vacuum)."""
        return self.log.delta(table).optimize.compact()

    def vacuum(self, table: str, retention_hours: int = 168) -> list[str]:
        """Delete files no version within the retention window needs (delta-rs vacuum)."""
        return self.log.delta(table).vacuum(retention_hours=retention_hours, dry_run=False,
                                         enforce_retention_duration=retention_hours >= 168)
