"""One local[2] SparkSession for the whole suite (starting one costs about 7 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from divspa.config import Config, SparkConfig, load_config
from divspa.delta import Warehouse
from divspa.spark import get_spark

REPO = Path(__file__).resolve().parents[1]
ML100K = Path(os.environ.get("DIVSPA_ML100K", REPO.parent / "shared" / "data" / "ml-100k"))


@pytest.fixture(scope="session")
def spark():
    session = get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(params=["native", "embedded"])
def warehouse(request, spark, tmp_path) -> Warehouse:
    """A warehouse in each Delta mode: delta-spark commits (native) or delta-rs commits (embedded)."""
    return Warehouse(spark, str(tmp_path / "warehouse"), native=request.param == "native")


@pytest.fixture
def small_config(tmp_path) -> Config:
    """A tiny synthetic run writing under tmp_path."""
    return load_config(REPO / "conf" / "default.yaml", [
        f"run.output_dir={tmp_path / 'out'}", "run.run_id=t1", "spark.master=local[2]",
        "synthetic.num_users=300", "synthetic.num_items=120", "synthetic.mean_clicks_per_user=12",
        "synthetic.partitions=3", "spark.shuffle_partitions=4",
    ])


@pytest.fixture
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not available at {ML100K}")
    return ML100K


SMALL_PIPELINE = ["synthetic.num_users=400", "synthetic.num_items=150", "synthetic.mean_clicks_per_user=15",
                  "synthetic.partitions=2", "spark.master=local[2]", "spark.shuffle_partitions=4", "train.epochs=2",
                  "train.num_negatives=50", "train.batch_size=128", "model.history_len=5", "eval.ks=[10,20]",
                  "retrieve.k=20", "retrieve.k_users=5", "augment.k=10"]


@pytest.fixture(scope="session")
def trained(spark, tmp_path_factory):
    """A small synthetic run taken through train_base (the teacher), shared by the suite."""
    from divspa.pipeline import BY_NAME, run_stage
    from divspa.runtime import RunContext

    out = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(REPO / "conf" / "default.yaml", [f"run.output_dir={out}", "run.run_id=b1", *SMALL_PIPELINE])
    ctx = RunContext.start(cfg, "test", spark=spark)
    for name in ("ingest", "split", "prepare", "train_base", "export"):
        run_stage(ctx, BY_NAME[name])
    return ctx


def rerun(ctx, name: str) -> dict | None:
    """Run a stage again even though this run already committed it."""
    from divspa.pipeline import BY_NAME, run_stage

    ctx.force = True
    try:
        return run_stage(ctx, BY_NAME[name])
    finally:
        ctx.force = False
