"""The jobs under spark-submit on a real standalone cluster (master + 2 workers on 127.0.0.1).

Retrieve and augment are submitted the way users run them and must write the same tables as a
local-mode run; a worker killed mid-augment costs retries, not results; a driver killed mid-write
leaves every table at its previous version and a re-run completes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from divspa.cluster import StandaloneCluster, free_port, spark_home
from divspa.config import load_config
from divspa.delta import STAGING_DIR, Warehouse
from divspa.jars import find_jars
from tests.conftest import REPO, SMALL_PIPELINE

RUN = "b1"
TABLES = ["neighbours", "augmented_positives"]
SUBMIT_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def package() -> Path:
    """The --py-files zip built by the one packaging command."""
    res = subprocess.run(["bash", str(REPO / "dev.sh"), "package"], capture_output=True, text=True,
                         env=dict(os.environ, DIVSPA_VENV=sys.prefix))
    assert res.returncode == 0, f"./dev.sh package failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    (zip_path,) = (REPO / "dist").glob("divspa-*-py-files.zip")
    return zip_path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = StandaloneCluster(tmp_path_factory.mktemp("cluster"), workers=2, cores_per_worker=1,
                          memory_per_worker="2g", port=free_port(), webui_port=free_port()).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def teacher_snapshot(trained, tmp_path_factory) -> Path:
    """The shared small run's output (tables and checkpoints through export), copied once."""
    dest = tmp_path_factory.mktemp("snapshot") / "out"
    # Without run locks: the drivers spark-submit starts are other processes (divspa.runtime.RunLock).
    shutil.copytree(trained.cfg.run.output_dir, dest, ignore=shutil.ignore_patterns("_lock.json"))
    return dest


def _overrides(out: Path) -> list[str]:
    return [f"run.output_dir={out}", f"run.run_id={RUN}", *SMALL_PIPELINE]


def _tables(out: Path, spark) -> dict[str, pd.DataFrame]:
    wh = Warehouse(spark, str(out / "warehouse"))
    frames = {}
    for name in TABLES:
        df = wh.dataset(name).to_table().to_pandas()
        df = df[df["run_id"] == RUN]
        frames[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return frames


def _versions(out: Path, spark) -> dict[str, int]:
    wh = Warehouse(spark, str(out / "warehouse"))
    return {name: wh.version(name) for name in wh.tables()}


@pytest.fixture(scope="module")
def local_reference(spark, teacher_snapshot, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Retrieve + augment in local mode (this process's local[2] session) from the snapshot."""
    from divspa.pipeline import BY_NAME, run_stage
    from divspa.runtime import RunContext

    out = tmp_path_factory.mktemp("local") / "out"
    shutil.copytree(teacher_snapshot, out)
    ctx = RunContext.start(load_config(REPO / "conf" / "default.yaml", _overrides(out)), "test", spark=spark,
                           force=True)
    for name in ("retrieve", "augment"):
        run_stage(ctx, BY_NAME[name])
    return _tables(out, spark)


@pytest.fixture(scope="module")
def cluster_out(teacher_snapshot, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cluster-run") / "out"
    shutil.copytree(teacher_snapshot, out)
    return out


def submit(cluster: StandaloneCluster, package: Path, job: str, out: Path, log: Path,
           ui_port: int | None = None, extra: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> subprocess.Popen:
    """spark-submit jobs/<job>.py to the cluster, as docs/CLUSTER.md says, logging to `log`."""
    python = sys.executable
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.url,
           "--properties-file", str(REPO / "conf" / "spark-defaults.conf"),
           "--py-files", str(package),
           *(["--jars", ",".join(find_jars())] if find_jars() else []),  # native Delta, as docs/CLUSTER.md says
           "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.pyspark.driver.python={python}",
           "--conf", "spark.executor.memory=1g", "--conf", "spark.executor.memoryOverhead=512m",
           "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
           "--conf", f"spark.ui.port={ui_port or free_port()}", "--conf", "spark.ui.enabled=true",
           str(REPO / "jobs" / f"{job}.py"), "--conf", str(REPO / "conf" / "default.yaml"), "--force",
           *args]
    for item in [*_overrides(out), *extra]:
        cmd += ["--set", item]
    env = dict(os.environ, SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP="127.0.0.1")
    env.pop("PYSPARK_GATEWAY_PORT", None)
    fh = open(log, "wb")  # noqa: SIM115 - closed by the caller's wait
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


def wait_ok(proc: subprocess.Popen, log: Path) -> None:
    rc = proc.wait(timeout=SUBMIT_TIMEOUT_S)
    assert rc == 0, f"spark-submit exited {rc}:\n" + log.read_text()[-6000:]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.load(r)


def _assert_same(actual: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    for name in TABLES:
        assert len(actual[name]) > 0, name
        pd.testing.assert_frame_equal(actual[name], expected[name], check_exact=True, obj=name)


def test_py_files_zip_is_self_contained(package, tmp_path):
    """Executors import divspa (and its table schemas) from the zip alone."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import divspa, divspa.schemas as s; "
            "assert divspa.__file__.startswith(sys.argv[1]), divspa.__file__; "
            "print(len(s.table_names()), s.load_schema('neighbours').spark.simpleString())")
    res = subprocess.run([sys.executable, "-c", code, str(package)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "neighbour_id" in res.stdout


def test_cluster_run_equals_local_run(spark, cluster, package, cluster_out, local_reference, tmp_path):
    log = tmp_path / "pipeline.log"  # one application for both stages, as a scheduled pipeline runs them
    wait_ok(submit(cluster, package, "pipeline", cluster_out, log, args=("--stages", "retrieve,augment")), log)
    text = log.read_text()
    assert f"master={cluster.url}" in text and "stage retrieve: done" in text and "stage augment: done" in text
    assert ("delta native" if find_jars() else "delta embedded") in text
    assert cluster.state()["completedapps"], "the jobs did not run on the standalone master"
    _assert_same(_tables(cluster_out, spark), local_reference)


def test_lost_worker_mid_augment(spark, cluster, package, cluster_out, local_reference, tmp_path):
    log, ui = tmp_path / "augment.log", free_port()
    proc = submit(cluster, package, "augment", cluster_out, log, ui_port=ui)
    victim = killed = None
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        if "stage augment: started" not in log.read_text(errors="replace"):
            continue
        victim = victim or next(iter(cluster.executor_ids(1)), None)
        try:
            (app,) = _get(f"http://127.0.0.1:{ui}/api/v1/applications")
            busy = {e["id"]: e["activeTasks"] for e in _get(f"http://127.0.0.1:{ui}/api/v1/applications/{app['id']}/executors")}
        except (OSError, ValueError):
            continue
        if victim is not None and busy.get(victim, 0) > 0:
            killed = cluster.kill_worker(1)  # the node dies with a task of the augment job running on it
            break
    assert killed is not None, "the augment job ended before a task ran on worker 1:\n" + log.read_text()[-3000:]
    wait_ok(proc, log)
    assert f"Lost executor {victim}" in log.read_text()
    _assert_same(_tables(cluster_out, spark), local_reference)


def test_killed_driver_mid_write_then_rerun(spark, cluster, package, cluster_out, local_reference, tmp_path):
    before_versions, before = _versions(cluster_out, spark), _tables(cluster_out, spark)
    table_dir = cluster_out / "warehouse" / "augmented_positives"
    native = bool(find_jars())
    before_files = _data_files(table_dir)
    log = tmp_path / "killed.log"
    proc = submit(cluster, package, "augment", cluster_out, log)
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        # Spark is writing the table's files: embedded into a staging directory, native (delta-spark)
        # straight into the table's partition directories, before the commit.
        writing = _data_files(table_dir) - before_files if native else any((table_dir / STAGING_DIR).glob("*/_temporary"))
        if writing:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the job finished before its write could be interrupted"
    time.sleep(2)  # executors of the dead driver are being torn down by the master

    assert _versions(cluster_out, spark) == before_versions
    _assert_same(_tables(cluster_out, spark), before)  # nothing of the interrupted write is visible
    if native:  # its files are on disk, but no version of the table references them
        assert _data_files(table_dir) - before_files
    else:  # its files are only in a staging directory
        assert any((table_dir / STAGING_DIR).iterdir())

    rerun_log = tmp_path / "rerun.log"
    wait_ok(submit(cluster, package, "augment", cluster_out, rerun_log), rerun_log)
    assert _versions(cluster_out, spark)["augmented_positives"] == before_versions["augmented_positives"] + 1
    _assert_same(_tables(cluster_out, spark), local_reference)
    if not native:
        assert Warehouse(spark, str(cluster_out / "warehouse")).cleanup("augmented_positives") >= 1
        assert not any((table_dir / STAGING_DIR).iterdir())


def test_training_on_executors(spark, package, teacher_snapshot, tmp_path):
    """train_base under spark-submit with 2 ranks as barrier tasks on the two workers (gloo).

    On a cluster of its own: a barrier stage needs both slots at once, and the module's cluster
    has lost a worker in test_lost_worker_mid_augment."""
    from divspa.models.checkpoint import load_checkpoint

    out = tmp_path / "out"
    shutil.copytree(teacher_snapshot, out)
    log = tmp_path / "train_base.log"
    own = StandaloneCluster(tmp_path / "cluster", workers=2, cores_per_worker=1, memory_per_worker="2g",
                            port=free_port(), webui_port=free_port()).start()
    try:
        wait_ok(submit(own, package, "train_base", out, log,
                       extra=("train.processes=2", "train.distributor=cluster", "train.num_threads=1",
                              "train.epochs=1")), log)
    finally:
        own.stop()
    text = log.read_text()
    assert "with 2 processes on executors" in text and f"master={own.url}" in text
    bundle = load_checkpoint(str(out / "models" / RUN / "base.pt"))
    assert bundle.meta["processes"] == 2 and bundle.meta["best_epoch"] >= 1


def _data_files(table_dir: Path) -> set[Path]:
    return {p for p in table_dir.rglob("*.parquet") if STAGING_DIR not in p.parts and "_delta_log" not in p.parts}


def test_cluster_command_without_a_cluster_says_so(tmp_path, capsys):
    from divspa.cluster import main

    assert main(["stop", "--dir", str(tmp_path)]) == 1
    assert "no cluster state" in capsys.readouterr().err
