"""The one SparkSession factory.

Local runs get `local[*]` (or the configured master); under spark-submit the launcher has
already chosen the master and resources, and we only add the settings the pipeline relies on
(Arrow, UTC, microsecond Parquet timestamps) without overriding what the submitter set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from pyspark.sql import SparkSession

from divspa import jars as jarlib
from divspa import storage
from divspa.config import SparkConfig
from divspa.errors import ConfigError

log = logging.getLogger(__name__)

# Settings every job relies on for correctness, not just speed.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Delta's `timestamp` is UTC microseconds; INT96 (Spark's default) is not readable as such.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # Our writes create their own staging directory per transaction; no _SUCCESS markers needed.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.sources.partitionOverwriteMode": "static",
}


def under_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (which owns the master)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or os.environ.get("SPARK_SUBMIT_MODE") == "1"


def console_progress() -> str:
    """Spark's stage progress bar on a terminal; never in a scheduler's or CI's log, where its
    carriage returns become noise. spark.conf can still set it either way."""
    return "true" if sys.stderr.isatty() else "false"


def get_spark(cfg: SparkConfig) -> SparkSession:
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(cfg.app_name)
    if not under_spark_submit():
        # Executors in local mode must run the same interpreter (and so the same venv) as we do.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # bind to loopback only
        builder = (
            builder.master(cfg.master)
            .config("spark.driver.memory", cfg.driver_memory)
            .config("spark.ui.enabled", str(cfg.ui).lower())
            .config("spark.ui.showConsoleProgress", console_progress())
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
        )
    builder = builder.config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    for key, value in REQUIRED_CONF.items():
        builder = builder.config(key, value)
    for key, value in _delta_conf(cfg).items():
        builder = builder.config(key, value)
    for key, value in storage.StorageSettings(cfg.conf).spark_defaults().items():
        builder = builder.config(key, value)
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark session: master=%s, version=%s, shuffle partitions=%s", spark.sparkContext.master,
             spark.version, spark.conf.get("spark.sql.shuffle.partitions"))
    return spark


def _delta_conf(cfg: SparkConfig) -> dict[str, str]:
    """What makes the session speak Delta natively, when delta-spark's jars can be had.

    Locally the jars set up by ./dev.sh are added. Under spark-submit the submitter chose the
    classpath (--jars / --packages): the Delta SQL settings are added when it holds delta-spark.
    """
    if cfg.delta == "embedded":
        return {}
    if under_spark_submit():
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()  # SparkConf() reads spark-submit's settings from the JVM only
        submitted = SparkConf()
        keys = ("spark.jars", "spark.jars.packages", "spark.driver.extraClassPath")
        classpath = ",".join(submitted.get(k, "") or "" for k in keys)
        image_jars = os.environ.get(jarlib.ENV)  # the runtime image's jar directory, on extraClassPath
        if "delta-spark" not in classpath and not (image_jars and image_jars in classpath):
            return {}
        conf = {"spark.sql.extensions": jarlib.DELTA_EXTENSION, "spark.sql.catalog.spark_catalog": jarlib.DELTA_CATALOG}
        return {k: v for k, v in conf.items() if not submitted.contains(k)}
    found = jarlib.find_jars()
    if not found:
        if cfg.delta == "native":
            raise ConfigError(f"spark.delta = native, but no delta-spark jars were found ({jarlib.ENV} or "
                              f"{jarlib.CLASSPATH_FILE} in the venv): run ./dev.sh setup on a machine with Maven")
        return {}
    # Delta rebuilds table state in this many tasks (default 50): sized like the job's shuffles.
    return {**jarlib.delta_conf(found),
            "spark.databricks.delta.snapshotPartitions": str(cfg.shuffle_partitions)}


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the session has delta-spark's classes and its SQL extension (writes go native)."""
    if jarlib.DELTA_EXTENSION not in (spark.conf.get("spark.sql.extensions", "") or ""):
        return False
    try:
        jvm = spark.sparkContext._jvm
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", True, jvm.Thread.currentThread().getContextClassLoader())
        return True
    except Exception:
        return False


@contextlib.contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Session settings for one stage only: the previous values (or their absence) come back after
    it, so a stage behaves the same whether the stages before it ran in this session or not."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
