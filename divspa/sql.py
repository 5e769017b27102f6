"""`divspa sql`: ad hoc SQL over the warehouse that can look but never touch.

Users inspect the tables with SQL; scheduled trainers read the same tables. A stray INSERT or
DELETE typed into an inspection tool must not reach them, so every statement is parsed (with
Spark's own parser, Delta's extensions included) before it runs, and anything but a query or a
describing command is refused. Spark runs DDL and DML eagerly inside `spark.sql()`, so the check
has to come first.

With native Delta the tables are registered by name as Delta tables, so SQL time travel
(`VERSION AS OF`, `TIMESTAMP AS OF`) and `DESCRIBE HISTORY` work; embedded, they are views of
the current snapshot.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from divspa.errors import ReadOnlyError

log = logging.getLogger(__name__)

# Commands that only describe: allowed. Every other command, and every parsed write statement
# (INSERT, RESTORE... are "statements", not commands, until analysis), is refused.
ALLOWED_COMMANDS = frozenset({
    "DescribeRelation", "DescribeColumn", "DescribeNamespace", "DescribeFunction", "DescribeDeltaDetailCommand",
    "ShowTables", "ShowTablesExtended", "ShowViews", "ShowColumns", "ShowTableProperties", "ShowPartitions",
    "ShowFunctions", "ShowNamespaces", "ShowCreateTable", "ShowCatalogs", "ShowCurrentNamespaceCommand",
    "ExplainCommand",
})
ALLOWED_OTHER = frozenset({"DescribeDeltaHistory"})


def _nodes(plan: Any) -> list[Any]:
    """Every node of a parsed plan, CTE definitions included."""
    out, todo = [], [plan]
    while todo:
        node = todo.pop()
        out.append(node)
        children = node.children()
        todo.extend(children.apply(i) for i in range(children.size()))
        if node.getClass().getSimpleName() == "UnresolvedWith":
            ctes = node.cteRelations()
            todo.extend(ctes.apply(i)._2() for i in range(ctes.size()))
    return out


def check_read_only(spark: SparkSession, query: str) -> None:
    """Raise ReadOnlyError unless `query` is a query or a describing command."""
    jvm = spark.sparkContext._jvm
    plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)  # parse errors surface as usual
    command = jvm.java.lang.Class.forName("org.apache.spark.sql.catalyst.plans.logical.Command")
    root = plan.getClass().getSimpleName()
    if root in ALLOWED_OTHER or (command.isInstance(plan) and root in ALLOWED_COMMANDS):
        return
    for node in _nodes(plan):
        name = node.getClass().getSimpleName()
        if command.isInstance(node) or name.endswith("Statement"):
            raise ReadOnlyError(f"divspa sql is read-only: {name} would change a table or the catalog "
                                "(use the pipeline's stages to write)")


def register_tables(wh: Any, run_id: str | None = None) -> list[str]:
    """Make every table of the warehouse queryable by its name; with `run_id`, as views of that
    run's rows only (the runs table stays whole: it is the index of runs)."""
    names = wh.tables()
    catalog_ok = spark_catalog_is_in_memory(wh.spark)
    for name in names:
        if run_id is not None and name != "runs":
            wh.read(name, where={"run_id": run_id}).createOrReplaceTempView(name)
        elif wh.native and catalog_ok:
            # An external table over the existing Delta location: registering commits nothing.
            location = wh.loc.spark_uri(name).replace("'", "\\'")
            wh.spark.catalog.dropTempView(name)
            wh.spark.sql(f"DROP TABLE IF EXISTS `{name}`")
            wh.spark.sql(f"CREATE TABLE `{name}` USING delta LOCATION '{location}'")
        else:
            wh.read(name).createOrReplaceTempView(name)
    return names


def spark_catalog_is_in_memory(spark: SparkSession) -> bool:
    """Tables are registered only in a session's own in-memory catalog, never in a shared metastore."""
    return spark.conf.get("spark.sql.catalogImplementation", "in-memory") == "in-memory"
