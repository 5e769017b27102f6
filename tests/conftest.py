"""One local[2] SparkSession for the whole suite (starting one costs about 7 s)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.request
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
    if request.param == "native":
        require_native()
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
                  "train.num_negatives=50", "train.batch_size=128", "model.history_len=5", "eval.ks=[10,20]", "publish.k=20",
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
    ctx.close()  # copies of this output (cluster tests) are run by other processes, which would see it held
    return ctx


def rerun(ctx, name: str) -> dict | None:
    """Run a stage again even though this run already committed it."""
    from divspa.pipeline import BY_NAME, run_stage

    ctx.force = True
    try:
        return run_stage(ctx, BY_NAME[name])
    finally:
        ctx.force = False


@contextlib.contextmanager
def overridden(obj, **values):
    """`obj`'s attributes set to `values` for the block and restored after it, even when it fails:
    the suite's run (`trained`) is shared, so no test may leave its settings changed."""
    old = {name: getattr(obj, name) for name in values}
    for name, value in values.items():
        setattr(obj, name, value)
    try:
        yield obj
    finally:
        for name, value in old.items():
            setattr(obj, name, value)


def require_native() -> None:
    """Skip a native-Delta test on a machine without the jars; fail it under CI (DIVSPA_REQUIRE_NATIVE=1)."""
    from divspa.jars import find_jars

    if not find_jars():
        if os.environ.get("DIVSPA_REQUIRE_NATIVE") == "1":
            pytest.fail("delta-spark jars are missing (./dev.sh setup fetches them with Maven)")
        pytest.skip("no delta-spark jars on this machine (./dev.sh setup fetches them with Maven)")


@dataclasses.dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str = "divspa-test-key"
    secret_key: str = "divspa-test-secret"

    def spark_conf(self) -> dict[str, str]:
        """The settings a user puts in spark.conf for an S3-compatible store."""
        return {"spark.hadoop.fs.s3a.endpoint": self.endpoint, "spark.hadoop.fs.s3a.access.key": self.access_key,
                "spark.hadoop.fs.s3a.secret.key": self.secret_key, "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": "false"}

    def overrides(self) -> list[str]:
        return [f"spark.conf.{k}={v}" for k, v in self.spark_conf().items()]

    def keys(self, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                              aws_secret_access_key=self.secret_key, region_name="us-east-1")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def start_moto(**env: str) -> tuple[subprocess.Popen, str]:
    """moto's S3 API server as its own process on a free 127.0.0.1 port (in this process it would
    wait on the GIL that delta-rs holds while it calls the server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start on {endpoint}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3() -> S3Server:
    """A real S3 API server (moto) on 127.0.0.1 with an empty bucket."""
    import boto3

    proc, endpoint = start_moto()
    server = S3Server(endpoint=endpoint, bucket="divspa-test")
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key, region_name="us-east-1").create_bucket(Bucket=server.bucket)
    yield server
    proc.terminate()
    proc.wait(timeout=10)


def assert_export_matches(ctx, version: str) -> None:
    """The user and item vectors Spark exported for `version` are the checkpoint's own (<= 1e-5)."""
    import numpy as np
    import pyarrow.compute as pc
    import torch

    from divspa.models.checkpoint import load_checkpoint
    from divspa.models.trainer import user_vectors_for
    from divspa.stages.train_base import checkpoint_path

    bundle = load_checkpoint(checkpoint_path(ctx, version))
    hist = ctx.warehouse.dataset("user_histories").to_table(filter=pc.field("run_id") == ctx.run_id)
    expected = dict(zip(hist.column("user_id").to_pylist(), user_vectors_for(bundle, hist), strict=True))
    rows = ctx.read("user_embeddings").where(f"model_version = '{version}'").collect()
    assert len(rows) == len(expected) and {r["user_id"] for r in rows} == set(expected)
    assert max(float(np.abs(np.array(r["vector"]) - expected[r["user_id"]]).max()) for r in rows) <= 1e-5
    with torch.no_grad():
        item_vecs = bundle.model.item_vectors().numpy()
    rows = ctx.read("item_embeddings").where(f"model_version = '{version}'").collect()
    assert len(rows) == bundle.vocab.num_items
    assert {r["item_id"] for r in rows} == set(bundle.vocab.item_ids.tolist())
    idx = bundle.vocab.item_index(np.array([r["item_id"] for r in rows]))
    assert max(float(np.abs(np.array(r["vector"]) - item_vecs[j - 1]).max()) for r, j in zip(rows, idx, strict=True)) \
        <= 1e-5
