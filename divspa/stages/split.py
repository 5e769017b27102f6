"""Stage `split`: chronological train/test split of this run's clicks into split_clicks."""

from __future__ import annotations

import json
import logging
from typing import Any

from pyspark.sql import functions as F

from divspa import storage
from divspa.ingest.split import SplitError, chronological_split
from divspa.runtime import RunContext

log = logging.getLogger(__name__)
NAME = "split"


def run(ctx: RunContext) -> dict[str, Any]:
    clicks = ctx.read("clicks").drop("run_id")
    split = chronological_split(clicks, ctx.cfg.split)
    cut = split.cut.isoformat() if split.cut else None
    if not split.rows.where(F.col("split") == "train").limit(1).count():
        raise SplitError(f"no click is before the cut {cut}: train would be empty" if cut
                         else "no user has a click left for train: train would be empty")
    meta = {"divspa.split.mode": ctx.cfg.split.mode, **({"divspa.split.cut_time": cut} if cut else {})}
    result = ctx.write(NAME, "split_clicks", split.rows.withColumn("run_id", F.lit(ctx.run_id)), metadata=meta)
    wh = ctx.warehouse
    train = wh.row_count("split_clicks", where={"run_id": ctx.run_id, "split": "train"})
    test = wh.row_count("split_clicks", where={"run_id": ctx.run_id, "split": "test"})
    if test == 0:
        log.warning("split: the test split is empty (no %s click by a user and item seen in train)",
                    f"click after {cut}" if cut else "latest")
    info = {"mode": ctx.cfg.split.mode, "cut_time": cut, "train": train, "test": test, "version": result.version}
    storage.settings().write_text(storage.join(ctx.cfg.run_dir, "split.json"), json.dumps(info, indent=2))
    return info
