"""Where the augment stage's time goes, part by part, on a rung built by benchmarks/scale.py (issue 18).

    .venv/bin/python benchmarks/augment_parts.py --users 1000000 --out divspa-output/bench-scale30

In one Spark session, with scale.py's settings for that rung: the items' side (collected and
broadcast), the users' rows (Spark's joins and groupings, written to a no-op sink), the Arrow pass
over the first --slice users in this one Python process (no Spark: the numpy cost alone, one
core), and the statistics over the table the stage wrote. It measures the code it is run with: to
compare two commits, run this file from a worktree of each with PYTHONPATH set to that worktree.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from benchmarks.scale import rung_config  # noqa: E402
from divspa.augmentation.job import augment_batches  # noqa: E402
from divspa.runtime import RunContext  # noqa: E402
from divspa.stages import augment as stage  # noqa: E402
from divspa.stages.train_base import BASE_VERSION  # noqa: E402


def timed(label: str, fn: Callable[[], object]) -> object:
    start = time.perf_counter()
    out = fn()
    print(f"{label:<44}{time.perf_counter() - start:8.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000, help="the rung (scale.py's --users value)")
    ap.add_argument("--out", default="divspa-output/bench-scale", help="scale.py's --out")
    ap.add_argument("--slice", type=int, default=60_000, help="users in the one-process Arrow pass")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    ctx = RunContext.start(rung_config(args.users, args.out, args.overrides), "bench-augment-parts")
    logging.getLogger().setLevel(logging.WARNING)
    acfg = ctx.cfg.augment
    written = ctx.read("augmented_positives").where(F.col("model_version") == BASE_VERSION)
    if not written.limit(1).count():
        sys.exit(f"no augmented positives for run u{args.users} under {args.out}: run benchmarks/scale.py first")
    timed("warm-up: count the written table", written.count)
    users, side = timed("inputs: the items' side, collected and broadcast", lambda: stage.inputs(ctx, BASE_VERSION))
    timed("users' rows, to a no-op sink", lambda: users.write.format("noop").mode("overwrite").save())
    table = users.limit(args.slice).toArrow()
    run = augment_batches(acfg, ctx.cfg.run.seed, side, "sample")
    rows = timed(f"Arrow pass, {table.num_rows:,} users, one process",
                 lambda: sum(b.num_rows for b in run(iter(table.to_batches(max_chunksize=10_000)))))
    print(f"{'':<44}{rows:,} augmented positives")
    timed("statistics over the written table", lambda: stage.augmentation_stats(ctx, written))


if __name__ == "__main__":
    main()
