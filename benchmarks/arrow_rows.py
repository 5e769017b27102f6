"""What it costs Spark to take rows out of Python: `mapInArrow` emitting ready-made result
batches (the retrieve stage's shape: query_id, rank, neighbour_id, score) into the `noop` sink,
with the columns declared nullable and NOT NULL.

    .venv/bin/python benchmarks/arrow_rows.py             # 41M rows, 5 interleaved rounds, ~1 min

The Python side does no work beyond handing over the same prepared batches, so the difference
is Spark's conversion of Arrow batches into rows (`spark_knn.RESULT_SCHEMA` is NOT NULL for it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa.config import SparkConfig  # noqa: E402
from divspa.spark import get_spark  # noqa: E402

NULLABLE = "query_id bigint, rank int, neighbour_id bigint, score float"
NOT_NULL = "query_id bigint not null, rank int not null, neighbour_id bigint not null, score float not null"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=50, help="result batches of 4,096 queries x top 200")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    spark = get_spark(SparkConfig(master="local[2]", shuffle_partitions=8, driver_memory="6g"))
    per_batch = 4096 * 200

    def emit(it):
        batch = pa.RecordBatch.from_arrays(
            [pa.array(np.repeat(np.arange(4096, dtype=np.int64), 200)), pa.array(np.tile(np.arange(1, 201, dtype=np.int32), 4096)),
             pa.array(np.arange(per_batch, dtype=np.int64) % 50_000), pa.array(np.ones(per_batch, np.float32))],
            names=["query_id", "rank", "neighbour_id", "score"])
        for b in it:
            for _ in range(b.num_rows):
                yield batch

    src = spark.range(0, args.batches, numPartitions=2)
    src.mapInArrow(emit, NULLABLE).write.format("noop").mode("overwrite").save()  # warm-up (JIT, workers)
    times: dict[str, list[float]] = {"nullable": [], "NOT NULL": []}
    for _ in range(args.rounds):
        for name, schema in (("nullable", NULLABLE), ("NOT NULL", NOT_NULL)):
            t = time.perf_counter()
            src.mapInArrow(emit, schema).write.format("noop").mode("overwrite").save()
            times[name].append(time.perf_counter() - t)
    spark.stop()
    rows = args.batches * per_batch
    print(f"\n{rows:,} rows out of mapInArrow into noop, local[2], median of {args.rounds} rounds")
    print(f"{'result columns':<16}{'wall s':>10}{'M rows/s':>12}   rounds")
    for name, ts in times.items():
        s = float(np.median(ts))
        print(f"{name:<16}{s:>10.2f}{rows / s / 1e6:>12.1f}   {', '.join(f'{t:.2f}' for t in ts)}")


if __name__ == "__main__":
    main()
