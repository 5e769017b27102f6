"""What a running stage has at hand: the config, Spark, the warehouse, the run id, its log.

Each run keeps `runs/<run_id>/` beside the warehouse: the resolved config of every command
(so a figure can always be traced to its settings) and the command's log file.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from divspa.config import Config, dump_config
from divspa.delta import Txn, Warehouse, WriteResult
from divspa.schemas import load_schema
from divspa.spark import get_spark

log = logging.getLogger("divspa")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_divspa", False):
            root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
        handler._divspa = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for noisy in ("py4j", "py4j.clientserver", "py4j.java_gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the stage and the cause."""


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
        run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(cfg.run.log_level, run_dir / f"{stamp}-{command}.log")
        resolved = dump_config(cfg)
        (run_dir / f"{stamp}-{command}.config.yaml").write_text(resolved)
        log.info("divspa %s, run %s, output %s; resolved config:\n%s", command, cfg.run_id,
                 Path(cfg.run.output_dir).resolve(), resolved)
        spark = spark or get_spark(cfg.spark)
        return cls(cfg=cfg, spark=spark, warehouse=Warehouse(spark, cfg.warehouse), force=force)

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
        info["wall_s"] = round(time.monotonic() - started, 2)
        self.stats[stage] = info
        log.info("stage %s: done in %.1fs %s", stage, info["wall_s"],
                 {k: v for k, v in info.items() if k != "wall_s"})
