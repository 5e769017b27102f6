"""What a running stage has at hand: the config, Spark, the warehouse, the run id, its log.

Each run keeps `runs/<run_id>/` beside the warehouse: the resolved config of every command
(so a figure can always be traced to its settings) and the command's log file. On an object
store the log is written to a local file as the command runs and copied there when it ends
(and at every stage's end), since an object cannot be appended to.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from divspa import storage
from divspa.config import Config, dump_config
from divspa.delta import Txn, Warehouse, WriteResult
from divspa.errors import StageError
from divspa.schemas import load_schema
from divspa.spark import get_spark

log = logging.getLogger("divspa")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


_log_copy: tuple[str, str] | None = None  # (local file, object-store location) of this command's log


def setup_logging(level: str = "INFO", log_file: str | None = None) -> None:
    """Log to stderr and, when given, to `log_file` (a path or a URI)."""
    global _log_copy
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_divspa", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    _log_copy = None
    if log_file is not None:
        local = log_file
        if not storage.is_local(log_file):
            fd, local = tempfile.mkstemp(prefix="divspa-", suffix=".log")
            os.close(fd)
            _log_copy = (local, log_file)
        else:
            os.makedirs(os.path.dirname(log_file), exist_ok=True)
        handlers.append(logging.FileHandler(local))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
        handler._divspa = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for noisy in ("py4j", "py4j.clientserver", "py4j.java_gateway", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def flush_log() -> None:
    """Copy this command's log to the run directory when that is on an object store."""
    if _log_copy is None:
        return
    local, remote = _log_copy
    try:
        with open(local, "rb") as fh:
            storage.settings().write_bytes(remote, fh.read())
    except Exception as exc:  # a log that cannot be copied must not fail the run
        print(f"divspa: could not copy the log to {remote}: {exc}", file=sys.stderr)


def discard_log_copy() -> None:
    """Keep this command's log local only (its remote location cannot be written)."""
    global _log_copy
    if _log_copy is not None:
        with contextlib.suppress(OSError):
            os.remove(_log_copy[0])
    _log_copy = None


def close_log() -> None:
    """End this command's log: copy it where it belongs, close the file (and remove a local copy)."""
    flush_log()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and getattr(handler, "_divspa", False):
            root.removeHandler(handler)
            handler.close()
    discard_log_copy()  # copied above: the local file has served its purpose


atexit.register(flush_log)


def connect(cfg: Config, spark: SparkSession | None = None) -> tuple[SparkSession, Warehouse]:
    """The session, the storage settings derived from it, and the run's warehouse."""
    spark = spark or get_spark(cfg.spark)
    conf = dict(spark.sparkContext.getConf().getAll())
    # A session that already ran (a notebook's, a test suite's) gets the config's Hadoop settings
    # (s3a endpoint, credentials) too: Spark reads them per file system access.
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in cfg.spark.conf.items():
        if key.startswith("spark.hadoop.") and conf.get(key) != value:
            hadoop.set(key.removeprefix("spark.hadoop."), value)
    storage.configure({**conf, **cfg.spark.conf}, cfg.run.storage_options)
    native = None if cfg.spark.delta == "auto" else cfg.spark.delta == "native"
    return spark, Warehouse(spark, cfg.warehouse, native=native)


@dataclass
class RunContext:
    cfg: Config
    spark: SparkSession
    warehouse: Warehouse
    force: bool = False
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @classmethod
    def start(cls, cfg: Config, command: str, force: bool = False, spark: SparkSession | None = None) -> RunContext:
        """Set up logging to the run directory, save the resolved config, start Spark."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = cfg.run_dir
        setup_logging(cfg.run.log_level, storage.join(run_dir, f"{stamp}-{command}.log"))
        # Storage settings come from the session's Spark settings: start it before any write.
        spark, warehouse = connect(cfg, spark)
        store = storage.settings()
        if not storage.is_local(run_dir):
            try:
                store.check_writable(cfg.output_dir)
            except storage.StorageError:
                discard_log_copy()  # the log cannot go where nothing can be written: say it once
                raise
        resolved = dump_config(cfg)
        store.write_text(storage.join(run_dir, f"{stamp}-{command}.config.yaml"), resolved)
        log.info("divspa %s, run %s, output %s, delta %s; resolved config:\n%s", command, cfg.run_id,
                 cfg.output_dir, warehouse.mode, resolved)
        return cls(cfg=cfg, spark=spark, warehouse=warehouse, force=force)

    # --- stage outputs -------------------------------------------------------------------------

    def app_id(self, stage: str) -> str:
        return f"divspa:{stage}:{self.run_id}"

    def stage_done(self, stage: str, tables: list[str]) -> bool:
        """True when every output table holds this run's committed transaction for `stage`."""
        app = self.app_id(stage)
        return bool(tables) and all(self.warehouse.committed(t, app) is not None for t in tables)

    def write(self, stage: str, table: str, df: DataFrame, partition: dict[str, str] | None = None,
              metadata: dict[str, str] | None = None) -> WriteResult:
        """Replace this run's partitions of `table` (narrowed by `partition`), tagged with the
        stage's transaction id so a re-run can tell the stage is done."""
        app = self.app_id(stage)
        previous = self.warehouse.committed(table, app) or 0
        meta = {"divspa.stage": stage, "divspa.run_id": self.run_id, **(metadata or {})}
        return self.warehouse.write(table, df, mode="replace", replace={"run_id": self.run_id, **(partition or {})},
                                    txn=Txn(app, previous + 1), metadata=meta)

    def write_metrics(self, stage: str, rows: list[tuple[str, str, int | None, float]]) -> WriteResult:
        """Replace this stage's rows of the metrics table with (model, metric, k, value) rows."""
        now = dt.datetime.now(dt.UTC)
        data = [(m, name, k, float(v), now, stage, self.run_id) for m, name, k, v in rows]
        df = self.spark.createDataFrame(data, load_schema("metrics").spark)
        return self.write(stage, "metrics", df, partition={"stage": stage})

    def read(self, table: str) -> DataFrame:
        """This run's rows of `table`."""
        return self.warehouse.read(table, where={"run_id": self.run_id})

    @contextmanager
    def timed(self, stage: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        started = time.monotonic()
        log.info("stage %s: started", stage)
        try:
            yield info
        except Exception as exc:
            log.error("stage %s failed after %.1fs: %s", stage, time.monotonic() - started, exc)
            raise StageError(f"stage {stage} failed: {exc}") from exc
        finally:
            flush_log()
        info["wall_s"] = round(time.monotonic() - started, 2)
        self.stats[stage] = info
        log.info("stage %s: done in %.1fs %s", stage, info["wall_s"],
                 {k: v for k, v in info.items() if k != "wall_s"})
