"""Readers for click logs: synthetic, MovieLens-100K, and any Delta / Parquet / CSV table.

Every reader returns the raw (unvalidated) columns raw_user, raw_item, raw_time in whatever
types the source holds, so one validation step can judge them all, plus optional feature
tables as (id, features: array of "field=value" tokens).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from divspa import storage
from divspa.config import Config, FeatureSourceConfig, FilterConfig
from divspa.delta import Warehouse
from divspa.errors import SourceError
from divspa.ingest import synthetic

DEFAULT_ML100K = "../shared/data/ml-100k"
ML100K_ENV = "DIVSPA_ML100K"
EXTRA_FIELD = "_divspa_extra_field"  # a CSV row's first token beyond the header's columns
ML_AGE_BUCKETS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"))


@dataclass
class RawSource:
    clicks: DataFrame  # raw_user, raw_item, raw_time (and extra_fields, a CSV row longer than its header)
    time_unit: str  # how raw_time is encoded: s, ms, us or timestamp
    time_format: str | None
    description: str
    user_features: DataFrame | None = None  # id long, features array<string>
    item_features: DataFrame | None = None


def movielens_path(path: str | None) -> Path:
    """Where MovieLens-100K lives: config, else $DIVSPA_ML100K, else ../shared/data/ml-100k."""
    p = Path(path or os.environ.get(ML100K_ENV) or DEFAULT_ML100K)
    if not (p / "u.data").is_file():
        raise SourceError(f"MovieLens-100K not found: {p / 'u.data'} does not exist "
                          f"(set source.path or ${ML100K_ENV}; the data set may not be redistributed)")
    return p


def read_source(spark: SparkSession, cfg: Config) -> RawSource:
    src = cfg.source
    if src.format == "synthetic":
        syn = cfg.synthetic
        return RawSource(
            synthetic.synthetic_clicks(spark, syn, cfg.run.seed), "timestamp", None,
            f"synthetic(users={syn.num_users}, items={syn.num_items}, seed={cfg.run.seed})",
            synthetic.synthetic_user_features(spark, syn, cfg.run.seed),
            synthetic.synthetic_item_features(spark, syn, cfg.run.seed),
        )
    if src.format == "movielens":
        return _read_movielens(spark, movielens_path(src.path), src.filters)
    if not src.path:
        raise SourceError(f"source.path is required for source.format={src.format}")
    table = _read_table(spark, src.format, src.path, src.csv_delimiter, src.csv_header)
    for col in (src.user_col, src.item_col, src.time_col):
        if col not in table.columns:
            raise SourceError(f"source {src.path}: column {col!r} not found (it has {_names(table)})")
    table = apply_filters(table, src.filters, src.path)
    clicks = table.select(F.col(src.user_col).alias("raw_user"), F.col(src.item_col).alias("raw_item"),
                          F.col(src.time_col).alias("raw_time"),
                          *([F.col(EXTRA_FIELD).isNotNull().alias("extra_fields")] if EXTRA_FIELD in table.columns
                            else []))
    return RawSource(
        clicks, src.time_unit, src.time_format, f"{src.format}:{src.path}",
        _read_features(spark, src.user_features), _read_features(spark, src.item_features),
    )


def _read_table(spark: SparkSession, fmt: str, path: str, delimiter: str = ",", header: bool = True) -> DataFrame:
    path = storage.resolve(path)
    if fmt == "delta":
        # An external Delta table is read the same way as our own (delta-spark, or its snapshot's file list).
        wh = Warehouse(spark, storage.parent(path))
        if not wh.exists(storage.basename(path)):
            raise SourceError(f"source path {path} is not a Delta table")
        return wh.read(storage.basename(path))
    if not storage.settings().exists(path):
        raise SourceError(f"source path {path} does not exist")
    if fmt == "parquet":
        return spark.read.parquet(storage.spark_uri(path))
    if fmt == "csv":
        # Everything as strings: validation decides what parses, and quarantines the rest. Spark
        # drops the tokens of a row beyond its schema, so the schema is the header's columns plus
        # one more: a row that fills it has more fields than the header (a shifted column, which
        # would otherwise corrupt the fields it shifted into) and goes to quarantine.
        reader = spark.read.option("header", header).option("sep", delimiter).option("inferSchema", False)
        columns = reader.csv(storage.spark_uri(path)).columns
        schema = T.StructType([T.StructField(c, T.StringType()) for c in [*columns, EXTRA_FIELD]])
        return reader.schema(schema).csv(storage.spark_uri(path))
    raise SourceError(f"unsupported source format {fmt!r}")


def _names(table: DataFrame) -> str:
    return ", ".join(c for c in table.columns if c != EXTRA_FIELD)


def apply_filters(df: DataFrame, filters: list[FilterConfig], where: str) -> DataFrame:
    ops = {"==": Column.__eq__, "!=": Column.__ne__, ">": Column.__gt__, ">=": Column.__ge__,
           "<": Column.__lt__, "<=": Column.__le__}
    for f in filters:
        if f.column not in df.columns:
            raise SourceError(f"{where}: filter column {f.column!r} not found (it has {_names(df)})")
        col = F.col(f.column)
        if isinstance(f.value, (int, float)):
            col = col.try_cast(T.DoubleType())  # CSV columns are strings; compare numerically
        df = df.filter(ops[f.op](col, F.lit(f.value)))
    return df


def _read_features(spark: SparkSession, fcfg: FeatureSourceConfig | None) -> DataFrame | None:
    if fcfg is None:
        return None
    table = _read_table(spark, fcfg.format, fcfg.path, fcfg.csv_delimiter, fcfg.csv_header)
    missing = [c for c in [fcfg.id_col, *fcfg.columns] if c not in table.columns]
    if missing:
        raise SourceError(f"feature table {fcfg.path}: column {missing[0]!r} not found "
                          f"(it has {_names(table)})")
    return feature_tokens(table, fcfg.id_col, fcfg.columns)


def feature_tokens(table: DataFrame, id_col: str, columns: list[str]) -> DataFrame:
    tokens = F.array(*[F.when(F.col(c).isNotNull(), F.concat(F.lit(f"{c}="), F.col(c).cast("string")))
                       for c in columns]) if columns else F.array().cast("array<string>")
    return table.select(
        F.col(id_col).try_cast(T.LongType()).alias("id"),
        F.filter(tokens, lambda t: t.isNotNull()).alias("features"),
    )


def _read_movielens(spark: SparkSession, root: Path, filters: list[FilterConfig]) -> RawSource:
    def table(name: str, cols: list[str], sep: str) -> DataFrame:
        schema = T.StructType([T.StructField(c, T.StringType()) for c in cols])
        return spark.read.option("sep", sep).option("encoding", "ISO-8859-1").schema(schema).csv(str(root / name))

    data = apply_filters(table("u.data", ["user", "item", "rating", "timestamp"], "\t"), filters, str(root / "u.data"))
    clicks = data.select(F.col("user").alias("raw_user"), F.col("item").alias("raw_item"),
                         F.col("timestamp").alias("raw_time"))

    users = table("u.user", ["user", "age", "gender", "occupation", "zip"], "|")
    age = F.col("age").try_cast("int")
    bucket = F.lit("56+")
    for bound, label in reversed(ML_AGE_BUCKETS):
        bucket = F.when(age < bound, F.lit(label)).otherwise(bucket)
    user_features = users.select(
        F.col("user").try_cast("long").alias("id"),
        F.filter(F.array(
            F.concat(F.lit("age="), bucket), F.concat(F.lit("gender="), F.col("gender")),
            F.concat(F.lit("occupation="), F.col("occupation")),
            F.concat(F.lit("zip1="), F.substring("zip", 1, 1)),
        ), lambda t: t.isNotNull()).alias("features"),
    )

    genres = [r[0] for r in table("u.genre", ["genre", "index"], "|").where(F.col("index").isNotNull())
              .orderBy(F.col("index").cast("int")).collect()]  # 19 rows: the genre vocabulary
    items = table("u.item", ["item", "title", "release", "video_release", "url", *[f"g{i}" for i in range(len(genres))]], "|")
    year = F.regexp_extract(F.col("release"), r"(\d{4})$", 1)
    decade = F.when(year != "", F.concat(F.lit("decade="), F.substring(year, 1, 3), F.lit("0s")))
    item_features = items.select(
        F.col("item").try_cast("long").alias("id"),
        F.filter(F.array(decade, *[F.when(F.col(f"g{i}") == "1", F.lit(f"genre={g}")) for i, g in enumerate(genres)]),
                 lambda t: t.isNotNull()).alias("features"),
    )
    return RawSource(clicks, "s", None, f"movielens:{root}", user_features, item_features)
