"""Running divspa as a scheduled job: quality gates and publishing, retention, concurrent runs.

Runs here are real Delta tables written through the Delta layer by real Spark; their figures are
written as the evaluate stage writes them (metrics rows), so each gate can be made to pass or fail
on purpose without training a model per case. The concurrency test starts real processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from divspa import runs
from divspa.cli import main
from divspa.config import PublishConfig, load_config
from divspa.pipeline import BY_NAME, run_stage
from divspa.reader import DeltaIterableDataset
from divspa.runtime import RunContext
from divspa.schemas import load_schema
from tests.browser import assert_page_fits, find_browser
from tests.conftest import REPO, require_native

# --- gates, pure ---------------------------------------------------------------------------------


def _figures(pop: float, base: float, student: float, distinct: tuple[float, float] = (400, 380),
             tail: tuple[float, float] = (0.30, 0.28), ndcg: tuple[float, float] = (0.10, 0.10)) -> runs.Figures:
    return {"hr": {"popularity": pop, "base": base, "divspa": student},
            "ndcg": {"popularity": 0.05, "base": ndcg[0], "divspa": ndcg[1]},
            "distinct_items": {"popularity": 50, "base": distinct[0], "divspa": distinct[1]},
            "long_tail_share": {"popularity": 0.0, "base": tail[0], "divspa": tail[1]},
            "distinct_share": {"popularity": 0.001, "base": 0.008, "divspa": 0.0076}}


def test_gates_pass_fail_and_missing_figures():
    cfg = PublishConfig()
    good = _figures(0.20, 0.30, 0.29)
    gates = runs.check_gates(cfg, good, 1000, {"run_id": "d1", "augmented_rows": 900})
    assert [g.name for g in gates] == ["base_vs_popularity", "divspa_vs_base", "ndcg_vs_base", "distinct_vs_base",
                                       "long_tail_vs_base", "augmented_rows"]
    assert runs.outcome(gates) == (runs.PUBLISHED, None)

    worse_than_popularity = runs.check_gates(cfg, _figures(0.20, 0.19, 0.29), 1000, None)
    outcome, reason = runs.outcome(worse_than_popularity)
    assert outcome == runs.GATED and "base hr@50 0.1900 is 0.9500x popularity" in reason

    assert runs.outcome(runs.check_gates(cfg, _figures(0.20, 0.30, 0.28), 1000, None))[0] == runs.GATED  # 0.933x
    assert runs.outcome(runs.check_gates(cfg, _figures(0.20, 0.30, 0.286), 1000, None))[0] == runs.PUBLISHED
    halved = runs.outcome(runs.check_gates(cfg, good, 400, {"run_id": "d1", "augmented_rows": 1000}))
    assert halved[0] == runs.GATED and "0.40x run d1's 1,000" in halved[1]
    # No student evaluated: not published by accident.
    assert "missing" in runs.outcome(runs.check_gates(cfg, _figures(0.20, 0.30, None), 1000, None))[1]
    # Every gate off: published whatever the figures.
    off = PublishConfig(min_base_vs_popularity=None, max_divspa_drop=None, max_ndcg_drop=None,
                        max_diversity_drop=None, augmented_rows_range=None)
    assert runs.check_gates(off, {}, None, None) == []


def test_a_student_that_narrows_or_sinks_its_hits_is_gated():
    """Ciao's run of 2026-12-07: HR@50 -2.8 %, NDCG@50 -9.2 %, distinct@100 10,595 -> 2,489."""
    cfg = PublishConfig()
    narrower = runs.check_gates(cfg, _figures(0.0759, 0.0787, 0.0765, distinct=(10595, 2489)), 1000, None)
    outcome, reason = runs.outcome(narrower)
    assert outcome == runs.GATED and [g.name for g in narrower if not g.passed] == ["distinct_vs_base"]
    assert "DivSPA distinct items in the top-50 lists 2,489 is 0.2349x base's 10,595 (gate: >= 0.8 x base)" in reason
    assert "the base's top-50 lists fill 0.80% of their slots with distinct items" in reason
    fewer_tail = runs.check_gates(cfg, _figures(0.2, 0.3, 0.3, tail=(0.30, 0.20)), 1000, None)
    assert [g.name for g in fewer_tail if not g.passed] == ["long_tail_vs_base"]
    sunk = runs.check_gates(cfg, _figures(0.2, 0.3, 0.3, ndcg=(0.10, 0.0908)), 1000, None)
    assert [g.name for g in sunk if not g.passed] == ["ndcg_vs_base"] and "NDCG@50 0.0908" in runs.outcome(sunk)[1]
    # A 13 % narrower student (sparse ML-100K's) passes; a base with no long-tail item cannot be undercut.
    assert runs.outcome(runs.check_gates(cfg, _figures(0.2, 0.3, 0.3, distinct=(708, 617), tail=(0.0, 0.0)),
                                         1000, None))[0] == runs.PUBLISHED
    # ndcg as the headline metric: its gate is divspa_vs_base, not a second one.
    as_ndcg = runs.check_gates(PublishConfig(metric="ndcg"), _figures(0.2, 0.3, 0.3), 1000, None)
    assert "ndcg_vs_base" not in [g.name for g in as_ndcg]


# --- publishing, on real tables -----------------------------------------------------------------


def _context(spark, out, run_id: str, *overrides: str) -> RunContext:
    cfg = load_config(REPO / "conf" / "default.yaml", [f"run.output_dir={out}", f"run.run_id={run_id}",
                                                        "eval.ks=[10,50]", *overrides])
    return RunContext.start(cfg, "test", spark=spark)


def _fake_run(ctx: RunContext, base: float, student: float, popularity: float = 0.2, augmented: int = 6,
              narrow: float = 1.0) -> None:
    """What evaluate and augment leave behind: metrics rows and augmented positives."""
    models = (("popularity", popularity, 50), ("base", base, 400), ("divspa-1", student, 400 * narrow))
    ctx.write_metrics("evaluate", [row for m, v, distinct in models for row in (
        (m, "hr", 50, v), (m, "ndcg", 50, v / 3), (m, "distinct_items", 50, distinct),
        (m, "long_tail_share", 50, 0.3 if m != "popularity" else 0.0), (m, "distinct_share", 50, distinct / 5e4))])
    rows = [(1, 2, "i2i", 100 + n, n + 1, 0.5, 0.5, "importance", "base", ctx.run_id) for n in range(augmented)]
    ctx.write("augment", "augmented_positives", ctx.spark.createDataFrame(rows, load_schema("augmented_positives").spark))


def _publish(spark, tmp_path, run_id: str, **figures) -> int:
    ctx = _context(spark, tmp_path, run_id)
    _fake_run(ctx, **figures)
    ctx.close()
    return main(["publish", "--conf", "conf/default.yaml", "--run-id", run_id, "--set", f"run.output_dir={tmp_path}",
                 "--set", "eval.ks=[10,50]"])


def test_gated_runs_are_recorded_but_trainers_read_the_latest_published(spark, tmp_path, capsys):
    assert _publish(spark, tmp_path, "d1", base=0.30, student=0.30) == 0
    assert _publish(spark, tmp_path, "d2", base=0.15, student=0.15) == 3  # teacher below popularity
    err = capsys.readouterr().err
    assert "divspa: run d2 is not published: base hr@50 0.1500 is 0.7500x popularity's 0.2000" in err
    assert _publish(spark, tmp_path, "d3", base=0.30, student=0.30, augmented=30) == 3  # 5x yesterday's rows
    assert "augmented rows 30 are 5.00x run d1's 6" in capsys.readouterr().err
    assert _publish(spark, tmp_path, "d5", base=0.30, student=0.30, narrow=0.5) == 3  # half the distinct items
    assert "DivSPA distinct items in the top-50 lists 200 is 0.5000x base's 400" in capsys.readouterr().err

    common = ["--conf", "conf/default.yaml", "--set", f"run.output_dir={tmp_path}"]
    assert main(["runs", *common]) == 0
    listing = capsys.readouterr().out
    assert "d1 *" in listing and "published" in listing and listing.count("gated") == 3

    uri = str(tmp_path / "warehouse" / "augmented_positives")
    latest = DeltaIterableDataset(uri, columns=["aug_item_id", "run_id"], run="latest", as_arrow=True)
    rows = [r for t in latest for r in t.to_pylist()]
    assert latest.run_id == "d1" and len(rows) == 6 and {r["run_id"] for r in rows} == {"d1"}
    pinned = DeltaIterableDataset(uri, columns=["run_id"], run="d3", as_arrow=True)
    assert sum(t.num_rows for t in pinned) == 30  # a gated run stays readable by its id
    with pytest.raises(ValueError, match="not both"):
        DeltaIterableDataset(uri, run="latest", filters={"run_id": "d3"})

    assert main(["sql", "SELECT run_id, count(*) AS n FROM augmented_positives GROUP BY 1", "--run", "latest",
                 *common]) == 0
    out = capsys.readouterr().out
    assert "d1" in out and "d3" not in out and "(1 rows)" in out

    # The report says the verdict first.
    page = (tmp_path / "runs" / "d2" / "report.html").read_text()
    assert page.index("GATED") < page.index("Accuracy") and "base_vs_popularity" in page
    page = (tmp_path / "runs" / "d5" / "report.html").read_text()
    assert "distinct_vs_base" in page  # which gate
    # Run over run: the runs before it, in the order recorded, each with its outcome.
    trend = page[page.index("Run over run"):]
    assert all(f"<td>{n}</td><td>{run}</td><td>{outcome}</td>" in trend for n, run, outcome in (
        (1, "d1", "published"), (2, "d2", "gated"), (3, "d3", "gated"), (4, "d5 (this run)", "gated")))
    assert "<td>0.3</td><td>0.1</td><td>200</td><td>6</td>" in trend  # d5: HR, NDCG, distinct, rows
    # A page is a view of the tables: `divspa report` draws it again, gated or not.
    (tmp_path / "runs" / "d2" / "report.html").unlink()
    assert main(["report", "d2", *common]) == 0
    assert "base_vs_popularity" in (tmp_path / "runs" / "d2" / "report.html").read_text()

    # Re-publishing an unchanged run writes nothing; a good run later becomes the latest.
    version = _runs_version(tmp_path)
    assert main(["publish", *common, "--run-id", "d1", "--set", "eval.ks=[10,50]"]) == 0
    assert _runs_version(tmp_path) == version
    assert _publish(spark, tmp_path, "d4", base=0.31, student=0.30, augmented=7) == 0
    assert DeltaIterableDataset(uri, run="latest").run_id == "d4"


@pytest.mark.parametrize("mode", ["native", "embedded"])
def test_a_runs_table_from_before_new_columns_is_extended_not_refused(spark, tmp_path, capsys, monkeypatch, mode):
    """A warehouse recorded by an older divspa: its runs table lacks the columns added since
    (the base's concentration, the tuned settings); the next publish adds them, old rows read null,
    whichever engine commits."""
    if mode == "native":
        require_native()
    monkeypatch.setenv("DIVSPA__SPARK__DELTA", mode)
    import datetime as dt

    import pyarrow as pa
    from deltalake import write_deltalake

    from divspa.delta import Warehouse

    schema = load_schema("runs").arrow
    old = pa.schema([schema.field(n) for n in schema.names if n not in ("base_distinct_share", "base_gini", "tuned")])
    row = {n: None for n in old.names} | {"outcome": "published", "stages": "ingest", "config_hash": "x",
                                          "divspa_version": "0.0", "run_id": "old",
                                          "recorded_at": dt.datetime(2026, 11, 1, tzinfo=dt.UTC)}
    write_deltalake(str(tmp_path / "warehouse" / "runs"), pa.Table.from_pylist([row], old), partition_by=["run_id"])
    assert _publish(spark, tmp_path, "new", base=0.30, student=0.30) == 0
    recorded = {r["run_id"]: r for r in runs.records(Warehouse(None, str(tmp_path / "warehouse")))}
    assert recorded["old"]["base_distinct_share"] is None and recorded["old"]["outcome"] == "published"
    assert recorded["new"]["base_distinct_share"] == pytest.approx(400 / 5e4) and recorded["new"]["tuned"] is None
    capsys.readouterr()
    assert main(["runs", "--conf", "conf/default.yaml", "--set", f"run.output_dir={tmp_path}"]) == 0
    assert "0.80%" in capsys.readouterr().out


def test_report_in_a_browser(spark, tmp_path):
    """The page at 1,300 px in Chromium: no sideways scroll, charts drawn, no overlapping text,
    no count below zero; with a trend over three runs (the full pipeline's page is measured in
    test_cli when a browser is there)."""
    if not find_browser():
        message = "no Chromium on PATH: `apt-get install chromium` (.ci/run installs it)"
        if os.environ.get("DIVSPA_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    for run_id, figures in (("b1", {"base": 0.30, "student": 0.31}), ("b2", {"base": 0.15, "student": 0.15}),
                            ("b3", {"base": 0.30, "student": 0.29, "narrow": 0.9})):
        _publish(spark, tmp_path, run_id, **figures)
    measured = assert_page_fits(tmp_path / "runs" / "b3" / "report.html", tmp_path, min_charts=4)
    assert any("runs of this warehouse" in c["title"] for c in measured["charts"])


def _runs_version(out) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(out / "warehouse" / "runs")).version()


def test_latest_without_any_published_run_is_a_clear_error(spark, tmp_path):
    from divspa.errors import NoPublishedRun

    ctx = _context(spark, tmp_path, "x1")
    _fake_run(ctx, base=0.1, student=0.1)
    run_stage(ctx, BY_NAME["publish"])
    ctx.close()
    with pytest.raises(NoPublishedRun, match="no published run"):
        DeltaIterableDataset(str(tmp_path / "warehouse" / "augmented_positives"), run="latest")


def test_a_failed_stage_is_recorded_as_failed(spark, tmp_path, capsys):
    ctx = _context(spark, tmp_path, "f1")
    _fake_run(ctx, base=0.3, student=0.3)
    ctx.close()
    # evaluate needs the base model's checkpoint, which this run never trained.
    assert main(["evaluate", "--conf", "conf/default.yaml", "--run-id", "f1", "--set", f"run.output_dir={tmp_path}",
                 "--set", "eval.ks=[10,50]", "--force"]) == 1
    assert "stage evaluate failed" in capsys.readouterr().err
    from divspa.delta import Warehouse

    rec = runs.record(Warehouse(None, str(tmp_path / "warehouse")), "f1")
    assert rec["outcome"] == "failed" and "stage evaluate failed" in rec["reason"]
    assert not (tmp_path / "runs" / "f1" / "_lock.json").exists()  # the lock went with the process's work


# --- retention -----------------------------------------------------------------------------------


def test_gc_keeps_the_newest_runs_and_the_latest_published(spark, tmp_path, capsys):
    keep = 2
    ids = [f"day{i}" for i in range(1, keep + 4)]  # N + 3 daily runs
    for i, run_id in enumerate(ids):
        ctx = _context(spark, tmp_path, run_id)
        _fake_run(ctx, base=0.3 if i == 0 else 0.1, student=0.3 if i == 0 else 0.1, augmented=4 + i)
        run_stage(ctx, BY_NAME["publish"])  # only day1 passes the gates
        (tmp_path / "models" / run_id).mkdir(parents=True, exist_ok=True)
        ctx.close()
        time.sleep(0.05)  # distinct file times: "newest" is by when a run's files were written
    from divspa.delta import Warehouse

    wh = Warehouse(spark, str(tmp_path / "warehouse"))
    before = {t: wh.version(t) for t in ("augmented_positives", "metrics")}
    kept_rows = {r: wh.row_count("augmented_positives", where={"run_id": r}) for r in ("day1", "day4", "day5")}

    common = ["--conf", "conf/default.yaml", "--set", f"run.output_dir={tmp_path}", "--set", "eval.ks=[10,50]"]
    assert main(["gc", "--keep", str(keep), "--dry-run", *common]) == 0
    assert "would drop 2 runs: day3, day2" in capsys.readouterr().out
    assert wh.version("augmented_positives") == before["augmented_positives"]  # a dry run changes nothing

    assert main(["gc", "--keep", str(keep), *common]) == 0
    assert "kept 3 runs: day5, day4, day1" in capsys.readouterr().out  # day1: the latest published
    for table in ("augmented_positives", "metrics"):
        assert set(wh.runs_on_disk(table)) == {"day1", "day4", "day5"}
    # Nothing of a kept run is lost; the dropped ones are still there by time travel (within retention).
    assert {r: wh.row_count("augmented_positives", where={"run_id": r}) for r in kept_rows} == kept_rows
    old = wh.read("augmented_positives", version=before["augmented_positives"])
    assert old.where("run_id = 'day2'").count() == 5
    assert not (tmp_path / "runs" / "day2").exists() and not (tmp_path / "models" / "day3").exists()
    assert (tmp_path / "models" / "day4").exists()
    # The runs table keeps every run's record (the history), and a checkpoint was written.
    assert {r["run_id"] for r in runs.records(wh)} == set(ids)
    assert list((tmp_path / "warehouse" / "augmented_positives" / "_delta_log").glob("*.checkpoint.parquet"))

    # A newer good run: now exactly N remain, and compaction (OPTIMIZE) loses no row.
    assert _publish(spark, tmp_path, "day6", base=0.3, student=0.3, augmented=5) == 0
    kept_rows = {r: wh.row_count("augmented_positives", where={"run_id": r}) for r in ("day5", "day6")}
    assert main(["gc", "--keep", str(keep), "--set", "run.compact=true", *common]) == 0
    assert set(wh.runs_on_disk("augmented_positives")) == {"day5", "day6"}
    assert {r: wh.row_count("augmented_positives", where={"run_id": r}) for r in kept_rows} == kept_rows
    assert wh.read("augmented_positives").count() == sum(kept_rows.values())

    # No run.keep_runs and no --keep: a clear error, nothing touched.
    assert main(["gc", *common]) == 2
    assert "pass --keep N" in capsys.readouterr().err


# --- concurrency, real processes -----------------------------------------------------------------


def test_concurrent_runs_on_one_warehouse(tmp_path):
    """Two run ids at once both land whole; a second process on the same run id refuses (exit 4)."""
    tiny = ["synthetic.num_users=200", "synthetic.num_items=80", "synthetic.mean_clicks_per_user=8",
            "synthetic.partitions=2", "spark.master=local[1]", "spark.shuffle_partitions=2", "spark.driver_memory=1g"]

    def start(run_id: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "divspa", "run", "--conf", "conf/default.yaml", "--run-id", run_id,
               "--stages", "ingest,split", "--set", f"run.output_dir={tmp_path}"]
        for s in tiny:
            cmd += ["--set", s]
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})

    procs = {"a": start("c1"), "b": start("c2"), "c": start("c1")}
    done = {k: (p.wait(timeout=600), p.communicate()[1]) for k, p in procs.items()}
    assert done["b"][0] == 0, done["b"][1][-2000:]
    same = sorted([done["a"], done["c"]], key=lambda d: d[0])
    assert same[0][0] == 0, same[0][1][-2000:]
    assert same[1][0] == 4 and "run c1 is already in progress" in same[1][1], same[1][1][-2000:]

    from divspa.delta import Warehouse

    wh = Warehouse(None, str(tmp_path / "warehouse"))
    for table in ("clicks", "clicks_quarantine", "user_features", "item_features", "split_clicks"):
        counts = {r: wh.row_count(table, where={"run_id": r}) for r in ("c1", "c2")}
        assert counts["c1"] == counts["c2"] > 0, (table, counts)  # same seed and source: identical runs
    assert not list((tmp_path / "runs").glob("*/_lock.json"))
