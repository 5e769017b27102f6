"""The Delta layer against real Spark and real tables on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from divspa.delta import STAGING_DIR, Txn, Warehouse
from divspa.errors import DeltaWriteError
from divspa.schemas import SchemaError, load_schema, table_names
from tests.conftest import require_native


def clicks_df(spark, run_id: str, n: int = 200, offset: int = 0, partitions: int = 2):
    return spark.range(offset, offset + n, numPartitions=partitions).select(
        F.col("id").alias("user_id"),
        (F.col("id") % 13).alias("item_id"),
        F.timestamp_seconds(F.lit(1_700_000_000) + F.col("id")).alias("event_time"),
        F.lit(run_id).alias("run_id"),
    )


def data_files(root: str) -> set[str]:
    out = set()
    for dirpath, _, files in os.walk(root):
        if "_delta_log" in dirpath:
            continue
        out |= {os.path.join(dirpath, f) for f in files if f.endswith(".parquet")}
    return out


def test_every_write_is_readable_by_delta_rs(spark, warehouse):
    for i, mode in enumerate(["append", "append", "overwrite"]):
        warehouse.write("clicks", clicks_df(spark, f"r{i}"), mode=mode)
        dt = DeltaTable(warehouse.path("clicks"))
        assert dt.version() == i
        table = dt.to_pyarrow_table()
        expected = 200 * (i + 1) if mode == "append" else 200
        assert table.num_rows == expected
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert warehouse.read("clicks").count() == 200
    assert warehouse.read("clicks", version=1).count() == 400


def test_file_statistics_are_in_the_log(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "r1", n=100, partitions=1))
    actions = pa.table(DeltaTable(warehouse.path("clicks")).get_add_actions(flatten=True)).to_pylist()
    assert len(actions) == 1
    a = actions[0]
    assert a["num_records"] == 100
    assert a["min.user_id"] == 0 and a["max.user_id"] == 99
    assert a["min.item_id"] == 0 and a["max.item_id"] == 12
    assert a["null_count.user_id"] == 0
    assert a["min.event_time"].timestamp() == 1_700_000_000
    assert a["max.event_time"].timestamp() == 1_700_000_099
    # Readers skip files whose statistics exclude the filter value.
    dt = DeltaTable(warehouse.path("clicks"))
    assert dt.file_uris(file_pruning_predicate=[("user_id", "=", 500)]) == []
    assert len(dt.file_uris(file_pruning_predicate=[("user_id", "=", 50)])) == 1
    assert warehouse.row_count("clicks") == 100


def test_rerun_replaces_its_partitions_without_duplicates(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "2026-11-21"), mode="replace", replace={"run_id": "2026-11-21"})
    warehouse.write("clicks", clicks_df(spark, "2026-11-22"), mode="replace", replace={"run_id": "2026-11-22"})
    # The re-run of 2026-11-22 brings different rows: they replace that run's rows, nothing else.
    warehouse.write("clicks", clicks_df(spark, "2026-11-22", n=50, offset=1000), mode="replace",
                    replace={"run_id": "2026-11-22"})
    df = warehouse.read("clicks")
    counts = {r["run_id"]: r["count"] for r in df.groupBy("run_id").count().collect()}
    assert counts == {"2026-11-21": 200, "2026-11-22": 50}
    assert df.where("run_id = '2026-11-22'").agg(F.min("user_id")).first()[0] == 1000
    assert df.count() == df.distinct().count()
    assert warehouse.read("clicks", where={"run_id": "2026-11-21"}).count() == 200


def test_replace_refuses_rows_outside_the_partition(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "a"), mode="replace", replace={"run_id": "a"})
    with pytest.raises(DeltaWriteError, match="outside the partition being replaced"):
        warehouse.write("clicks", clicks_df(spark, "b"), mode="replace", replace={"run_id": "a"})
    assert warehouse.version("clicks") == 0
    with pytest.raises(ValueError, match="can only replace by partition columns"):
        warehouse.write("clicks", clicks_df(spark, "a"), mode="replace", replace={"user_id": 1})


def test_idempotent_transaction_is_applied_once(spark, warehouse):
    first = warehouse.write("clicks", clicks_df(spark, "r"), mode="append", txn=Txn("job:r", 1))
    again = warehouse.write("clicks", clicks_df(spark, "r"), mode="append", txn=Txn("job:r", 1))
    assert not first.skipped and again.skipped
    assert again.version == first.version == 0
    assert warehouse.read("clicks").count() == 200
    assert warehouse.committed("clicks", "job:r") == 1
    newer = warehouse.write("clicks", clicks_df(spark, "r"), mode="replace", replace={"run_id": "r"},
                            txn=Txn("job:r", 2))
    assert not newer.skipped and warehouse.read("clicks").count() == 200


def test_schema_mismatch_is_refused_before_any_file(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "r"))
    before = data_files(warehouse.path("clicks"))
    with pytest.raises(SchemaError, match="column 'item_id' has type string"):
        warehouse.write("clicks", clicks_df(spark, "r").withColumn("item_id", F.col("item_id").cast("string")))
    with pytest.raises(SchemaError, match="column 'event_time' is missing"):
        warehouse.write("clicks", clicks_df(spark, "r").drop("event_time"))
    with pytest.raises(SchemaError, match="column 'rating' is not in the table's schema"):
        warehouse.write("clicks", clicks_df(spark, "r").withColumn("rating", F.lit(5)))
    assert data_files(warehouse.path("clicks")) == before
    assert warehouse.version("clicks") == 0


def test_lossless_widening_is_accepted(spark, warehouse):
    df = clicks_df(spark, "r").withColumn("item_id", F.col("item_id").cast("int"))
    warehouse.write("clicks", df)
    assert dict(warehouse.read("clicks").dtypes)["item_id"] == "bigint"


def test_null_in_non_nullable_column_fails_the_write(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "r"))
    bad = clicks_df(spark, "r").withColumn("item_id", F.when(F.col("user_id") == 7, None).otherwise(F.col("item_id")))
    with pytest.raises(DeltaWriteError, match="column item_id is null"):
        warehouse.write("clicks", bad)
    assert warehouse.read("clicks").count() == 200


def test_failing_task_mid_write_leaves_table_unchanged_and_no_leftovers(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "r"))
    before_files = data_files(warehouse.path("clicks"))

    @F.udf(T.LongType())
    def explode_late(user_id):
        # Partition 0 (ids 0..99) finishes and writes its file; partition 1 dies part-way.
        if user_id == 150:
            raise RuntimeError("simulated executor failure")
        return user_id

    failing = clicks_df(spark, "r2", n=200, partitions=2).withColumn("user_id", explode_late("user_id"))
    with pytest.raises(DeltaWriteError, match="table is unchanged"):
        warehouse.write("clicks", failing, mode="append")
    assert warehouse.version("clicks") == 0
    assert DeltaTable(warehouse.path("clicks")).to_pyarrow_table().num_rows == 200
    assert warehouse.read("clicks").count() == 200
    referenced = {u.removeprefix("file://") for u in DeltaTable(warehouse.path("clicks")).file_uris()}
    assert referenced == before_files
    if warehouse.native:
        return  # delta-spark leaves a failed job's files unreferenced until VACUUM; no reader sees them
    assert data_files(warehouse.path("clicks")) == before_files
    assert not os.listdir(os.path.join(warehouse.path("clicks"), STAGING_DIR))


def test_stale_staging_of_a_killed_writer_is_cleaned(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "r"))
    stale = os.path.join(warehouse.path("clicks"), STAGING_DIR, "19700101T000000-dead")
    os.makedirs(os.path.join(stale, "run_id=r"))
    with open(os.path.join(stale, "run_id=r", "part-0.parquet"), "wb") as fh:
        fh.write(b"partial")
    assert warehouse.cleanup("clicks", older_than_s=0) == 1
    assert not os.path.exists(stale)
    assert warehouse.read("clicks").count() == 200


def test_history_and_pyarrow_dataset(spark, warehouse):
    warehouse.write("clicks", clicks_df(spark, "r"), metadata={"divspa.note": "first"})
    warehouse.write("clicks", clicks_df(spark, "r"), mode="overwrite")
    hist = warehouse.history("clicks")
    assert [h["version"] for h in hist] == [1, 0]
    assert hist[1]["divspa.note"] == "first" and hist[1]["divspa.rows"] == "200"
    ds = warehouse.dataset("clicks", version=0)
    assert ds.to_table().num_rows == 200
    assert warehouse.tables() == ["clicks"]


def test_empty_write_creates_a_readable_table(spark, warehouse):
    empty = spark.createDataFrame([], load_schema("clicks").spark)
    result = warehouse.write("clicks", empty)
    assert result.rows == 0 and warehouse.exists("clicks")
    assert warehouse.read("clicks").count() == 0


def test_schemas_are_usable_by_spark_and_arrow():
    for name in table_names():
        schema = load_schema(name)
        assert schema.spark.names == schema.arrow.names == schema.names
        for part in schema.partition_by:
            assert part in schema.names
        raw = json.loads(Path(f"schemas/{name}.json").read_text())
        assert raw["table"] == name
    assert set(table_names()) >= {"clicks", "clicks_quarantine", "user_embeddings", "item_embeddings",
                                  "neighbours", "augmented_positives", "metrics"}


def test_jar_pom_matches_the_pip_packages():
    """conf/jars.pom.xml fetches the delta-spark jar of the installed delta-spark and pyspark."""
    import xml.etree.ElementTree as ET

    from divspa.jars import delta_artifact

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(Path(__file__).resolve().parents[1] / "conf" / "jars.pom.xml").getroot()
    props = {p.tag.split("}")[1]: p.text for p in pom.find("m:properties", ns)}
    deps = {d.find("m:artifactId", ns).text: d.find("m:version", ns).text for d in pom.iter(f"{{{ns['m']}}}dependency")}
    group, artifact, version = delta_artifact().split(":")
    assert group == "io.delta" and artifact in deps
    assert deps[artifact].replace("${delta.version}", props["delta.version"]) == version


@pytest.mark.parametrize("mode", ["native", "embedded"])
def test_tables_checkpoint_every_few_commits(spark, tmp_path, mode):
    """Readers replay at most `checkpoint_interval` commits (delta-rs alone would wait 100)."""
    if mode == "native":
        require_native()
    wh = Warehouse(spark, str(tmp_path / "warehouse"), native=mode == "native", checkpoint_interval=3)
    for i in range(4):
        wh.write("clicks", clicks_df(spark, f"r{i}", n=20, partitions=1))
    log_dir = tmp_path / "warehouse" / "clicks" / "_delta_log"
    # delta-spark checkpoints at version 3, delta-rs after the third commit (version 2)
    assert list(log_dir.glob("*.checkpoint.parquet")), sorted(p.name for p in log_dir.iterdir())
    Warehouse(spark, str(tmp_path / "other"))  # the session's default back to the usual interval
