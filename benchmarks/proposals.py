"""How each strategy's augmented items compare with the click log: concentration and hubs.

    .venv/bin/python benchmarks/proposals.py divspa-output/ml100k/warehouse [RUN_ID]

Reads `augmented_positives` and `train_examples` of one run (the newest when RUN_ID is not given)
with delta-rs and prints, per strategy, the rows, the distinct items, the share of rows taken by
the most proposed 1 % and 10 % of the clicked items (beside the same shares of the clicks), and
quantiles of the over-proposal ratio (an item's share of the strategy's rows over its share of
the fitted clicks). A strategy that hands the same few items to everyone shows high shares and a
long ratio tail: the teacher's hubs (docs/BENCHMARKS.md, "Calibrating what each strategy proposes").
"""

from __future__ import annotations

import sys

import numpy as np
from deltalake import DeltaTable


def top_share(counts: np.ndarray, n: int) -> float:
    c = np.sort(counts)[::-1]
    return float(c[:n].sum() / c.sum())


def main() -> None:
    warehouse = sys.argv[1]
    aug = DeltaTable(f"{warehouse}/augmented_positives").to_pandas(
        columns=["run_id", "strategy", "aug_item_id", "model_version"])
    run = sys.argv[2] if len(sys.argv) > 2 else sorted(aug.run_id.unique())[-1]
    aug = aug[(aug.run_id == run) & (aug.model_version == "base")]
    train = DeltaTable(f"{warehouse}/train_examples").to_pandas(columns=["run_id", "item_id", "is_val"])
    clicks = train[(train.run_id == run) & ~train.is_val].item_id.value_counts()
    one, ten = max(1, len(clicks) // 100), max(1, len(clicks) // 10)
    print(f"run {run}: {clicks.sum():,} fitted clicks over {len(clicks):,} items; the top 1 % ({one}) of items "
          f"take {top_share(clicks.values, one):.3f} of them, the top 10 % ({ten}) {top_share(clicks.values, ten):.3f}")
    for strategy, rows in aug.groupby("strategy"):
        counts = rows.aug_item_id.value_counts()
        ratio = (counts / counts.sum()) / (clicks.reindex(counts.index).fillna(0.5) / clicks.sum())
        q = np.quantile(ratio.values, [0.5, 0.9, 0.99, 1.0])
        print(f"{strategy:>6}: {len(rows):,} rows over {len(counts):,} items; top 1 % {top_share(counts.values, one):.3f}, "
              f"top 10 % {top_share(counts.values, ten):.3f}; over-proposal ratio p50/p90/p99/max "
              + " / ".join(f"{v:.2f}" for v in q))


if __name__ == "__main__":
    main()
