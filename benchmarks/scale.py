"""Scale: the pipeline on synthetic logs with the paper's Video ratios, growing to 1M+ users.

    .venv/bin/python benchmarks/scale.py                          # 50k, 100k, 200k, 500k, 1M users
    .venv/bin/python benchmarks/scale.py --users 50000,200000     # a shorter ladder
    .venv/bin/python benchmarks/scale.py --users 1000000 --stages retrieve   # re-measure one stage

Video (paper, Table 2): 11.62M users, 0.42M items, 25.34M clicks, i.e. per user 0.036 items
and 2.18 clicks. Each rung runs ingest -> augment (base trained for --epochs epochs; IVF index;
user corpus over 64 MB memory-mapped) and records wall time and the peak memory (RSS and PSS) of the whole
process tree (Python driver, Spark JVM, Python workers) per stage. Fits time ~ a * users^b per stage
and extrapolates to the full Video size on this machine.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa.config import Config, load_config  # noqa: E402
from divspa.pipeline import BY_NAME, run_stage  # noqa: E402
from divspa.runtime import RunContext  # noqa: E402

STAGES = ["ingest", "split", "prepare", "train_base", "export", "retrieve", "augment"]
VIDEO_USERS, ITEMS_PER_USER, CLICKS_PER_USER = 11_620_000, 0.42 / 11.62, 25.34 / 11.62


def _tree(root: int) -> list[int]:
    """A process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            exe = fh.read().split(b"\0", 1)[0]
    except OSError:
        return "other"
    return "jvm" if exe.endswith(b"java") else "workers"


def tree_memory_mb(root: int) -> tuple[float, float, dict[str, float]]:
    """(RSS, PSS, PSS by kind: driver / jvm / workers) of the process tree in MB.

    RSS counts a page shared by several processes (Python workers forked from one daemon, say)
    once per process, so its sum overstates what the tree needs; PSS splits each shared page
    between its sharers and sums to the memory actually used.
    """
    rss = pss = 0
    by_kind: dict[str, float] = {}
    for pid in _tree(root):
        p = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        p = int(line.split()[1])
        except OSError:
            continue
        pss += p
        kind = _kind(pid, root)
        by_kind[kind] = by_kind.get(kind, 0.0) + p / 1024
    return rss / 1024, pss / 1024, by_kind


class PeakMemory:
    def __init__(self) -> None:
        self.peak = self.peak_pss = 0.0
        self.at_peak: dict[str, float] = {}  # PSS by kind when the tree's PSS peaked
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, by_kind = tree_memory_mb(os.getpid())
            self.peak = max(self.peak, rss)
            if pss > self.peak_pss:
                self.peak_pss, self.at_peak = pss, by_kind
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fit(users: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares a, b of seconds = a * users^b (in log space)."""
    b, log_a = np.polyfit(np.log(users), np.log(np.maximum(seconds, 1e-3)), 1)
    return math.exp(log_a), b


def rung_config(n: int, out: str, overrides: list[str]) -> Config:
    """The settings of the rung with n users: Video's ratios, IVF, a memory-mapped user corpus."""
    items = max(100, int(n * ITEMS_PER_USER))
    return load_config("conf/default.yaml", [
        f"run.output_dir={out}", f"run.run_id=u{n}", f"synthetic.num_users={n}", f"synthetic.num_items={items}",
        f"synthetic.mean_clicks_per_user={CLICKS_PER_USER}", f"synthetic.num_clusters={max(20, items // 200)}",
        f"synthetic.partitions={max(8, n // 50000)}", "synthetic.bad_row_fraction=0", "train.epochs=1",
        "train.max_val_examples=5000", "retrieve.index=ivf", "retrieve.broadcast_max_mb=64",
        f"spark.shuffle_partitions={max(8, n // 25000)}", "spark.driver_memory=8g", *overrides])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", default="50000,100000,200000,500000,1000000")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", default="divspa-output/bench-scale")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="re-measure only these stages of rungs already in --out (earlier stages' tables are reused)")
    args = ap.parse_args()
    stages = [s for s in STAGES if s in args.stages.split(",")]
    ladder = [int(u) for u in args.users.split(",")]
    spark = None
    table: dict[int, dict[str, tuple[float, float]]] = {}
    for n in ladder:
        cfg = rung_config(n, args.out, [f"train.epochs={args.epochs}", *args.overrides])
        items = cfg.synthetic.num_items
        ctx = RunContext.start(cfg, "bench-scale", spark=spark)
        spark = ctx.spark
        logging.getLogger().setLevel(logging.WARNING)
        table[n] = {}
        for stage in stages:
            with PeakMemory() as mem:
                start = time.perf_counter()
                ctx.force = True
                run_stage(ctx, BY_NAME[stage])
                wall = time.perf_counter() - start
            table[n][stage] = (wall, mem.peak_pss)
            kinds = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(mem.at_peak.items()))
            print(f"{n:>9,} users  {stage:<11} {wall:8.1f}s  peak RSS {mem.peak:8,.0f} MB  "
                  f"PSS {mem.peak_pss:8,.0f} MB ({kinds})", flush=True)
        if "retrieve" in stages:  # the approximate index's recall, measured by the stage on its own vectors
            recalls = ctx.read("metrics").where("stage = 'retrieve' and metric = 'ann_recall'").collect()
            print(f"{n:>9,} users: recall@k against exact search " + ", ".join(
                f"{r['model']} {r['value']:.4f}" for r in sorted(recalls, key=lambda r: r["model"])), flush=True)
        clicks = ctx.warehouse.row_count("clicks", where={"run_id": ctx.run_id})
        aug = ctx.warehouse.row_count("augmented_positives", where={"run_id": ctx.run_id}) \
            if ctx.warehouse.exists("augmented_positives") else 0  # stages up to export make none
        print(f"{n:>9,} users: {items:,} items, {clicks:,} clicks, {aug:,} augmented positives", flush=True)

    cores = os.cpu_count() or 1
    print(f"\n# {cores} cores; wall seconds (peak PSS MB of the process tree) per stage")
    print(f"{'users':>10}" + "".join(f"{s:>20}" for s in stages) + f"{'total s':>10}")
    for n in ladder:
        cells = "".join(f"{table[n][s][0]:>10.1f} ({table[n][s][1]:>6,.0f})" for s in stages)
        print(f"{n:>10,}{cells}{sum(t for t, _ in table[n].values()):>10.1f}")
    if len(ladder) >= 2:
        print(f"\n{'stage':<12}{'exponent b':>12}{'Video (11.62M users) est.':>28}")
        total = 0.0
        for s in stages:
            a, b = fit(ladder, [table[n][s][0] for n in ladder])
            est = a * VIDEO_USERS**b
            total += est
            print(f"{s:<12}{b:>12.2f}{est / 3600:>24.1f} h")
        a, b = fit(ladder, [sum(t for t, _ in table[n].values()) for n in ladder])
        print(f"{'total':<12}{b:>12.2f}{total / 3600:>24.1f} h  (sum of per-stage fits)")
        # Spark stages are data-parallel; train_base is one PyTorch process. Assuming the Spark part
        # scales with cores (it ran on `cores` here), each added core saves this much:
        if "train_base" not in stages:
            return
        train_a, train_b = fit(ladder, [table[n]["train_base"][0] for n in ladder])
        spark_part = total - train_a * VIDEO_USERS**train_b
        print(f"per added core (Spark stages scaling linearly from {cores} cores): "
              f"-{spark_part * (1 - cores / (cores + 1)) / 3600:.1f} h; train_base stays "
              f"{train_a * VIDEO_USERS**train_b / 3600:.1f} h per epoch")


if __name__ == "__main__":
    main()
