"""The one SparkSession factory.

Local runs get `local[*]` (or the configured master); under spark-submit the launcher has
already chosen the master and resources, and we only add the settings the pipeline relies on
(Arrow, UTC, microsecond Parquet timestamps) without overriding what the submitter set.
"""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from divspa.config import SparkConfig

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
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
        )
    builder = builder.config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    for key, value in REQUIRED_CONF.items():
        builder = builder.config(key, value)
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark session: master=%s, version=%s, shuffle partitions=%s", spark.sparkContext.master,
             spark.version, spark.conf.get("spark.sql.shuffle.partitions"))
    return spark


def delta_spark_available(spark: SparkSession) -> bool:
    """True when delta-spark's JVM classes are on the session's classpath (a cluster with the jars)."""
    try:
        jvm = spark.sparkContext._jvm
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", True, jvm.Thread.currentThread().getContextClassLoader())
        return True
    except Exception:
        return False
