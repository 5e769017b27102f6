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
import json
import logging
import os
import socket
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
from divspa.errors import RunInProgress, StageError
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
    """End this command's log: copy it where it belongs, close the file (and remove a local copy).
    The stderr handler goes too: a caller running several commands in one process (a notebook,
    a test) may have swapped sys.stderr since, and the next command installs its own."""
    flush_log()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_divspa", False):
            root.removeHandler(handler)
            handler.close()
    discard_log_copy()  # copied above: the local file has served its purpose


atexit.register(flush_log)


class RunLock:
    """One writing process per run id and output directory.

    Two runs with different ids share a warehouse safely (each replaces only its own partitions;
    Delta's optimistic commits order them). Two processes with the *same* id would interleave
    replacements of the same partitions, so the second refuses to start (RunInProgress, exit 4)
    and names the holder. Locally the lock file is created atomically (O_EXCL) and a holder on
    this host that died is detected by its pid; on an object store it is checked then written
    (not atomic: the scheduler's own one-instance-per-job setting is the guard there).
    """

    def __init__(self, path: str, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        self._held = False

    @staticmethod
    def location(output_dir: str, run_id: str) -> str:
        """Where run `run_id`'s lock lives (retention asks too: a held run is never dropped)."""
        return storage.join(output_dir, "runs", run_id, "_lock.json")

    @classmethod
    def acquire(cls, cfg: Config, command: str) -> RunLock:
        path = cls.location(cfg.output_dir, cfg.run_id)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        lock = cls(path, me)
        for _ in range(2):  # a second try after removing a dead holder's lock
            if lock._try_create(json.dumps(me)):
                lock._held = True
                atexit.register(lock.release)
                return lock
            holder = lock._holder()
            if holder is not None and (holder.get("pid"), holder.get("host")) == (me["pid"], me["host"]):
                return lock  # this process holds it already (a notebook, a test session): re-entrant
            if holder is not None and not _alive(holder):
                log.warning("run %s: removing the lock of process %s, which is no longer running", cfg.run_id,
                            holder.get("pid"))
                lock._remove()
                continue
            raise RunInProgress(
                f"run {cfg.run_id} is already in progress under {cfg.output_dir} "
                f"(pid {holder.get('pid') if holder else '?'} on {holder.get('host') if holder else '?'}, "
                f"`divspa {holder.get('command') if holder else '?'}` since {holder.get('started') if holder else '?'}); "
                f"nothing was done. If that process is gone, remove {path}")
        raise RunInProgress(f"run {cfg.run_id}: could not take the lock {path}")

    def _try_create(self, text: str) -> bool:
        if storage.is_local(self.path):
            local = storage.resolve(self.path)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            try:
                fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return True
        store = storage.settings()
        if store.is_file(self.path):
            return False
        store.write_text(self.path, text)
        return True

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(storage.settings().read_text(self.path))
        except (FileNotFoundError, ValueError):
            return None

    def _remove(self) -> None:
        fs, path = storage.settings().filesystem(self.path)
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.delete_file(path)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._remove()


def _alive(holder: dict[str, Any]) -> bool:
    """False only when the holder ran on this host and its pid is gone (else: assume alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


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
    return spark, Warehouse(spark, cfg.warehouse, native=native, checkpoint_interval=cfg.run.checkpoint_interval)


@dataclass
class RunContext:
    cfg: Config
    spark: SparkSession
    warehouse: Warehouse
    force: bool = False
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: RunLock | None = None

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @classmethod
    def start(cls, cfg: Config, command: str, force: bool = False, spark: SparkSession | None = None) -> RunContext:
        """Set up logging to the run directory, save the resolved config, start Spark."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = cfg.run_dir
        setup_logging(cfg.run.log_level, storage.join(run_dir, f"{stamp}-{command}.log"))
        # A local run directory is locked before the JVM starts, so a duplicate refuses in a second.
        lock = RunLock.acquire(cfg, command) if storage.is_local(run_dir) else None
        # Storage settings come from the session's Spark settings: start it before any write.
        spark, warehouse = connect(cfg, spark)
        store = storage.settings()
        if not storage.is_local(run_dir):
            try:
                store.check_writable(cfg.output_dir)
            except storage.StorageError:
                discard_log_copy()  # the log cannot go where nothing can be written: say it once
                raise
        lock = lock or RunLock.acquire(cfg, command)
        resolved = dump_config(cfg)
        store.write_text(storage.join(run_dir, f"{stamp}-{command}.config.yaml"), resolved)
        log.info("divspa %s, run %s, output %s, delta %s; resolved config:\n%s", command, cfg.run_id,
                 cfg.output_dir, warehouse.mode, resolved)
        return cls(cfg=cfg, spark=spark, warehouse=warehouse, force=force, lock=lock)

    def close(self) -> None:
        """Let another process take this run id (also done at exit)."""
        if self.lock is not None:
            self.lock.release()

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
