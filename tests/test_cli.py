"""The `divspa` command end to end on a tiny synthetic run (shares the suite's SparkSession)."""

from __future__ import annotations

import subprocess
import sys

from divspa.cli import main
from divspa.delta import Warehouse

TINY = ["synthetic.num_users=300", "synthetic.num_items=120", "synthetic.mean_clicks_per_user=12",
        "synthetic.partitions=2", "spark.master=local[2]", "spark.shuffle_partitions=4"]


def args(tmp_path, *extra: str) -> list[str]:
    out = ["--conf", "conf/default.yaml", "--run-id", "r1", "--set", f"run.output_dir={tmp_path}"]
    for s in TINY:
        out += ["--set", s]
    return out + list(extra)


def versions(spark, tmp_path) -> dict[str, int]:
    wh = Warehouse(spark, str(tmp_path / "warehouse"))
    return {t: wh.version(t) for t in wh.tables()}


def test_run_is_resumable_and_idempotent(spark, tmp_path, capsys):
    assert main(["run", *args(tmp_path)]) == 0
    first = versions(spark, tmp_path)
    assert set(first) == {"clicks", "clicks_quarantine", "user_features", "item_features", "split_clicks"}
    out = capsys.readouterr().out
    assert "ingest" in out and "split" in out

    # Same run id again: every stage is skipped and no table gets a new version.
    assert main(["run", *args(tmp_path)]) == 0
    assert versions(spark, tmp_path) == first
    assert "skipped" in capsys.readouterr().out

    # --force redoes the work, replacing the run's partitions (row counts unchanged).
    wh = Warehouse(spark, str(tmp_path / "warehouse"))
    rows = wh.row_count("clicks")
    assert main(["split", *args(tmp_path, "--force")]) == 0
    assert versions(spark, tmp_path)["split_clicks"] == first["split_clicks"] + 1
    assert wh.row_count("clicks") == rows

    # A resolved config and a log are saved for every command.
    run_dir = tmp_path / "runs" / "r1"
    assert len(list(run_dir.glob("*-run.config.yaml"))) == 2
    assert list(run_dir.glob("*-split.log"))

    assert main(["tables", *args(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "split_clicks" in listing and "clicks_quarantine" in listing
    assert main(["history", "clicks", *args(tmp_path)]) == 0
    assert "divspa.stage" in capsys.readouterr().out


def test_bad_config_exits_2_with_the_key(tmp_path, capsys):
    assert main(["run", *args(tmp_path, "--set", "split.test_fraction=2")]) == 2
    assert "split.test_fraction = 2.0 is out of range" in capsys.readouterr().err
    assert main(["run", *args(tmp_path, "--stages", "ingest,trian")]) == 2
    assert "unknown stage 'trian'" in capsys.readouterr().err


def test_job_entry_point_is_thin_and_works():
    out = subprocess.run([sys.executable, "jobs/ingest.py", "--help"], capture_output=True, text=True, check=True)
    assert "--conf" in out.stdout
