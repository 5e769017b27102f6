"""Table schemas from `schemas/<table>.json`, as Spark StructTypes and pyarrow schemas.

The JSON files are the single source of truth for every table's columns, so the Spark writer,
the delta-rs commit and the PyTorch reader can never disagree on a type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pyarrow as pa
from pyspark.sql import types as T

from divspa.errors import SchemaError

# Our type names -> (Spark type, Arrow type). Timestamps are UTC microseconds, which is what
# Spark writes with spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS and what Delta's
# `timestamp` type means.
_PRIMITIVES: dict[str, tuple[T.DataType, pa.DataType]] = {
    "string": (T.StringType(), pa.string()),
    "long": (T.LongType(), pa.int64()),
    "int": (T.IntegerType(), pa.int32()),
    "double": (T.DoubleType(), pa.float64()),
    "float": (T.FloatType(), pa.float32()),
    "boolean": (T.BooleanType(), pa.bool_()),
    "timestamp": (T.TimestampType(), pa.timestamp("us", tz="UTC")),
    "date": (T.DateType(), pa.date32()),
}


def _types(name: str) -> tuple[T.DataType, pa.DataType]:
    if name in _PRIMITIVES:
        return _PRIMITIVES[name]
    if name.startswith("array<") and name.endswith(">"):
        spark_el, arrow_el = _types(name[6:-1])
        # Spark's Parquet writer names the list element "element"; match it so delta-rs and
        # Spark agree on the physical schema.
        return T.ArrayType(spark_el, containsNull=True), pa.list_(pa.field("element", arrow_el))
    raise SchemaError(f"unsupported column type {name!r}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    doc: str = ""


@dataclass(frozen=True)
class TableSchema:
    table: str
    description: str
    partition_by: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def spark(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, _types(c.type)[0], c.nullable) for c in self.columns])

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, _types(c.type)[1], c.nullable) for c in self.columns])

    @property
    def arrow_with_docs(self) -> pa.Schema:
        """The Arrow schema with each column's doc as its `comment` (Delta's column comment)."""
        return pa.schema([pa.field(c.name, _types(c.type)[1], c.nullable, metadata={"comment": c.doc} if c.doc else None)
                          for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


@cache
def load_schema(table: str) -> TableSchema:
    try:
        text = resources.files("divspa._schemas").joinpath(f"{table}.json").read_text()
    except FileNotFoundError:
        raise SchemaError(f"no schema file schemas/{table}.json (known tables: {', '.join(table_names())})") from None
    data = json.loads(text)
    cols = tuple(Column(c["name"], c["type"], bool(c.get("nullable", True)), c.get("doc", "")) for c in data["columns"])
    for c in cols:
        _types(c.type)  # fail on load, not on first write
    schema = TableSchema(data["table"], data.get("description", ""), tuple(data.get("partition_by", [])), cols)
    missing = set(schema.partition_by) - set(schema.names)
    if missing:
        raise SchemaError(f"schemas/{table}.json: partition columns {sorted(missing)} are not columns")
    return schema


def table_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("divspa._schemas").iterdir() if p.name.endswith(".json"))


def check_dataframe(schema: TableSchema, df_schema: T.StructType) -> list[str]:
    """Compare a DataFrame's columns with the table's; return the column order to select.

    Names must match exactly (no missing, no extra); types must be equal except for the
    lossless widenings int->long and float->double, which the caller applies by casting.
    """
    have = {f.name: f.dataType for f in df_schema.fields}
    for col in schema.columns:
        if col.name not in have:
            raise SchemaError(f"table {schema.table}: column {col.name!r} is missing from the DataFrame "
                              f"(it has {', '.join(have)})")
        want = _types(col.type)[0]
        got = have[col.name]
        if got != want and not _widens(got, want):
            raise SchemaError(f"table {schema.table}: column {col.name!r} has type {got.simpleString()}, "
                              f"the table wants {want.simpleString()}")
    extra = [n for n in have if n not in set(schema.names)]
    if extra:
        raise SchemaError(f"table {schema.table}: column {extra[0]!r} is not in the table's schema "
                          f"(schemas/{schema.table}.json has {', '.join(schema.names)})")
    return schema.names


def _widens(got: T.DataType, want: T.DataType) -> bool:
    if isinstance(got, T.ArrayType) and isinstance(want, T.ArrayType):
        return got.elementType == want.elementType or _widens(got.elementType, want.elementType)
    return (isinstance(got, (T.IntegerType, T.ShortType, T.ByteType)) and isinstance(want, T.LongType)) or (
        isinstance(got, T.FloatType) and isinstance(want, T.DoubleType)
    )
