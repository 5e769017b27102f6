"""Tables written by one Delta engine, read by the other: delta-rs (embedded) <-> delta-spark (native).

Users read divspa's tables with whatever they have (delta-spark on a cluster, delta-rs or DuckDB
in a notebook, divspa's PyTorch reader in a trainer); the warehouse may have been written in
either mode. Every pairing is checked here on real tables on disk.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from divspa.delta import Warehouse
from divspa.reader import DeltaIterableDataset
from divspa.schemas import load_schema
from tests.conftest import require_native
from tests.test_delta import clicks_df


@pytest.fixture
def both(spark, tmp_path) -> tuple[Warehouse, Warehouse]:
    """The same warehouse through the embedded and the native writer."""
    require_native()
    root = str(tmp_path / "warehouse")
    return Warehouse(spark, root, native=False), Warehouse(spark, root, native=True)


def test_embedded_table_read_by_delta_spark(spark, both):
    embedded, _ = both
    embedded.write("clicks", clicks_df(spark, "a", n=120), mode="replace", replace={"run_id": "a"})
    embedded.write("clicks", clicks_df(spark, "b", n=80, offset=500), mode="replace", replace={"run_id": "b"})
    path = embedded.path("clicks")
    df = spark.read.format("delta").load(path)
    assert df.count() == 200
    assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == \
        [(f.name, f.dataType.simpleString()) for f in load_schema("clicks").spark.fields]
    # Partition pruning: a filter on run_id reads only that partition's files.
    pruned = df.where(F.col("run_id") == "b")
    assert pruned.count() == 80 and all("run_id=b" in f for f in pruned.inputFiles())
    # Time travel and history in SQL.
    assert spark.sql(f"SELECT count(*) FROM delta.`{path}` VERSION AS OF 0").first()[0] == 120
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [h["version"] for h in history] == [0, 1]
    # Column docs from schemas/clicks.json are the columns' comments.
    described = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE delta.`{path}`").collect()}
    assert described["user_id"] == load_schema("clicks").column("user_id").doc


def test_native_table_read_by_delta_rs_and_the_reader(spark, both):
    _, native = both
    native.write("clicks", clicks_df(spark, "a", n=300, partitions=3), mode="replace", replace={"run_id": "a"},
                 txn=None, metadata={"divspa.note": "native"})
    table = DeltaTable(native.path("clicks"))
    arrow = table.to_pyarrow_table()
    assert arrow.num_rows == 300 and table.version() == 0
    assert arrow.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert sorted(arrow.column("user_id").to_pylist()) == list(range(300))
    assert table.metadata().partition_columns == ["run_id"]
    assert native.history("clicks")[0]["divspa.note"] == "native"
    # Column comments survive in the Delta schema delta-rs reads.
    field = pa.schema(table.schema().to_arrow()).field("item_id")
    assert (field.metadata or {}).get(b"comment") == load_schema("clicks").column("item_id").doc.encode()
    ds = DeltaIterableDataset(native.path("clicks"), columns=["user_id"], batch_size=64)
    assert sorted(int(x) for b in ds for x in b["user_id"]) == list(range(300))


def test_one_table_written_by_both_engines_in_turn(spark, both):
    """A warehouse moved from a machine without jars to a cluster (and back) keeps one history."""
    embedded, native = both
    embedded.write("clicks", clicks_df(spark, "a"), mode="replace", replace={"run_id": "a"})
    native.write("clicks", clicks_df(spark, "b"), mode="replace", replace={"run_id": "b"})
    embedded.write("clicks", clicks_df(spark, "a", n=50), mode="replace", replace={"run_id": "a"})
    native.write("clicks", clicks_df(spark, "b", n=70), mode="replace", replace={"run_id": "b"})
    for wh in both:
        assert wh.version("clicks") == 3
        counts = {r["run_id"]: r["count"] for r in wh.read("clicks").groupBy("run_id").count().collect()}
        assert counts == {"a": 50, "b": 70}
        assert wh.read("clicks", version=1).count() == 400


def test_boolean_filter_on_a_delta_spark_table(spark, both):
    """delta-spark writes no min/max for booleans; delta-rs's own pyarrow dataset then drops every
    row of a filter on them (the trainer's `is_val == False` read 0 rows). divspa's does not."""
    embedded, native = both
    examples = clicks_df(spark, "r", n=100).select(
        "user_id", "item_id", "event_time", F.array(F.col("item_id")).alias("history"),
        F.array(F.lit("age=1")).alias("user_features"), (F.col("user_id") >= 90).alias("is_val"), "run_id")
    native.write("train_examples", examples)
    train = (pc.field("run_id") == "r") & (pc.field("is_val") == False)  # noqa: E712 (Arrow expression)
    for wh in both:
        assert wh.dataset("train_examples").count_rows(filter=train) == 90


def test_idempotent_transactions_are_shared_by_the_engines(spark, both):
    from divspa.delta import Txn

    embedded, native = both
    first = embedded.write("clicks", clicks_df(spark, "r"), mode="replace", replace={"run_id": "r"},
                           txn=Txn("divspa:test:r", 1))
    again = native.write("clicks", clicks_df(spark, "r"), mode="replace", replace={"run_id": "r"},
                         txn=Txn("divspa:test:r", 1))
    assert not first.skipped and again.skipped
    assert native.committed("clicks", "divspa:test:r") == 1 and native.version("clicks") == 0
    newer = native.write("clicks", clicks_df(spark, "r", n=20), mode="replace", replace={"run_id": "r"},
                         txn=Txn("divspa:test:r", 2))
    assert not newer.skipped and embedded.committed("clicks", "divspa:test:r") == 2
    assert embedded.read("clicks").count() == 20
