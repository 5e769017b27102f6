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


@pytest.fixture
def warehouse(spark, tmp_path) -> Warehouse:
    return Warehouse(spark, str(tmp_path / "warehouse"))


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
