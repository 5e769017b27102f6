"""Stage `tune`: Optuna's TPE over the base's training settings, scored on the validation slice.

Off unless `tune.trials > 0`. Each trial trains a fresh base model in this process on
train_examples' fitted rows with early stopping (at most `tune.max_epochs` epochs) and is scored
by its best validation HR@train.val_k, the slice early stopping already watches: the test split
is never read. Trial 0 is the configured settings, so the search can only keep them or find
better on validation. A trial that trails the median of the earlier ones after
`tune.prune_after` epochs stops there.

Every finished trial is written to the `tuning` table at once (under a progress transaction), so
a stopped search resumes with its finished trials told to the sampler; the last write marks the
best trial `chosen` and commits the stage. The search is bounded by `tune.trials` and
`tune.timeout_s`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pyarrow.dataset as pads
import torch

from divspa import tuning
from divspa.errors import TrainingError
from divspa.models.trainer import Trainer
from divspa.runtime import RunContext
from divspa.schemas import load_schema
from divspa.stages.train_base import base_inputs, new_bundle

log = logging.getLogger(__name__)
NAME = "tune"
PROGRESS = "tune.trials"  # the transaction of the per-trial writes: not the stage's done marker


def run(ctx: RunContext) -> dict[str, Any]:
    tcfg = ctx.cfg.tune
    if tcfg.trials == 0:
        log.info("tune.trials = 0: no search; train_base trains with train and model as configured")
        return {"trials": 0}
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is ours, one line a trial
    if ctx.cfg.train.num_threads:
        torch.set_num_threads(ctx.cfg.train.num_threads)
    inputs = base_inputs(ctx)
    dataset = ctx.warehouse.snapshot("train_examples").dataset()
    dists = tuning.distributions(list(tcfg.space), inputs.vocab.num_items)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=ctx.cfg.run.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=tcfg.prune_after - 1))
    rows = [] if ctx.force else _resume(ctx, study, dists)
    if not rows:
        study.enqueue_trial(tuning.configured(ctx.cfg, dists))
    val_k = ctx.cfg.train.val_k
    started = time.monotonic()

    def objective(trial: optuna.Trial) -> float:
        params = tuning.suggest(trial, dists)
        cfg = tuning.with_params(ctx.cfg, params)
        cfg.train.epochs, cfg.train.processes = tcfg.max_epochs, 1
        trainer = Trainer(cfg, new_bundle(inputs, cfg, f"tune-{trial.number}", ctx.run_id), dataset, ctx.run_id)

        def epoch_done(epoch: int, val: float) -> None:
            trial.report(val, epoch)  # the trial's curve: its intermediate values, one an epoch
            if trial.should_prune():
                raise optuna.TrialPruned(f"val HR@{val_k} {val:.4f} after epoch {epoch}")

        trainer.epoch_hook = epoch_done
        report = trainer.fit()
        return report.best_val_hr

    def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rows.append(_row(trial, val_k, ctx.run_id))
        _write(ctx, PROGRESS, rows, None)
        best = _best(rows)
        log.info("tune: trial %d/%d %s: val HR@%d %s in %.0f s (best %s, trial %s) %s", trial.number + 1, tcfg.trials,
                 rows[-1]["state"], val_k, _f(rows[-1]["val_hr"]), rows[-1]["seconds"],
                 _f(best["val_hr"]) if best else "-", best["trial"] if best else "-", rows[-1]["params"])

    remaining = tcfg.trials - len(rows)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=tcfg.timeout_s, callbacks=[finished],
                       catch=(RuntimeError, ValueError))
    best = _best(rows)
    if best is None:
        raise TrainingError(f"tune: none of {len(rows)} trials completed (see the log for each trial's error)")
    _write(ctx, NAME, rows, best["trial"])
    pruned = sum(r["state"] == "pruned" for r in rows)
    log.info("tune: chose trial %d of %d (%d pruned), val HR@%d %.4f vs the configured settings' %s: %s",
             best["trial"], len(rows), pruned, val_k, best["val_hr"], _f(rows[0]["val_hr"]), best["params"])
    return {"trials": len(rows), "pruned": pruned, "chosen": best["trial"], "val_hr": round(best["val_hr"], 4),
            "configured_val_hr": None if rows[0]["val_hr"] is None else round(rows[0]["val_hr"], 4),
            "search_s": round(time.monotonic() - started)}


def _row(trial: Any, val_k: int, run_id: str) -> dict[str, Any]:
    curve = [v for _, v in sorted(trial.intermediate_values.items())]
    state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(trial.state.name, "failed")
    best = max(curve) if curve else None
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else 0.0
    return {"trial": trial.number, "state": state, "val_hr": trial.value if state == "complete" else best,
            "val_k": val_k, "params": json.dumps(trial.params, sort_keys=True),
            "best_epoch": curve.index(best) + 1 if curve else None, "epochs_run": len(curve) or None,
            "seconds": seconds, "chosen": False, "run_id": run_id}


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [r for r in rows if r["state"] == "complete" and r["val_hr"] is not None]
    return max(done, key=lambda r: (r["val_hr"], -r["trial"])) if done else None


def _write(ctx: RunContext, stage: str, rows: list[dict[str, Any]], chosen: int | None) -> None:
    schema = load_schema(tuning.TABLE)
    data = [tuple({**r, "chosen": r["trial"] == chosen}[c] for c in schema.names) for r in rows]
    ctx.write(stage, tuning.TABLE, ctx.spark.createDataFrame(data, schema.spark))


def _resume(ctx: RunContext, study: Any, dists: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's trials written before a stop, told to the study as they ended."""
    import optuna

    if not ctx.warehouse.exists(tuning.TABLE):
        return []
    rows = sorted(ctx.warehouse.snapshot(tuning.TABLE).dataset().to_table(
        filter=pads.field("run_id") == ctx.run_id).to_pylist(), key=lambda r: r["trial"])
    for r in rows:
        params = json.loads(r["params"])
        if set(params) - set(dists):  # written by a search over another space: start afresh
            log.info("tune: the trials on record searched other settings; starting a new search")
            return []
        state = {"complete": optuna.trial.TrialState.COMPLETE,
                 "pruned": optuna.trial.TrialState.PRUNED}.get(r["state"], optuna.trial.TrialState.FAIL)
        complete = state == optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, state=state,
            value=r["val_hr"] if complete else None,
            intermediate_values={} if complete or r["epochs_run"] is None or r["val_hr"] is None
            else {int(r["epochs_run"]): r["val_hr"]}))
    if rows:
        log.info("tune: resuming after %d trials on record", len(rows))
    return [{**r, "chosen": False} for r in rows]


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
