"""`divspa sql` inspects and never writes: refused statements leave every table's version as it was."""

from __future__ import annotations

import pytest

from divspa.cli import main
from divspa.sql import ReadOnlyError, check_read_only
from tests.conftest import require_native
from tests.test_delta import clicks_df

WRITES = [
    "INSERT INTO clicks SELECT * FROM clicks",
    "WITH c AS (SELECT * FROM clicks) INSERT INTO clicks SELECT * FROM c",
    "UPDATE clicks SET item_id = 0",
    "DELETE FROM clicks WHERE user_id = 1",
    "MERGE INTO clicks t USING clicks s ON t.user_id = s.user_id WHEN MATCHED THEN DELETE",
    "DROP TABLE clicks",
    "ALTER TABLE clicks ADD COLUMNS (x INT)",
    "CREATE TABLE copy AS SELECT * FROM clicks",
    "TRUNCATE TABLE clicks",
    "RESTORE TABLE clicks TO VERSION AS OF 0",
    "OPTIMIZE clicks",
    "VACUUM clicks",
]
READS = ["SELECT count(*) FROM clicks", "WITH c AS (SELECT 1 AS x) SELECT x FROM c", "DESCRIBE clicks",
         "SHOW TABLES", "EXPLAIN SELECT * FROM clicks", "DESCRIBE HISTORY clicks"]
DELTA_SYNTAX = ("RESTORE", "OPTIMIZE", "VACUUM", "DESCRIBE HISTORY")  # parsed by Delta's SQL extension only


def _needs_delta(query: str) -> None:
    if query.startswith(DELTA_SYNTAX):
        require_native()


@pytest.mark.parametrize("query", WRITES)
def test_writes_are_refused_before_anything_runs(spark, query):
    _needs_delta(query)
    with pytest.raises(ReadOnlyError, match="read-only"):
        check_read_only(spark, query)


def _cli(tmp_path, mode: str, query: str) -> list[str]:
    return ["sql", "--set", f"run.output_dir={tmp_path}", "--set", f"spark.delta={mode}", query]


@pytest.mark.parametrize("mode", ["native", "embedded"])
def test_sql_command_refuses_writes_and_versions_stay(spark, tmp_path, capsys, mode):
    if mode == "native":
        require_native()
    from divspa.delta import Warehouse

    wh = Warehouse(spark, str(tmp_path / "warehouse"), native=mode == "native")
    wh.write("clicks", clicks_df(spark, "a"))
    wh.write("clicks", clicks_df(spark, "b", n=50))
    for query in ("INSERT INTO clicks SELECT * FROM clicks", "DELETE FROM clicks", "DROP TABLE clicks",
                  "CREATE TABLE x AS SELECT 1"):
        assert main(_cli(tmp_path, mode, query)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "read-only" in err, err
    assert wh.version("clicks") == 1 and wh.read("clicks").count() == 250
    for query in READS:  # queries and describing commands run, and print what they found
        if mode == "native" or not query.startswith(DELTA_SYNTAX):
            assert main(_cli(tmp_path, mode, query)) == 0, query
            out = capsys.readouterr().out
            assert "(0 rows)" not in out and out.strip(), (query, out)
    assert main(_cli(tmp_path, mode, "SELECT run_id, count(*) AS n FROM clicks GROUP BY run_id ORDER BY run_id")) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["a", "200"] in rows and ["b", "50"] in rows
    if mode == "native":  # time travel and history through SQL
        assert main(_cli(tmp_path, mode, "SELECT count(*) AS n FROM clicks VERSION AS OF 0")) == 0
        assert "200" in capsys.readouterr().out
        assert main(_cli(tmp_path, mode, "DESCRIBE HISTORY clicks")) == 0
        history = capsys.readouterr().out
        assert "WRITE" in history and "(2 rows)" in history
    assert wh.version("clicks") == 1
