"""Does the base's concentration predict what DivSPA does to diversity? (issue 38)

    .venv/bin/python benchmarks/concentration.py "ML-100K sparse=divspa-output/bench-39rfm.json:youtubednn" \
        "Ciao sparse=divspa-output/bench-39rfm-ciao.json:youtubednn" ...

Each argument is LABEL=RESULTS[:ARCH], a `--results` file of benchmarks/quality.py (with ARCH for
an `--archs` run). Per seed it takes the base's concentration (distinct items over the test users'
top-100 slots, the `runs` row's distinct_share, and the base's Gini@100) and the DivSPA student's
change in distinct@100 against that base; it prints them per log and the rank correlation of each
concentration measure with the change over all seeds, and within each log. Identical (base,
student) pairs from two files (a tuned search that kept the configured trial) count once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def spearman(x: list[float], y: list[float]) -> float:
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    return float(np.corrcoef(rank(np.array(x)), rank(np.array(y)))[0, 1]) if len(x) > 2 else float("nan")


def main(args: list[str]) -> None:
    seen, points = set(), []
    for arg in args:
        label, spec = arg.split("=", 1)
        path, _, arch = spec.partition(":")
        results = json.loads(Path(path).read_text())
        for seed, models in sorted((results[arch] if arch else results).items()):
            if "divspa" not in models:
                continue
            base, student = models["base"], models["divspa"]
            key = (base["distinct@100"], student["distinct@100"], base["hr@50"])
            if key in seen:
                continue
            seen.add(key)
            points.append((label, seed, base["distinct_share@100"], base["gini@100"],
                           student["distinct@100"] / base["distinct@100"] - 1))
    print(f"{'log':<34}{'seeds':>6}{'base distinct share@100':>26}{'base Gini@100':>15}{'distinct@100 change':>22}")
    for label in dict.fromkeys(p[0] for p in points):
        mine = [p for p in points if p[0] == label]
        share, gini, change = (np.array([p[i] for p in mine]) for i in (2, 3, 4))
        print(f"{label:<34}{len(mine):>6}{f'{100 * share.mean():.2f} % ({100 * share.min():.2f}-{100 * share.max():.2f})':>26}"
              f"{gini.mean():>15.3f}{f'{100 * change.mean():+.0f} % ({100 * change.min():+.0f} to {100 * change.max():+.0f})':>22}")
    for i, name in ((2, "distinct share"), (3, "Gini")):
        print(f"\nrank correlation of the base's {name} with the change, all {len(points)} seeds: "
              f"{spearman([p[i] for p in points], [p[4] for p in points]):+.2f}")
        for label in dict.fromkeys(p[0] for p in points):
            mine = [p for p in points if p[0] == label]
            print(f"  within {label}: {spearman([p[i] for p in mine], [p[4] for p in mine]):+.2f} ({len(mine)} seeds)")


if __name__ == "__main__":
    main(sys.argv[1:])
