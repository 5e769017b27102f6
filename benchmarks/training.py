"""Training cost: base vs DivSPA examples/s per epoch, and the reader vs a raw pyarrow read.

    .venv/bin/python benchmarks/training.py                       # MovieLens-100K (conf/ml100k.yaml)
    .venv/bin/python benchmarks/training.py --conf conf/default.yaml
    .venv/bin/python benchmarks/training.py --processes 1,2     # also: data-parallel ranks (issue 20)
    .venv/bin/python benchmarks/training.py --systems base,rfm,ufnrec --epochs 5 --passes 0   # RFM, UFNRec vs base

Runs the pipeline up to `augment` for the config's run if needed (skipping what is committed),
then times one epoch of each trainer on the same examples (3 strategies x m = 3 augmented
positives for DivSPA) and the reader over the same files. Goals: DivSPA epoch <= 1.5x base;
reader >= 0.8x raw pyarrow.

With `--processes 1,2` each trainer is then trained for `--ddp-epochs` fixed epochs through
`divspa.models.distributed.train` (what the stages run) with each number of processes: the
cores are split between the ranks (N ranks of cores/N torch threads; one process uses them all),
and the table reports the median epoch (validation excluded) and the whole call (process start,
imports and validation included).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divspa.config import Config, load_config  # noqa: E402
from divspa.models.distributed import TrainJob, train  # noqa: E402
from divspa.models.divspa import DivspaTrainer  # noqa: E402
from divspa.models.trainer import Trainer  # noqa: E402
from divspa.pipeline import BY_NAME, run_stage  # noqa: E402
from divspa.reader import DeltaIterableDataset  # noqa: E402
from divspa.runtime import RunContext  # noqa: E402
from divspa.stages.train_base import BASE_VERSION, build_bundle  # noqa: E402
from divspa.stages.train_divspa import divspa_examples  # noqa: E402


def epoch_rate(trainer: Trainer) -> tuple[float, int]:
    """Examples/s of one training epoch (no validation), after a short warm-up."""
    trainer.tcfg.epochs = 1
    from divspa.reader import stream_tables

    tables = list(stream_tables(trainer.dataset, trainer.columns, trainer.train_filter, trainer.tcfg.batch_size,
                                trainer.tcfg.shuffle_buffer, 0, 1))
    trainer.model.train()
    for table in tables[:5]:  # warm-up
        trainer.batch_loss(table).backward()
    start = time.perf_counter()
    rows = 0
    for table in tables:
        loss = trainer.batch_loss(table)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        if trainer.false_negatives:
            trainer.false_negatives.after_step(trainer.model)
        rows += table.num_rows
    return rows / (time.perf_counter() - start), rows


def state_bytes(trainer: Trainer) -> int:
    """What training holds beside the data: weights, Adam's two moments per weight (CatchUpAdam's
    too), UFNRec's row memory and its moving-average teacher."""
    weights = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    fn = trainer.false_negatives
    return 3 * weights + (fn.memory.nbytes + (weights if fn.teacher else 0) if fn else 0)


def systems(ctx: RunContext, cfg: Config, names: list[str], epochs: int) -> None:
    """The paper's other bases against the plain one, one epoch each in turn (median of `epochs`):
    RFM (model.ssl) and UFNRec (train.false_negatives, reversal started and its memory filled by
    one untimed epoch; ufn_reverse 0, so every remembered item is reversed from its second visit
    and the consistency term is computed: its costliest case)."""
    settings = {"base": {}, "rfm": {"model.ssl": "rfm"}, "ufnrec": {"train.false_negatives": True, "train.ufn_reverse": 0}}
    trainers = {}
    for name in names:
        run_cfg = copy.deepcopy(cfg)
        for key, value in settings[name].items():
            section, field = key.split(".")
            setattr(getattr(run_cfg, section), field, value)
        trainer = Trainer(run_cfg, build_bundle(ctx, f"bench-{name}", run_cfg), ctx.warehouse.dataset("train_examples"),
                          ctx.run_id)
        if trainer.false_negatives:
            started = trainer.false_negatives.after_epoch(run_cfg.train.ufn_min_epochs, [1.0, 1.0], False, trainer.model)
            assert started, "UFNRec's reversal did not start"
            epoch_rate(trainer)  # fills the row memory
        trainers[name] = trainer
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(epochs):
        for name, trainer in trainers.items():
            rate, n = epoch_rate(trainer)
            rates[name].append(rate)
    base = statistics.median(rates[names[0]])
    print(f"\n# the paper's other bases: {n:,} examples per epoch, median of {epochs} epochs each, in turn")
    print(f"{'system':<10}{'examples/s':>12}{'epoch s':>9}{'epoch vs ' + names[0]:>17}{'state MB':>10}{'vs ' + names[0]:>8}")
    base_bytes = state_bytes(trainers[names[0]])
    for name, trainer in trainers.items():
        rate, held = statistics.median(rates[name]), state_bytes(trainer)
        print(f"{name:<10}{rate:>12,.0f}{n / rate:>9.2f}{base / rate:>17.2f}{held / 1e6:>10.1f}{held / base_bytes:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conf", default="conf/ml100k.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per trainer, alternating (0: skip)")
    ap.add_argument("--passes", type=int, default=15, help="reader passes per method, median reported (0: skip)")
    ap.add_argument("--processes", default="", help="e.g. 1,2: also train with that many data-parallel ranks")
    ap.add_argument("--ddp-epochs", type=int, default=3, help="fixed epochs per trainer and number of processes")
    ap.add_argument("--systems", default="", help="e.g. base,rfm,ufnrec: the epoch and the state each system "
                    "trains with, against the first")
    args = ap.parse_args()
    cfg = load_config(args.conf, args.overrides)
    ctx = RunContext.start(cfg, "bench-training")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("ingest", "split", "prepare", "train_base", "export", "retrieve", "augment"):
        run_stage(ctx, BY_NAME[name])
    ctx.write("bench", "divspa_examples", divspa_examples(ctx, BASE_VERSION), partition={"teacher": BASE_VERSION})
    torch.set_num_threads(cfg.train.num_threads or torch.get_num_threads())

    if args.epochs:
        base = Trainer(cfg, build_bundle(ctx, "bench-base"), ctx.warehouse.dataset("train_examples"), ctx.run_id)
        student = DivspaTrainer(cfg, build_bundle(ctx, "bench-divspa"), ctx.warehouse.dataset("divspa_examples"),
                                ctx.run_id, where={"teacher": BASE_VERSION})
        # Epochs alternate between the trainers and the median is kept: this machine's speed drifts.
        base_rates, div_rates = [], []
        for _ in range(args.epochs):
            rate, n = epoch_rate(base)
            base_rates.append(rate)
            div_rates.append(epoch_rate(student)[0])
        base_rate, div_rate = statistics.median(base_rates), statistics.median(div_rates)
        ratios = sorted(b / d for b, d in zip(base_rates, div_rates, strict=True))
        aug_rows = ctx.read("divspa_examples").selectExpr("avg(size(aug_items))").first()[0]
        print(f"# {args.conf}: {n:,} training examples per epoch, batch {cfg.train.batch_size}, "
              f"{cfg.train.num_negatives} shared negatives, {torch.get_num_threads()} torch threads; "
              f"DivSPA: {aug_rows:.2f} augmented positives per example ({', '.join(cfg.augment.strategies)}, m={cfg.augment.m})")
        print(f"{'trainer (median of epochs)':<34}{'examples/s':>12}{'epoch s':>10}")
        print(f"{'base (Eq. 1)':<34}{base_rate:>12,.0f}{n / base_rate:>10.1f}")
        print(f"{'DivSPA (Eq. 3, output mix-up)':<34}{div_rate:>12,.0f}{n / div_rate:>10.1f}")
        print(f"DivSPA epoch / base epoch: {statistics.median(ratios):.2f} median of {args.epochs} paired epochs "
              f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}; goal <= 1.5)")

    if args.passes:
        # Reader vs raw pyarrow over the same files of train_examples.
        path = ctx.warehouse.path("train_examples")
        cols = ["user_id", "item_id", "history", "user_features"]
        # The readers are built (Delta log read, version pinned) outside the clock: the figure is the
        # read itself. Passes are interleaved and the median kept, as one pass takes only tens of ms.
        arrow = DeltaIterableDataset(path, columns=cols, filters={"run_id": ctx.run_id}, batch_size=1024, as_arrow=True)
        tensors = DeltaIterableDataset(path, columns=cols, filters={"run_id": ctx.run_id}, batch_size=1024)
        files = tensors.snapshot.files
        makers = {
            "raw pyarrow (to_batches)": lambda: pads.dataset(files, format="parquet").to_batches(columns=cols,
                                                                                                batch_size=1024),
            "divspa reader (Arrow batches)": lambda: iter(arrow),
            "divspa reader (tensors)": lambda: iter(tensors),
        }
        rates: dict[str, list[float]] = {label: [] for label in makers}
        for _ in range(args.passes):
            for label, make in makers.items():
                start = time.perf_counter()
                rows = sum(len(b["user_id"]) if isinstance(b, dict) else b.num_rows for b in make())
                rates[label].append(rows / (time.perf_counter() - start))
        results = {label: statistics.median(r) for label, r in rates.items()}
        raw = results["raw pyarrow (to_batches)"]
        print(f"\n{'reader (median of ' + str(args.passes) + ' passes)':<34}{'rows/s':>12}{'vs raw':>10}")
        for label, rate in results.items():
            print(f"{label:<34}{rate:>12,.0f}{rate / raw:>10.2f}")
    if args.systems:
        systems(ctx, cfg, args.systems.split(","), max(args.epochs, 1))
    if args.processes:
        data_parallel(ctx, cfg, [int(p) for p in args.processes.split(",")], args.ddp_epochs)


def data_parallel(ctx: RunContext, cfg: Config, processes: list[int], epochs: int) -> None:
    """Epoch time of base and DivSPA training with N data-parallel ranks (TorchDistributor, gloo)."""
    cores = os.cpu_count() or 1
    out = Path(cfg.output_dir) / "bench-ddp"
    tables = {"base": ("train_examples", None), "divspa": ("divspa_examples", {"teacher": BASE_VERSION})}
    print(f"\n# data-parallel training: {epochs} fixed epochs per row, batch {cfg.train.batch_size} per step "
          f"(split across ranks), {cores} cores")
    print(f"{'trainer':<8}{'processes':>10}{'threads/rank':>13}{'examples/s':>12}{'epoch s':>9}"
          f"{'speed-up':>9}{'call s':>8}")
    for kind, (table, where) in tables.items():
        first = None
        # One process with all cores, then (for comparison with one rank's work) with 1 thread.
        runs = [(n, max(1, cores // n)) for n in processes]
        if 1 in processes and cores > 1:
            runs.insert(processes.index(1) + 1, (1, 1))
        for n, threads in runs:
            run_cfg = copy.deepcopy(cfg)
            run_cfg.train.processes = n
            run_cfg.train.num_threads = threads
            job = TrainJob(run_cfg, kind, ctx.warehouse.snapshot(table), ctx.run_id, where=where, epochs=epochs,
                           checkpoint=str(out / f"{kind}-{n}x{threads}.pt"))
            start = time.perf_counter()
            report = train(job, build_bundle(ctx, f"bench-ddp-{kind}-{n}x{threads}"))
            call = time.perf_counter() - start
            epoch = statistics.median(report.epoch_s)
            rate = report.epoch_examples[0] / epoch
            first = first or epoch
            print(f"{kind:<8}{n:>10}{run_cfg.train.num_threads:>13}{rate:>12,.0f}{epoch:>9.2f}"
                  f"{first / epoch:>9.2f}{call:>8.1f}")


if __name__ == "__main__":
    main()
