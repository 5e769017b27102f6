"""DivSPA vs the base model on MovieLens-100K: seeds, ablations, samplers, beta sweep, diversity.

    .venv/bin/python benchmarks/quality.py                       # 5 seeds, every variant
    .venv/bin/python benchmarks/quality.py --seeds 3 --variants divspa,wo_all

Per seed: the pipeline up to `augment` (teacher trained with that seed), then one student per
variant, all evaluated by the same exact top-K code on the chronological test split. Prints
mean +- std over seeds and two-sided paired t-test p-values against the base model.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa.config import load_config  # noqa: E402
from divspa.models.checkpoint import load_checkpoint  # noqa: E402
from divspa.models.evaluate import EvalResult, long_tail_mask, model_scorer  # noqa: E402
from divspa.pipeline import BY_NAME, run_stage  # noqa: E402
from divspa.runtime import RunContext  # noqa: E402
from divspa.stages.augment import augment  # noqa: E402
from divspa.stages.evaluate import evaluate_scorer  # noqa: E402
from divspa.stages.train_base import BASE_VERSION, checkpoint_path  # noqa: E402
from divspa.stages.train_divspa import train_student  # noqa: E402

ALL = ["u2i", "i2i", "u2u2i"]
VARIANTS: dict[str, dict] = {
    "divspa": {},
    "wo_u2i": {"strategies": ["i2i", "u2u2i"]},
    "wo_i2i": {"strategies": ["u2i", "u2u2i"]},
    "wo_u2u2i": {"strategies": ["u2i", "i2i"]},
    "wo_all": {"strategies": []},
    "sampler_uniform": {"sampler": "uniform"},
    "sampler_beta": {"sampler": "beta"},
    "beta_0.05": {"beta": 0.05},
    "beta_0.25": {"beta": 0.25},
    "beta_0.5": {"beta": 0.5},
}
ACC = [f"{m}@{k}" for m in ("hr", "ndcg") for k in (50, 100, 200)]
DIV = ["distinct@100", "distinct@500", "distinct@1000", "coverage@100", "gini@100", "long_tail@100"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 3e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    bt = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1 - x) / b


def paired_t_p(x: list[float], y: list[float]) -> float:
    """Two-sided p-value of the paired t-test of x - y (nan with < 2 pairs or no variance)."""
    d = np.asarray(x) - np.asarray(y)
    n = len(d)
    if n < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() != 0 else 1.0
    t = d.mean() / (sd / math.sqrt(n))
    dof = n - 1
    return betainc(dof / 2, 0.5, dof / (dof + t * t))


def figures(res: EvalResult, tail: np.ndarray) -> dict[str, float]:
    out = {f"{m}@{k}": res.metric(m, k) for m in ("hr", "ndcg") for k in (50, 100, 200) if k in res.hits}
    for _, metric, k, value in res.diversity_rows("x", tail):
        name = {"distinct_items": "distinct", "long_tail_share": "long_tail"}.get(metric, metric)
        out[f"{name}@{k}"] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conf", default="conf/ml100k.yaml")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="divspa-output/bench-quality")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    variants = args.variants.split(",")
    started = time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {}
    spark = None
    for seed in range(1, args.seeds + 1):
        cfg = load_config(args.conf, [f"run.output_dir={args.out}", f"run.run_id=seed{seed}", f"run.seed={seed}",
                                      "eval.diversity_ks=[100,500,1000]", *args.overrides])
        ctx = RunContext.start(cfg, "bench-quality", spark=spark)
        spark = ctx.spark
        logging.getLogger().setLevel(logging.WARNING)
        for name in ("ingest", "split", "prepare", "train_base", "export", "retrieve", "augment"):
            run_stage(ctx, BY_NAME[name])
        base = load_checkpoint(checkpoint_path(ctx, BASE_VERSION))
        tail = long_tail_mask(base.item_counts, cfg.augment.long_tail_share)
        for key, value in figures(evaluate_scorer(ctx, model_scorer(base), base.vocab), tail).items():
            results.setdefault("base", {}).setdefault(key, []).append(value)
        default = copy.deepcopy(cfg)
        sampler_done = cfg.augment.sampler
        for name in variants:
            spec = VARIANTS[name]
            ctx.cfg.augment.strategies = list(spec.get("strategies", default.augment.strategies))
            ctx.cfg.augment.sampler = spec.get("sampler", default.augment.sampler)
            ctx.cfg.divspa.beta = spec.get("beta", default.divspa.beta)
            if ctx.cfg.augment.sampler != sampler_done:  # a different sampler needs a new augmentation
                ctx.cfg.augment.strategies = list(ALL)
                augment(ctx, "bench.augment", BASE_VERSION)
                sampler_done = ctx.cfg.augment.sampler
                ctx.cfg.augment.strategies = list(spec.get("strategies", default.augment.strategies))
            version = f"bench-{name}"
            train_student(ctx, f"bench.{name}", BASE_VERSION, version)
            student = load_checkpoint(checkpoint_path(ctx, version))
            for key, value in figures(evaluate_scorer(ctx, model_scorer(student), student.vocab), tail).items():
                results.setdefault(name, {}).setdefault(key, []).append(value)
            print(f"seed {seed} {name:<16} HR@50 {results[name]['hr@50'][-1]:.4f} (base "
                  f"{results['base']['hr@50'][-1]:.4f})  [{time.perf_counter() - started:.0f}s]", flush=True)
        if sampler_done != default.augment.sampler:  # leave the run's table as the config says
            ctx.cfg.augment = copy.deepcopy(default.augment)
            augment(ctx, "bench.augment", BASE_VERSION)

    n = args.seeds
    print(f"\n# {args.conf}, {n} seeds, {time.perf_counter() - started:.0f}s; mean +- std; "
          f"p = two-sided paired t-test vs base")
    for title, keys in (("accuracy", ACC), ("diversity", DIV)):
        print(f"\n{title}:")
        print(f"{'model':<18}" + "".join(f"{k:>25}" for k in keys))
        for model in ["base", *variants]:
            cells = []
            for k in keys:
                vals = results.get(model, {}).get(k)
                if not vals:
                    cells.append(f"{'-':>25}")
                    continue
                mean, std = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                p = "" if model == "base" else f" p={paired_t_p(vals, results['base'][k]):.3f}"
                fmt = f"{mean:.4f}+-{std:.4f}" if mean < 1.5 else f"{mean:.0f}+-{std:.0f}"
                cells.append(f"{fmt + p:>25}")
            print(f"{model:<18}" + "".join(cells))


if __name__ == "__main__":
    main()
