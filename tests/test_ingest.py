"""Sources, validation, quarantine and the chronological split, on real Spark and Delta."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from divspa.config import load_config
from divspa.ingest.sources import read_source
from divspa.ingest.split import chronological_split
from divspa.ingest.validate import validate
from divspa.pipeline import BY_NAME, run_stage
from divspa.runtime import RunContext, StageError

LO = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
HI = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

CSV = """uid,iid,ts,rating
1,10,1700000000,5
1,11,1700000100,4
2,10,1700000200,3
2,10,1700000200,3
2,10,1700000200,3
,10,1700000300,5
x7,10,1700000300,5
3,12.5,1700000300,5
3,-4,1700000300,5
4,10,,5
4,10,yesterday,5
4,10,99999999999999999999,5
5,10,100,5
6,13,1700000400,2
5,7,1600000000,5,EXTRA
"""


def test_validation_quarantines_each_bad_row_with_its_reason(spark, tmp_path):
    (tmp_path / "log.csv").write_text(CSV)
    cfg = load_config(None, ["source.format=csv", f"source.path={tmp_path / 'log.csv'}", "source.user_col=uid",
                             "source.item_col=iid", "source.time_col=ts"])
    src = read_source(spark, cfg)
    checked = validate(src.clicks, src.time_unit, src.time_format, LO, HI)
    try:
        assert checked.total == 15
        assert checked.bad_by_reason == {
            "event_time out of range": 2,  # 1970 and a value too large to be a time
            "exact duplicate": 2,
            "more fields than the header": 1,  # a shifted column would corrupt the fields it shifts into
            "negative item_id": 1,
            "non-integer item_id": 1,
            "non-integer user_id": 1,
            "null event_time": 1,
            "null user_id": 1,
            "unparsable event_time": 1,
        }
        clicks = sorted(tuple(r) for r in checked.clicks.select("user_id", "item_id").collect())
        assert clicks == [(1, 10), (1, 11), (2, 10), (6, 13)]
        q = {(r["raw_user_id"], r["raw_item_id"], r["reason"]) for r in checked.quarantine.collect()}
        assert ("x7", "10", "non-integer user_id") in q
        assert ("5", "7", "more fields than the header") in q
        assert ("3", "12.5", "non-integer item_id") in q
        assert (None, "10", "null user_id") in q
    finally:
        checked.release()


def test_filters_apply_before_validation(spark, tmp_path):
    (tmp_path / "log.csv").write_text(CSV)
    cfg = load_config(None, ["source.format=csv", f"source.path={tmp_path / 'log.csv'}", "source.user_col=uid",
                             "source.item_col=iid", "source.time_col=ts",
                             "source.filters=[{column: rating, op: '>=', value: 4}]"])
    src = read_source(spark, cfg)
    assert src.clicks.count() == 11


def test_timestamp_formats(spark, tmp_path):
    df = spark.createDataFrame([("1", "2", "2026-01-02 03:04:05"), ("1", "3", "02/01/2026")],
                               "raw_user string, raw_item string, raw_time string")
    checked = validate(df, "s", "yyyy-MM-dd HH:mm:ss", LO, HI)
    try:
        assert checked.bad_by_reason == {"unparsable event_time": 1}
        assert checked.clicks.first()["event_time"] == dt.datetime(2026, 1, 2, 3, 4, 5)
    finally:
        checked.release()
    millis = spark.createDataFrame([(1, 2, 1_700_000_000_123)], "raw_user long, raw_item long, raw_time long")
    checked = validate(millis, "ms", None, LO, HI)
    assert checked.clicks.first()["event_time"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123000)
    checked.release()


def test_movielens_100k_loads_exactly(spark, ml100k_path, tmp_path):
    cfg = load_config("conf/ml100k.yaml", [f"source.path={ml100k_path}", f"run.output_dir={tmp_path}",
                                           "spark.master=local[2]"])
    ctx = RunContext.start(cfg, "ingest", spark=spark)
    info = run_stage(ctx, BY_NAME["ingest"])
    assert info["rows_read"] == 100_000 and info["clicks"] == 100_000 and info["quarantined"] == 0
    clicks = ctx.read("clicks")
    assert clicks.count() == 100_000
    assert clicks.select("user_id").distinct().count() == 943
    assert clicks.select("item_id").distinct().count() == 1682
    assert info["user_features"] == 943 and info["item_features"] == 1682
    u1 = ctx.read("user_features").where("user_id = 1").first()["features"]
    assert set(u1) == {"age=18-24", "gender=M", "occupation=technician", "zip1=8"}
    toy_story = ctx.read("item_features").where("item_id = 1").first()["features"]
    assert {"genre=Animation", "genre=Children's", "genre=Comedy", "decade=1990s"} == set(toy_story)

    split_info = run_stage(ctx, BY_NAME["split"])
    rows = ctx.read("split_clicks")
    cut = dt.datetime.fromisoformat(split_info["cut_time"]).replace(tzinfo=None)
    assert rows.where((F.col("split") == "test") & (F.col("event_time") < F.lit(cut))).count() == 0
    assert rows.where((F.col("split") == "train") & (F.col("event_time") >= F.lit(cut))).count() == 0
    assert split_info["train"] + split_info["test"] <= 100_000
    assert split_info["test"] > 2_000  # 10% of events fall after the cut; many are by users new then


def test_split_keeps_only_users_and_items_seen_in_train(spark):
    t = lambda d: dt.datetime(2026, 1, d)  # noqa: E731
    clicks = spark.createDataFrame(
        [(1, 10, t(1)), (1, 11, t(2)), (2, 10, t(3)), (1, 10, t(10)), (3, 10, t(11)), (2, 99, t(12)), (2, 11, t(13))],
        "user_id long, item_id long, event_time timestamp")
    cfg = load_config(None, ["split.cut_time=2026-01-05T00:00:00"]).split
    split = chronological_split(clicks, cfg)
    rows = {(r["user_id"], r["item_id"], r["split"]) for r in split.rows.collect()}
    assert rows == {(1, 10, "train"), (1, 11, "train"), (2, 10, "train"), (1, 10, "test"), (2, 11, "test")}


def test_per_user_split_holds_out_each_users_latest_clicks(spark):
    t = lambda d: dt.datetime(2026, 1, d)  # noqa: E731
    # user 1: 5 clicks -> the latest 1 (floor(5 * 0.3)) is test; user 2: 3 clicks -> 0 test;
    # user 3: 4 clicks -> the latest 1, but item 99 is never in train, so it is dropped.
    data = [(1, 10, t(1)), (1, 11, t(2)), (1, 14, t(3)), (1, 13, t(20)), (1, 12, t(21)),
            (2, 10, t(25)), (2, 11, t(26)), (2, 12, t(27)),
            (3, 10, t(4)), (3, 11, t(5)), (3, 13, t(6)), (3, 99, t(7))]
    clicks = spark.createDataFrame(data, "user_id long, item_id long, event_time timestamp")
    split = chronological_split(clicks, load_config(None, ["split.mode=per_user", "split.test_fraction=0.3"]).split)
    assert split.cut is None
    rows = {(r["user_id"], r["item_id"], r["split"]) for r in split.rows.collect()}
    test = {(u, i) for u, i, s in rows if s == "test"}
    assert test == {(1, 12)}  # user 1's latest is test although user 2 clicked later: no global cut
    assert {(u, i) for u, i, s in rows if s == "train"} == {(u, i) for u, i, _ in data} - {(1, 12), (3, 99)}


def test_sparse_split_thins_each_users_train_clicks(spark):
    t = lambda d: dt.datetime(2026, 1, d)  # noqa: E731
    # user 1: 10 clicks (9 train + the latest as test); user 2: 2 clicks (both train, none test).
    data = [(1, 10 + d, t(d)) for d in range(1, 11)] + [(2, 10, t(1)), (2, 11, t(2))]
    clicks = spark.createDataFrame(data, "user_id long, item_id long, event_time timestamp")
    over = ["split.mode=per_user", "split.test_fraction=0.1", "split.max_train_clicks=3"]
    rows = chronological_split(clicks.repartition(3), load_config(None, over).split).rows.collect()
    train = {(r["user_id"], r["item_id"]) for r in rows if r["split"] == "train"}
    assert len([1 for u, _ in train if u == 1]) == 3 and {(2, 10), (2, 11)} <= train
    # The thinning is random among the user's train clicks, not the latest or the earliest three.
    mine = sorted(i for u, i in train if u == 1)
    assert mine not in ([11, 12, 13], [17, 18, 19])
    # Test items must still be in (thinned) train: item 20 was only clicked once, by user 1's test click.
    assert not [r for r in rows if r["split"] == "test"]
    again = chronological_split(clicks.repartition(1), load_config(None, over).split).rows.collect()
    assert sorted(map(tuple, again)) == sorted(map(tuple, rows))


def test_too_many_bad_rows_fails_and_changes_no_table(spark, small_config):
    cfg = small_config
    cfg.synthetic.bad_row_fraction = 0.2
    ctx = RunContext.start(cfg, "ingest", spark=spark)
    with pytest.raises(StageError, match=r"stage ingest failed: .* above ingest.max_bad_fraction=0.01.*No table"):
        run_stage(ctx, BY_NAME["ingest"])
    assert ctx.warehouse.tables() == []
