"""Retention: keep the newest `run.keep_runs` runs in every table, then vacuum and checkpoint.

A daily pipeline adds a partition per run to every table; without this, storage and the Delta
logs grow for ever. Which runs stay: the newest `keep` by when their files were written (run ids
need not sort by date), plus always the latest published run (a trainer's "latest" must never
vanish) and any run whose lock is held (in progress). Rows go by partition deletes through the
Delta layer, so a dropped run stays readable by time travel until vacuum removes its files, and
vacuum keeps every file a version of the last `vacuum_retention_hours` needs. The runs table
keeps every run's record: it is the history, a few hundred bytes a run.

No JVM: every step is a delta-rs commit or a file operation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from divspa import runs, storage
from divspa.config import Config
from divspa.delta import Warehouse
from divspa.runtime import RunLock

log = logging.getLogger(__name__)


@dataclass
class GcResult:
    kept: list[str]
    dropped: list[str]
    tables: dict[str, int] = field(default_factory=dict)  # table -> version after gc
    vacuumed_files: int = 0
    compacted: dict[str, int] = field(default_factory=dict)  # table -> files removed by compaction


def plan(wh: Warehouse, cfg: Config, keep: int) -> tuple[list[str], list[str]]:
    """(kept, dropped) run ids, newest first."""
    newest: dict[str, int] = {}
    for table in wh.tables():
        for run, ms in wh.runs_on_disk(table).items():
            newest[run] = max(newest.get(run, 0), ms)
    order = sorted(newest, key=lambda r: newest[r], reverse=True)
    keep_set = set(order[:keep])
    latest = runs.latest_published(wh)
    if latest is not None:
        keep_set.add(latest["run_id"])
    for run in order[keep:]:
        if storage.settings().is_file(RunLock.location(cfg.output_dir, run)):
            log.info("gc: keeping run %s: its lock is held (in progress)", run)
            keep_set.add(run)
    return [r for r in order if r in keep_set], [r for r in order if r not in keep_set]


def collect(wh: Warehouse, cfg: Config, keep: int, dry_run: bool = False) -> GcResult:
    """Drop old runs' partitions, their logs and checkpoints; vacuum, checkpoint, optionally compact."""
    kept, dropped = plan(wh, cfg, keep)
    result = GcResult(kept, dropped)
    log.info("gc: keeping %d runs (%s), dropping %d (%s)%s", len(kept), ", ".join(kept) or "none", len(dropped),
             ", ".join(dropped) or "none", " [dry run]" if dry_run else "")
    if dry_run:
        return result
    retention = cfg.run.vacuum_retention_hours
    for table in wh.tables():
        if table != runs.TABLE:
            result.tables[table] = wh.drop_runs(table, dropped)
        if cfg.run.compact:
            metrics = wh.compact(table)
            result.compacted[table] = int(metrics.get("numFilesRemoved", 0))
        result.vacuumed_files += len(wh.vacuum(table, retention_hours=retention))
        wh.checkpoint(table)
    store = storage.settings()
    for run in dropped:  # logs, configs, reports and model checkpoints of the dropped runs
        for folder in ("runs", "models"):
            store.delete_dir(storage.join(cfg.output_dir, folder, run))
    log.info("gc: done; %d files vacuumed (retention %dh)", result.vacuumed_files, retention)
    return result
