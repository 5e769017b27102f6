"""DivSPA vs the base model on MovieLens-100K: seeds, ablations, samplers, beta sweep, diversity.

    .venv/bin/python benchmarks/quality.py                       # 5 seeds, every variant, 2 workers
    .venv/bin/python benchmarks/quality.py --seeds 3 --variants divspa,wo_all
    .venv/bin/python benchmarks/quality.py --archs youtubednn,fm,deepfm,autoint,rfm   # Table 1's shape
    .venv/bin/python benchmarks/quality.py --archs youtubednn,ufnrec --regime sparse  # Table 3's shape

Per seed: the pipeline up to `augment` (teacher trained with that seed; tuned first with
`--set tune.trials=N`, and its students then train with the tuned settings), then one student per
variant, all evaluated by the same exact top-K code on the chronological test split. Prints
mean +- std over seeds and two-sided paired t-test p-values against the base model.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa import charts  # noqa: E402
from divspa.config import load_config  # noqa: E402
from divspa.long_tail import long_tail_mask  # noqa: E402
from divspa.models.checkpoint import load_checkpoint  # noqa: E402
from divspa.models.evaluate import EvalResult, model_scorer, popularity_scorer  # noqa: E402
from divspa.pipeline import BY_NAME, run_stage  # noqa: E402
from divspa.runtime import RunContext  # noqa: E402
from divspa.stages.augment import augment  # noqa: E402
from divspa.stages.evaluate import evaluate_scorer  # noqa: E402
from divspa.stages.train_base import BASE_VERSION, checkpoint_path  # noqa: E402
from divspa.stages.train_divspa import train_student  # noqa: E402

ALL = ["u2i", "i2i", "u2u2i"]
VARIANTS: dict[str, dict] = {
    "divspa": {},  # the configured rule (augment.rank_by: neighbour by default since 2026-12-01)
    "paper_rule": {"rank_by": "teacher"},  # every strategy re-scored by the teacher's s(u, v), as in the paper
    "wo_u2i": {"strategies": ["i2i", "u2u2i"]},
    "wo_i2i": {"strategies": ["u2i", "u2u2i"]},
    "wo_u2u2i": {"strategies": ["u2i", "i2i"]},
    "wo_all": {"strategies": []},
    "only_i2i": {"strategies": ["i2i"]},
    "sampler_uniform": {"sampler": "uniform"},
    "sampler_beta": {"sampler": "beta"},
    "beta_0.05": {"beta": 0.05},
    "beta_0.25": {"beta": 0.25},
    "beta_0.5": {"beta": 0.5},
    # Not in the paper: candidates discounted by popularity (augment.popularity_debias).
    "debias_0.1": {"debias": 0.1},
    "debias_0.25": {"debias": 0.25},
    "debias_0.5": {"debias": 0.5},
    "debias_1": {"debias": 1.0},
    # Not in the paper: i2i and u2u2i ranked by their own similarity (augment.rank_by = neighbour).
    "rank_neighbour": {"rank_by": "neighbour"},
    "rank_neighbour_wo_u2i": {"rank_by": "neighbour", "strategies": ["i2i", "u2u2i"]},
    "rank_neighbour_debias_0.25": {"rank_by": "neighbour", "debias": 0.25},
    # The paper's other mix-up (Eq. 2), and (not in the paper) augmented positives that move the
    # user tower only, or with a share of their item-side gradient (divspa.augmented_item_grad).
    "mixup_representation": {"mixup": "representation"},
    "no_aug_item_grad": {"augmented_item_grad": 0.0},
    "no_aug_item_grad_beta_0.25": {"augmented_item_grad": 0.0, "beta": 0.25},
    "aug_item_grad_0.5": {"augmented_item_grad": 0.5},
    "aug_item_grad_0.25": {"augmented_item_grad": 0.25},
    # Eq. 2's accuracy with what widened Eq. 3 (stop 35): no item-side gradient, a popularity
    # discount. (Variants of options retired by issue 41 are in git history before 2026-12-07's
    # retirement commit, with their figures in docs/benchmarks/history.md.)
    "mixup_representation_no_aug_item_grad": {"mixup": "representation", "augmented_item_grad": 0.0},
    "mixup_representation_debias_0.5": {"mixup": "representation", "debias": 0.5},
    # The paper's own knobs: k candidates kept per strategy (default 20, at most retrieve.k) and m
    # drawn from them (paper: 3).
    "k_5": {"k": 5},
    "k_50": {"k": 50},
    "m_1": {"m": 1},
    "m_10": {"m": 10},
}
# The augment options a variant may set; a variant that changes any of them re-augments.
AUGMENT_KEYS = {"sampler": "sampler", "debias": "popularity_debias", "rank_by": "rank_by", "k": "k", "m": "m"}
WORKER_ENV = "DIVSPA_QUALITY_WORKER"
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


def run_seed(args: argparse.Namespace, seed: int, variants: list[str], spark, started: float):
    """Base and every variant's student for one seed: {model: {metric: value}} (and the session)."""
    out: dict[str, dict[str, float]] = {}
    cfg = load_config(args.conf, [f"run.output_dir={args.out}", f"run.run_id=seed{seed}", f"run.seed={seed}",
                                  "eval.diversity_ks=[100,500,1000]", *args.overrides])
    ctx = RunContext.start(cfg, "bench-quality", spark=spark)
    logging.getLogger().setLevel(logging.WARNING)
    if cfg.train.num_threads:  # students too (train_base sets it only when it runs)
        torch.set_num_threads(cfg.train.num_threads)
    for name in ("ingest", "split", "prepare", "tune", "train_base", "export", "retrieve", "augment"):
        run_stage(ctx, BY_NAME[name])
    base = load_checkpoint(checkpoint_path(ctx, BASE_VERSION))
    tail = long_tail_mask(base.item_counts, cfg.augment.long_tail_share)
    out["base"] = figures(evaluate_scorer(ctx, model_scorer(base), base.vocab), tail)
    out["popularity"] = figures(evaluate_scorer(ctx, popularity_scorer(base.item_counts), base.vocab), tail)
    default = copy.deepcopy(cfg)
    as_configured = {key: getattr(default.augment, field) for key, field in AUGMENT_KEYS.items()}
    augmented_with = dict(as_configured)  # what the table holds now
    for name in variants:
        spec = VARIANTS[name]
        want = {key: spec.get(key, value) for key, value in as_configured.items()}
        if want != augmented_with:  # a different sampler or candidate rule needs a new augmentation
            ctx.cfg.augment.strategies = list(ALL)
            for key, field in AUGMENT_KEYS.items():
                setattr(ctx.cfg.augment, field, want[key])
            augment(ctx, "bench.augment", BASE_VERSION)
            augmented_with = want
        ctx.cfg.augment.strategies = list(spec.get("strategies", default.augment.strategies))
        for key in ("beta", "mixup", "augmented_item_grad"):
            setattr(ctx.cfg.divspa, key, spec.get(key, getattr(default.divspa, key)))
        version = f"bench-{name}"
        train_student(ctx, f"bench.{name}", BASE_VERSION, version)
        student = load_checkpoint(checkpoint_path(ctx, version))
        out[name] = figures(evaluate_scorer(ctx, model_scorer(student), student.vocab), tail)
        print(f"seed {seed} {name:<16} HR@50 {out[name]['hr@50']:.4f} (base {out['base']['hr@50']:.4f})  "
              f"[{time.perf_counter() - started:.0f}s]", flush=True)
    if augmented_with != as_configured:  # leave the table as the config says
        ctx.cfg.augment = copy.deepcopy(default.augment)
        augment(ctx, "bench.augment", BASE_VERSION)
    return out, ctx.spark


def plan(seeds: list[int], variants: list[str], jobs: int) -> list[list[tuple[int, list[str]]]]:
    """Work per worker: whole seeds round-robin, then the seeds left over (fewer than `jobs`) with
    their variants dealt out, so no worker idles for a whole seed. A worker that gets part of a
    seed runs that seed's pipeline itself: the same seed trains the same teacher."""
    full = len(seeds) - len(seeds) % jobs if variants else len(seeds)
    work: list[list[tuple[int, list[str]]]] = [[(s, variants) for s in seeds[j:full:jobs]] for j in range(jobs)]
    for seed in seeds[full:]:
        for j in range(jobs):
            share = variants[j::jobs]
            if share:
                work[j].append((seed, share))
    return [w for w in work if w]


def run_workers(args: argparse.Namespace, seeds: list[int], variants: list[str]) -> dict[int, dict[str, dict[str, float]]]:
    """The work split over `--jobs` processes, each with one core's worth of Spark and torch.

    On ML-100K a student is mostly small torch ops whose per-batch overhead one thread handles
    almost as fast as two (5.3 s vs 4.3 s an epoch here), so two one-thread workers do about 1.6x
    the work of one two-thread process. Each worker has its own output directory (no shared tables).
    """
    procs = []
    for j, tasks in enumerate(plan(seeds, variants, args.jobs)):
        result = Path(args.out) / f"worker{j}.json"
        cmd = [sys.executable, __file__, "--conf", args.conf, "--tasks", json.dumps(tasks), "--jobs", "1",
               "--out", str(Path(args.out) / f"worker{j}"), "--results", str(result),
               "--set", "spark.master=local[1]", "--set", "train.num_threads=1"]
        for o in args.overrides:
            cmd += ["--set", o]
        env = {**os.environ, "OMP_NUM_THREADS": "1", WORKER_ENV: "1"}
        procs.append((subprocess.Popen(cmd, env=env), result))
    failed = [p.args for p, _ in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) failed; see their output above")
    merged: dict[int, dict[str, dict[str, float]]] = {}
    for _, result in procs:
        for seed, models in json.loads(result.read_text()).items():
            have = merged.setdefault(int(seed), {})
            if "base" in have and have["base"] != models["base"]:
                print(f"warning: seed {seed}: workers trained different base models", file=sys.stderr)
            have.update(models)
    return merged


def report(by_seed: dict[int, dict[str, dict[str, float]]], variants: list[str], conf: str, elapsed: float,
           frontier: str = "") -> None:
    seeds = sorted(by_seed)
    print(f"\n# {conf}, {len(seeds)} seeds, {elapsed:.0f}s; mean +- std; p = two-sided paired t-test vs base")
    for title, keys in (("accuracy", ACC), ("diversity", DIV)):
        print(f"\n{title}:")
        print(f"{'model':<18}" + "".join(f"{k:>25}" for k in keys))
        for model in ["popularity", "base", *variants]:
            cells = []
            for k in keys:
                vals = [by_seed[s][model][k] for s in seeds if k in by_seed[s].get(model, {})]
                if len(vals) != len(seeds):
                    cells.append(f"{'-':>25}")
                    continue
                mean, std = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                base = [by_seed[s]["base"][k] for s in seeds]
                p = "" if model in ("base", "popularity") else f" p={paired_t_p(vals, base):.3f}"
                fmt = f"{mean:.4f}+-{std:.4f}" if mean < 1.5 else f"{mean:.0f}+-{std:.0f}"
                cells.append(f"{fmt + p:>25}")
            print(f"{model:<18}" + "".join(cells))
    points = {m: (float(np.mean([by_seed[s][m]["distinct@100"] for s in seeds])),
                  float(np.mean([by_seed[s][m]["hr@50"] for s in seeds])))
              for m in ["popularity", "base", *variants] if all(m in by_seed[s] for s in seeds)}
    if frontier:
        svg = charts.frontier(f"{conf}: mean over {len(seeds)} seeds", points, "distinct items @100", "HR@50")
        Path(frontier).parent.mkdir(parents=True, exist_ok=True)
        Path(frontier).write_text("<!doctype html><html><body>" + svg + "</body></html>")
        Path(frontier).with_suffix(".svg").write_text(svg)  # the same chart alone, for a Markdown page
        print(f"\naccuracy-diversity frontier: {frontier} (and .svg)")
    pop = [by_seed[s]["popularity"]["hr@50"] for s in seeds if "popularity" in by_seed[s]]
    if len(pop) == len(seeds):
        ratio = [by_seed[s]["base"]["hr@50"] / max(by_seed[s]["popularity"]["hr@50"], 1e-12) for s in seeds]
        print(f"\nbase / popularity HR@50: {np.mean(ratio):.2f}x (min {min(ratio):.2f}x over seeds)")


# --archs names beyond model.arch: the settings that make each of the paper's other bases.
BASES = {"rfm": ["model.arch=youtubednn", "model.ssl=rfm"],
         "ufnrec": ["model.arch=youtubednn", "train.false_negatives=true"]}

# The paper's Table 1 (Video), for the ordering of the bases: HR@50/100/200, NDCG@50/100/200.
PAPER_TABLE1 = {"fm": [0.2059, 0.2890, 0.3778, 0.1050, 0.1207, 0.1617],
                "youtubednn": [0.2204, 0.3018, 0.3926, 0.1109, 0.1236, 0.1671],
                "autoint": [0.2168, 0.3037, 0.3920, 0.1143, 0.1251, 0.1671],
                "deepfm": [0.2238, 0.3041, 0.3951, 0.1122, 0.1243, 0.1655],
                "rfm": [0.2254, 0.3063, 0.3979, 0.1150, 0.1285, 0.1707],
                "divspa (youtubednn)": [0.2304, 0.3114, 0.4035, 0.1181, 0.1310, 0.1735]}
# Table 3 (Video): DivSPA on YoutubeDNN against UFNRec, and DivSPA with UFNRec in teacher and student.
PAPER_TABLE3 = {"divspa (youtubednn)": [0.2304, 0.3114, 0.4035, 0.1181, 0.1310, 0.1735],
                "ufnrec": [0.2275, 0.3078, 0.3968, 0.1163, 0.1276, 0.1691],
                "divspa (ufnrec)": [0.2358, 0.3143, 0.4069, 0.1211, 0.1344, 0.1751]}


def arch_table(by_arch: dict[str, dict[int, dict[str, dict[str, float]]]], conf: str, elapsed: float) -> None:
    """Table 1's shape: each base and DivSPA on that base; p = paired t-test against that base."""
    print(f"\n# Table 1 shape: {conf}, {elapsed:.0f}s; mean +- std over seeds; p: a DivSPA row against its own "
          "base, a base against the first arch's base (paired by seed)")
    print(f"{'model':<22}" + "".join(f"{k:>25}" for k in ACC) + f"{'distinct@100':>16}{'long_tail@100':>16}")
    first = next(iter(by_arch.values()))  # a base's p is against the first arch's base, same seeds
    for arch, by_seed in by_arch.items():
        seeds = sorted(by_seed)
        for model, label in (("base", arch), ("divspa", f"DivSPA ({arch})")):
            cells = []
            ref = by_seed if model != "base" else first if by_seed is not first and set(first) == set(seeds) else None
            for k in [*ACC, "distinct@100", "long_tail@100"]:
                vals = [by_seed[s][model][k] for s in seeds]
                mean, std = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                p = f" p={paired_t_p(vals, [ref[s]['base'][k] for s in seeds]):.3f}" if ref is not None else ""
                cells.append(f"{f'{mean:.4f}+-{std:.4f}' + p:>25}" if k in ACC
                             else f"{mean:>16.0f}" if k == "distinct@100" else f"{mean:>16.3f}")
            print(f"{label:<22}" + "".join(cells))
    for name, paper in (("Table 1", PAPER_TABLE1), ("Table 3", PAPER_TABLE3 if "ufnrec" in by_arch else {})):
        if paper:
            print(f"\npaper, {name} (Video):")
        for label, vals in paper.items():
            print(f"{label:<22}" + "".join(f"{v:>25.4f}" for v in vals))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conf", default="conf/ml100k.yaml")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tasks", default="", help=argparse.SUPPRESS)  # a worker's [[seed, [variants]], ...]
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2, help="worker processes, seeds split between them")
    ap.add_argument("--out", default="divspa-output/bench-quality")
    ap.add_argument("--results", default="", help="write {seed: {model: {metric: value}}} here as JSON")
    ap.add_argument("--regime", choices=["dense", "sparse"], default="dense",
                    help="sparse: per-user split, each user's train thinned to --max-train-clicks random clicks")
    ap.add_argument("--max-train-clicks", type=int, default=5,
                    help="the sparse regime's cap (paper's Video: 2.2 clicks a user on average)")
    ap.add_argument("--report-from", default="", help="print the tables of an earlier run's --results file")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--archs", default="", help="comma-separated model.arch values, rfm (YoutubeDNN with model.ssl=rfm) or ufnrec "
                    "(YoutubeDNN with train.false_negatives): base and DivSPA of each "
                    "(--variants defaults to divspa), reported in the shape of the paper's Table 1")
    args = ap.parse_args()
    if args.regime == "sparse" and not args.tasks:  # workers get these as --set already
        args.overrides = ["split.mode=per_user", f"split.max_train_clicks={args.max_train_clicks}", *args.overrides]
    variants = [v for v in args.variants.split(",") if v]  # none: the base model and popularity only
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = list(range(1, args.seeds + 1))
    started = time.perf_counter()
    if args.archs and args.report_from:
        arch_table(json.loads(Path(args.report_from).read_text()), " ".join([args.conf, *args.overrides]), 0.0)
        return
    if args.archs and not args.tasks:
        by_arch, out = {}, args.out
        for arch in args.archs.split(","):
            arch_args = copy.copy(args)
            arch_args.out, arch_args.overrides = str(Path(out) / arch), [*args.overrides, *BASES.get(
                arch, [f"model.arch={arch}"])]
            by_arch[arch] = run_workers(arch_args, seeds, ["divspa"]) if args.jobs > 1 else \
                {seed: run_seed(arch_args, seed, ["divspa"], None, started)[0] for seed in seeds}
            print(f"{arch}: done [{time.perf_counter() - started:.0f}s]", flush=True)
            if args.results:  # after each arch, so a stopped run's finished archs can be re-printed
                Path(args.results).write_text(json.dumps(by_arch))
        arch_table(by_arch, " ".join([args.conf, *args.overrides]), time.perf_counter() - started)
        return
    if args.report_from:  # tables and frontier again from a run's --results file, no training
        by_seed = {int(k): v for k, v in json.loads(Path(args.report_from).read_text()).items()}
        report(by_seed, variants, " ".join([args.conf, *args.overrides]), 0.0, str(Path(args.out) / "frontier.html"))
        return
    if args.jobs > 1 and not args.tasks:
        by_seed = run_workers(args, seeds, variants)
    else:
        tasks = json.loads(args.tasks) if args.tasks else [(seed, variants) for seed in seeds]
        by_seed, spark = {}, None
        for seed, mine in tasks:
            by_seed[seed], spark = run_seed(args, seed, mine, spark, started)
    if args.results:
        Path(args.results).write_text(json.dumps(by_seed))
    if os.environ.get(WORKER_ENV):  # the parent reports over every worker's seeds
        return
    report(by_seed, variants, " ".join([args.conf, *args.overrides]), time.perf_counter() - started,
           str(Path(args.out) / "frontier.html"))


if __name__ == "__main__":
    main()
