"""The JVM jars divspa adds to Spark: delta-spark (native Delta) and hadoop-aws (s3a://).

`./dev.sh setup` resolves `conf/jars.pom.xml` with Maven, once (the jars stay in ~/.m2), and
writes their classpath to `<venv>/divspa-jars.classpath`. `DIVSPA_JARS` may name another such
file or a directory of jars (the runtime image has one). Jars whose artifact Spark already
ships (Hadoop client, Jackson, Parquet, Scala...) are dropped: Spark's own versions must win.

Without any jars (a machine without Maven) the Delta layer runs embedded, on delta-rs alone.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "DIVSPA_JARS"
CLASSPATH_FILE = "divspa-jars.classpath"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
_ARTIFACT = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[^/]*)\.jar$")


def artifact_of(jar: str) -> tuple[str, str]:
    """(artifactId, version) from a Maven jar file name."""
    m = _ARTIFACT.match(os.path.basename(jar))
    return (m["artifact"], m["version"]) if m else (os.path.basename(jar), "")


def delta_artifact() -> str:
    """The delta-spark Maven coordinates for the installed pip packages (as delta/pip_utils.py builds them)."""
    from importlib.metadata import version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def _spark_jar_artifacts() -> set[str]:
    import pyspark

    jars = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
    return {artifact_of(j.name)[0] for j in jars.glob("*.jar")}


@cache
def find_jars() -> tuple[str, ...]:
    """Absolute paths of the jars to add, or () when none were set up."""
    source = os.environ.get(ENV) or os.path.join(sys.prefix, CLASSPATH_FILE)
    if os.path.isdir(source):
        candidates = sorted(str(p) for p in Path(source).glob("*.jar"))
    elif os.path.isfile(source):
        candidates = [p for p in Path(source).read_text().strip().split(os.pathsep) if p]
    else:
        return ()
    shipped = _spark_jar_artifacts()
    jars = tuple(p for p in candidates if artifact_of(p)[0] not in shipped and os.path.isfile(p))
    if not any(artifact_of(p)[0].startswith("delta-spark") for p in jars):
        log.warning("%s lists no delta-spark jar: Delta runs embedded (delta-rs)", source)
        return ()
    return jars


def delta_conf(jars: tuple[str, ...]) -> dict[str, str]:
    """Session settings that load the jars and make Spark SQL resolve Delta tables."""
    return {"spark.jars": ",".join(jars), "spark.sql.extensions": DELTA_EXTENSION,
            "spark.sql.catalog.spark_catalog": DELTA_CATALOG}


def prune(directory: str) -> list[str]:
    """Delete the jars of `directory` whose artifact Spark ships (for images built with Maven)."""
    shipped = _spark_jar_artifacts()
    removed = [str(p) for p in Path(directory).glob("*.jar") if artifact_of(p.name)[0] in shipped]
    for path in removed:
        os.remove(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    """`python -m divspa.jars`: the jars as spark-submit's --jars wants them (comma-separated);
    `--prune DIR`: drop from DIR the jars Spark already ships."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--prune"] and len(args) == 2:
        print(f"removed {len(prune(args[1]))} jars that Spark ships")
        return 0
    jars = find_jars()
    if not jars:
        print(f"no delta-spark jars found ({ENV} or {os.path.join(sys.prefix, CLASSPATH_FILE)})", file=sys.stderr)
        return 1
    print(",".join(jars))
    return 0


if __name__ == "__main__":
    sys.exit(main())
