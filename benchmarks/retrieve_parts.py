"""Where the retrieve stage's time goes, list by list, on a rung built by benchmarks/scale.py (issue 18).

    .venv/bin/python benchmarks/retrieve_parts.py --users 1000000 --out divspa-output/bench-scale30

In one Spark session, with scale.py's settings for that rung: each neighbour list (u2i, i2i, u2u)
indexed and searched into a no-op sink (the index build is inside its line), the recall check of
each list against exact search on the table the stage wrote, and the per-list row count the stage
logs. What is left of the stage's own time is the Delta write of the rows. It measures the code it
is run with: to compare two commits, run this file from a worktree of each with PYTHONPATH set to
that worktree.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from benchmarks.augment_parts import timed  # noqa: E402
from benchmarks.scale import rung_config  # noqa: E402
from divspa import storage  # noqa: E402
from divspa.runtime import RunContext  # noqa: E402
from divspa.stages import retrieve as stage  # noqa: E402
from divspa.stages.train_base import BASE_VERSION  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000, help="the rung (scale.py's --users value)")
    ap.add_argument("--out", default="divspa-output/bench-scale", help="scale.py's --out")
    ap.add_argument("--lists", default="u2i,i2i,u2u", help="which neighbour lists to time")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    ctx = RunContext.start(rung_config(args.users, args.out, args.overrides), "bench-retrieve-parts")
    logging.getLogger().setLevel(logging.WARNING)
    written = ctx.read("neighbours").where(F.col("model_version") == BASE_VERSION)
    if not written.limit(1).count():
        sys.exit(f"no neighbours for run u{args.users} under {args.out}: run benchmarks/scale.py first")
    scratch = storage.join(ctx.cfg.output_dir, "scratch", ctx.run_id, f"parts-{uuid.uuid4().hex[:8]}")
    searches: stage.Searches = {}
    try:
        timed("warm-up: count the written lists", written.count)
        for name in args.lists.split(","):
            rows = stage.neighbours(ctx, BASE_VERSION, scratch, {name}, searches)
            timed(f"{name}: index and search, to a no-op sink", lambda r=rows: r.write.format("noop").mode("overwrite").save())
        for name, (queries, corpus, k) in sorted(searches.items()):
            approx = written.where(F.col("strategy") == name)
            got = timed(f"{name}: recall check against exact search",
                        lambda q=queries, c=corpus, a=approx, k=k: stage.ann_recall(
                            q, c, a, k, ctx.cfg.retrieve, ctx.cfg.run.seed))
            print(f"{'':<44}recall@{k} {got[0]:.4f} on {got[1]:,} queries", flush=True)
        timed("rows per list, re-read", lambda: written.groupBy("strategy").count().collect())
    finally:
        storage.settings().delete_dir(scratch)


if __name__ == "__main__":
    main()
