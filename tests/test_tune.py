"""Stage tune: a real Optuna search training real models on a tiny synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divspa.config import load_config
from divspa.errors import StageError
from divspa.models.checkpoint import load_checkpoint
from divspa.pipeline import BY_NAME, run_stage
from divspa.report import write_report
from divspa.runtime import RunContext
from divspa.stages import tune
from divspa.stages.train_base import BASE_VERSION, checkpoint_path
from divspa.tuning import chosen, configured, distributions, with_params
from tests.conftest import REPO, SMALL_PIPELINE


def test_the_space_and_the_configured_trial():
    cfg = load_config(None)
    dists = distributions(["lr", "negatives", "omega"], num_items=120)
    assert set(dists) == {"train.lr", "train.num_negatives", "train.negative_sampler", "train.popularity_power",
                          "train.in_batch_negatives", "train.logq_correction", "model.omega"}
    assert dists["train.num_negatives"].high == 120  # never more negatives than items
    first = configured(cfg, dists)  # uniform negatives: neither power nor logQ can matter, so neither is set
    assert first == {"train.lr": 1e-3, "train.num_negatives": 200, "train.negative_sampler": "uniform",
                     "train.in_batch_negatives": False, "model.omega": 10.0}
    ssl = distributions(["ssl"], num_items=120)
    assert configured(cfg, ssl) == {"model.ssl": "none"}  # RFM off: its weight and temperature cannot matter
    assert configured(load_config(None, ["model.ssl=rfm"]), ssl) == {
        "model.ssl": "rfm", "model.ssl_weight": 0.1, "model.ssl_temperature": 0.1}
    laid = with_params(cfg, {"train.lr": 0.004, "model.omega": 20.0})
    assert (laid.train.lr, laid.model.omega, cfg.train.lr) == (0.004, 20.0, 1e-3)  # a copy, the original kept


def test_tune_chooses_on_validation_and_train_base_uses_it(spark, tmp_path, caplog, monkeypatch):
    cfg = load_config(REPO / "conf" / "default.yaml", [
        f"run.output_dir={tmp_path}", "run.run_id=tu1", *SMALL_PIPELINE, "tune.trials=3", "tune.max_epochs=2",
        "tune.space=[lr,omega]"])
    ctx = RunContext.start(cfg, "test", spark=spark)
    try:
        for name in ("ingest", "split", "prepare"):
            run_stage(ctx, BY_NAME[name])
        with pytest.raises(StageError, match="run stage tune first"):
            run_stage(ctx, BY_NAME["train_base"])

        real_write = tune._write

        def killed_after_two_trials(ctx, stage, rows, chosen):  # the process dies once trial 2 is on record
            real_write(ctx, stage, rows, chosen)
            if len(rows) == 2:
                raise KeyboardInterrupt("killed")

        monkeypatch.setattr(tune, "_write", killed_after_two_trials)
        with pytest.raises(KeyboardInterrupt):
            run_stage(ctx, BY_NAME["tune"])
        monkeypatch.undo()
        assert chosen(ctx) is None  # a stopped search has chosen nothing: its trials are progress only
        assert ctx.read("tuning").count() == 2
        caplog.set_level("INFO", logger="divspa.stages.tune")
        info = run_stage(ctx, BY_NAME["tune"])  # ... and resumes from its two trials on record
        assert "resuming after 2 trials on record" in caplog.text and "tune: trial 3/3" in caplog.text
        assert info["trials"] == 3

        rows = sorted(ctx.read("tuning").collect(), key=lambda r: r["trial"])
        assert [r["trial"] for r in rows] == [0, 1, 2] and sum(r["chosen"] for r in rows) == 1
        assert json.loads(rows[0]["params"]) == {"train.lr": 1e-3, "model.omega": 10.0}  # trial 0: as configured
        assert all(r["state"] in ("complete", "pruned") and r["seconds"] > 0 and r["val_k"] == 50 for r in rows)
        best = max((r for r in rows if r["state"] == "complete"), key=lambda r: r["val_hr"])
        assert best["chosen"] and chosen(ctx) == json.loads(best["params"])

        run_stage(ctx, BY_NAME["train_base"])
        base = load_checkpoint(checkpoint_path(ctx, BASE_VERSION))
        assert base.meta["tuned"] == json.loads(best["params"])
        assert base.mcfg.omega == pytest.approx(json.loads(best["params"])["model.omega"])
        assert run_stage(ctx, BY_NAME["tune"]) is None  # a finished search is not redone without --force
        page = Path(write_report(ctx.warehouse, ctx.cfg)).read_text()
        assert "Tuning (stage tune)" in page and f"Trial {best['trial']} was chosen" in page
    finally:
        ctx.close()
