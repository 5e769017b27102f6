"""Issue 20: data-parallel training through Spark's TorchDistributor (2 ranks, gloo, this machine)."""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch

from divspa.models.distributed import TrainingError, TrainJob, train, trainer_for
from divspa.models.evaluate import model_scorer
from divspa.stages.evaluate import evaluate_scorer
from divspa.stages.train_base import build_bundle

EPOCHS = 4


def job(ctx, processes: int, path: Path, epochs: int | None = EPOCHS) -> TrainJob:
    cfg = copy.deepcopy(ctx.cfg)
    cfg.train.processes = processes
    cfg.train.num_threads = 1  # two ranks on two cores
    return TrainJob(cfg, "base", ctx.warehouse.snapshot("train_examples"), ctx.run_id, where=None, epochs=epochs,
                    checkpoint=str(path))


def keys(tables) -> Counter:
    out: Counter = Counter()
    for t in tables:
        out.update(zip(t.column("user_id").to_pylist(), t.column("item_id").to_pylist(),
                       map(tuple, t.column("history").to_pylist()), strict=True))
    return out


def test_ranks_share_the_examples_exactly(trained):
    """Two ranks' batches of an epoch are the one-process epoch's rows, each exactly once."""
    ctx = trained
    dataset = ctx.warehouse.dataset("train_examples")
    whole = trainer_for("base")(ctx.cfg, build_bundle(ctx, "t"), dataset, ctx.run_id)
    ranks = [trainer_for("base")(ctx.cfg, build_bundle(ctx, "t"), dataset, ctx.run_id, shard=(r, 2)) for r in (0, 1)]
    for epoch in (1, 2):
        shares = [keys(t.batches(epoch)) for t in ranks]
        assert all(shares)  # both ranks have work on this table
        assert shares[0] + shares[1] == keys(whole.batches(epoch))
        assert sum(shares[0].values()) + sum(shares[1].values()) == whole.train_rows


@pytest.fixture(scope="module")
def two_ranks(trained, tmp_path_factory):
    """The same initial model trained with 1 process and (twice) with 2."""
    ctx = trained
    out = tmp_path_factory.mktemp("ddp")
    models, reports = {}, {}
    for name, processes in (("one", 1), ("two", 2), ("two_again", 2)):
        bundle = build_bundle(ctx, f"ddp-{name}")
        reports[name] = train(job(ctx, processes, out / f"{name}.pt"), bundle)
        models[name] = bundle
    return ctx, models, reports, out


def test_two_processes_see_every_example_once_per_epoch_and_learn(two_ranks):
    ctx, models, reports, _ = two_ranks
    rows = ctx.warehouse.dataset("train_examples").count_rows(
        filter=(pc.field("run_id") == ctx.run_id) & (pc.field("is_val") == False))  # noqa: E712
    two = reports["two"]
    assert two.epochs_run == EPOCHS and two.epoch_examples == [rows] * EPOCHS
    assert two.train_loss[-1] < two.train_loss[0]
    assert models["two"].meta["processes"] == 2 and models["one"].meta["processes"] == 1


def test_two_processes_are_as_accurate_as_one(two_ranks):
    """Test HR@20 of the 2-rank model within 0.05 of the 1-process model (same data, same epochs;
    2 ranks take half the optimiser steps of twice the batch), and both well above chance."""
    ctx, models, _, _ = two_ranks
    hr = {name: evaluate_scorer(ctx, model_scorer(models[name]), models[name].vocab).metric("hr", 20)
          for name in ("one", "two")}
    chance = 20 / models["one"].vocab.num_items
    assert hr["two"] == pytest.approx(hr["one"], abs=0.05)
    assert min(hr.values()) > 2 * chance


def test_two_processes_are_reproducible(two_ranks):
    _, models, reports, _ = two_ranks
    a, b = models["two"].model.state_dict(), models["two_again"].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reports["two"].train_loss == reports["two_again"].train_loss
    assert not all(torch.equal(a[k], models["one"].model.state_dict()[k]) for k in a)  # it did train differently


def test_two_processes_reverse_false_negatives(trained, tmp_path):
    """UFNRec under DDP: each rank remembers its own share's rows (a rank's share is the same every
    epoch), and the ranks' moving averages agree, so rank 0's is the one kept."""
    ctx = trained
    two = job(ctx, 2, tmp_path / "ufn.pt")
    two.cfg.train.false_negatives, two.cfg.train.ufn_min_epochs, two.cfg.train.ufn_level_off = True, 2, 1e9
    two.cfg.train.ufn_reverse = 0
    bundle = build_bundle(ctx, "ddp-ufn")
    report = train(two, bundle)
    assert report.reversal_after == 2 and bundle.meta["false_negatives"]["reversal_after"] == 2
    assert all(torch.isfinite(torch.tensor(report.train_loss)))
    hr = evaluate_scorer(ctx, model_scorer(bundle), bundle.vocab).metric("hr", 20)
    assert hr > 2 * 20 / bundle.vocab.num_items


def rank_pids(parent: int) -> list[int]:
    """Processes under `parent` that torchrun started as ranks (LOCAL_RANK in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            if f"DIVSPA_TEST_PARENT={parent}".encode() in env and any(e.startswith(b"LOCAL_RANK=") for e in env):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_rank_that_dies_fails_training_in_one_line_and_writes_nothing(trained, tmp_path, monkeypatch):
    ctx = trained
    path = tmp_path / "killed.pt"
    monkeypatch.setenv("DIVSPA_TEST_PARENT", str(os.getpid()))  # the ranks inherit it: we find them by it
    outcome: dict = {}

    def run() -> None:
        try:
            train(job(ctx, 2, path, epochs=500), build_bundle(ctx, "ddp-killed"))
        except Exception as exc:  # noqa: BLE001 (the test inspects it)
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    pids: list[int] = []
    while time.monotonic() < deadline and len(pids) < 2:
        time.sleep(0.5)
        pids = rank_pids(os.getpid())
    assert len(pids) == 2, "the two ranks did not start"
    time.sleep(3)  # let them get into training
    os.kill(max(pids), 9)
    thread.join(timeout=120)
    assert not thread.is_alive()
    err = outcome.get("error")
    assert isinstance(err, TrainingError)
    assert "\n" not in str(err) and "training with 2 processes failed" in str(err)
    assert not path.exists() and not list(tmp_path.iterdir())
