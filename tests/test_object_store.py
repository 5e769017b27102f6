"""The pipeline against a real S3 API server on 127.0.0.1 (moto): s3a:// output end to end.

The user's settings are what a Spark user writes (spark.hadoop.fs.s3a.* in spark.conf); Spark,
delta-rs, pyarrow and the PyTorch reader all reach the bucket with them, nothing lands on local
disk under a directory named after the scheme, and secrets stay out of saved configs.
"""

from __future__ import annotations

import os

import pytest
from deltalake import DeltaTable

from divspa import storage
from divspa.cli import main
from divspa.reader import DeltaIterableDataset
from tests.conftest import REPO, require_native, start_moto
from tests.test_cli import ALL_TABLES, TINY


def _args(s3, out: str, *extra: str) -> list[str]:
    args = ["--conf", str(REPO / "conf" / "default.yaml"), "--run-id", "r1", "--set", f"run.output_dir={out}"]
    for item in [*TINY, *s3.overrides()]:
        args += ["--set", item]
    return args + list(extra)


def _rs_options(s3) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


def test_full_pipeline_on_s3a(spark, s3, tmp_path, monkeypatch, capsys):
    require_native()  # Spark reaches s3a:// through hadoop-aws, fetched with delta-spark
    monkeypatch.chdir(tmp_path)  # a pathlib slip would create ./s3a:/... here
    out = f"s3a://{s3.bucket}/pipeline"
    assert main(["run", *_args(s3, out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "divspa-1" in printed and "report: s3a://" in printed
    assert not any("s3a" in p for p in os.listdir(tmp_path)) and not (REPO / "s3a:").exists()

    keys = s3.keys("pipeline/")
    tables = {k.split("/")[2] for k in keys if k.startswith("pipeline/warehouse/") and "/_delta_log/" in k}
    assert tables == ALL_TABLES
    assert "pipeline/models/r1/base.pt" in keys and "pipeline/models/r1/divspa-1.pt" in keys
    assert "pipeline/runs/r1/report.html" in keys and "pipeline/runs/r1/split.json" in keys
    assert any(k.endswith("-run.log") for k in keys)
    assert not any("/scratch/" in k for k in keys)  # retrieval's scratch space was removed
    config = next(k for k in keys if k.endswith("-run.config.yaml"))
    text = storage.StorageSettings(env_override=_rs_options(s3)).read_text(f"s3://{s3.bucket}/{config}")
    assert s3.secret_key not in text and s3.access_key not in text and storage.REDACTED in text

    # delta-rs, Spark and the PyTorch reader read the tables back from the bucket.
    table = DeltaTable(f"s3://{s3.bucket}/pipeline/warehouse/augmented_positives", storage_options=_rs_options(s3))
    rows = table.to_pyarrow_table().num_rows
    assert rows > 0
    assert spark.read.format("delta").load(f"{out}/warehouse/augmented_positives").count() == rows
    ds = DeltaIterableDataset(f"s3a://{s3.bucket}/pipeline/warehouse/augmented_positives",
                              columns=["user_id", "weight"], batch_size=256, storage_options=_rs_options(s3))
    assert sum(len(b["user_id"]) for b in ds) == rows

    # A re-run of the finished run changes no table (idempotent on the object store too).
    versions = {t: DeltaTable(f"s3://{s3.bucket}/pipeline/warehouse/{t}", storage_options=_rs_options(s3)).version()
                for t in ALL_TABLES}
    assert main(["run", *_args(s3, out)]) == 0
    assert versions == {t: DeltaTable(f"s3://{s3.bucket}/pipeline/warehouse/{t}",
                                      storage_options=_rs_options(s3)).version() for t in ALL_TABLES}


def test_missing_bucket_is_one_line_naming_the_uri(spark, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = "s3a://no-such-bucket/divspa"
    assert main(["ingest", *_args(s3, out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s3a://no-such-bucket/divspa" in err, err
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("mode", ["native", "embedded"])
def test_warehouse_on_s3_in_both_modes(spark, s3, mode):
    from divspa.delta import Warehouse
    from tests.test_delta import clicks_df

    require_native()  # either mode: Spark reaches s3a:// through hadoop-aws, which comes with the jars
    settings = storage.StorageSettings(s3.spark_conf(), {"aws_conditional_put": "etag"})
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in s3.spark_conf().items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    wh = Warehouse(spark, f"s3a://{s3.bucket}/modes/{mode}", native=mode == "native", settings=settings)
    wh.write("clicks", clicks_df(spark, "a"), mode="replace", replace={"run_id": "a"})
    wh.write("clicks", clicks_df(spark, "a", n=30), mode="replace", replace={"run_id": "a"})
    assert wh.version("clicks") == 1 and wh.read("clicks").count() == 30
    assert wh.read("clicks", version=0).count() == 200
    assert wh.tables() == ["clicks"] and wh.row_count("clicks") == 30
    assert wh.dataset("clicks").count_rows() == 30


@pytest.fixture
def strict_s3(s3):
    """A second S3 server that checks credentials (moto's auth on): every key it is given is unknown."""
    proc, endpoint = start_moto(INITIAL_NO_AUTH_ACTION_COUNT="0")
    yield type(s3)(endpoint=endpoint, bucket="divspa-strict")
    proc.terminate()
    proc.wait(timeout=10)


def test_wrong_credentials_are_one_line_naming_the_uri(spark, strict_s3, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = f"s3a://{strict_s3.bucket}/divspa"
    assert main(["ingest", *_args(strict_s3, out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and out in err, err
    assert not os.listdir(tmp_path)


def test_source_and_features_read_from_the_bucket(spark, s3, tmp_path, monkeypatch):
    """source.path and the feature tables may be URIs too (here s3://, which Spark reads as s3a://)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from divspa.config import load_config
    from divspa.pipeline import BY_NAME, run_stage
    from divspa.runtime import RunContext

    require_native()
    monkeypatch.chdir(tmp_path)
    fs, _ = storage.StorageSettings(s3.spark_conf()).filesystem(f"s3://{s3.bucket}")
    clicks = pa.table({"uid": [1, 1, 2, 2, 3], "iid": [10, 11, 10, 12, 11],
                       "ts": [1_767_225_600 + i * 3600 for i in range(5)]})
    pq.write_table(clicks, f"{s3.bucket}/sources/clicks.parquet", filesystem=fs)
    pq.write_table(pa.table({"iid": [10, 11, 12], "genre": ["a", "b", "a"]}),
                   f"{s3.bucket}/sources/items.parquet", filesystem=fs)
    cfg = load_config(REPO / "conf" / "default.yaml", [
        f"run.output_dir=s3a://{s3.bucket}/sourced", "run.run_id=s1", "source.format=parquet",
        f"source.path=s3://{s3.bucket}/sources/clicks.parquet", "source.user_col=uid", "source.item_col=iid",
        "source.time_col=ts",
        f"source.item_features={{path: 's3a://{s3.bucket}/sources/items.parquet', id_col: iid, columns: [genre]}}",
        *s3.overrides()])
    ctx = RunContext.start(cfg, "test", spark=spark)
    info = run_stage(ctx, BY_NAME["ingest"])
    assert info["clicks"] == 5 and info["item_features"] == 3
    assert ctx.read("item_features").count() == 3
    assert not os.listdir(tmp_path)
