#!/usr/bin/env bash
# Roles of the divspa image (docker/README.md):
#   master                    Spark standalone master on :7077 (web UI :8080)
#   worker                    a worker of $SPARK_MASTER_URL with $SPARK_WORKER_CORES / $SPARK_WORKER_MEMORY
#   submit JOB [ARGS...]      spark-submit jobs/JOB.py to $SPARK_MASTER_URL with conf/spark-defaults.conf
#   divspa [ARGS...]          the divspa command (local mode inside the container)
#   help                      this text;  anything else is executed as is
# DIVSPA_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

DIVSPA_HOME="${DIVSPA_HOME:-/opt/divspa}"
SPARK_HOME="${SPARK_HOME:-$(python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
SPARK_MASTER_URL="${SPARK_MASTER_URL:-spark://master:7077}"
SPARK_MASTER_HOST="${SPARK_MASTER_HOST:-$(hostname)}"
SPARK_WORKER_CORES="${SPARK_WORKER_CORES:-2}"
SPARK_WORKER_MEMORY="${SPARK_WORKER_MEMORY:-8g}"

run() {
  if [ "${DIVSPA_DRY_RUN:-0}" = 1 ]; then printf '%s\n' "$*"; exit 0; fi
  exec "$@"
}

role="${1:-help}"
shift || true
case "$role" in
  master)
    run "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host "$SPARK_MASTER_HOST" --port 7077 --webui-port 8080 "$@" ;;
  worker)
    run "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$SPARK_MASTER_URL" \
      --cores "$SPARK_WORKER_CORES" --memory "$SPARK_WORKER_MEMORY" --work-dir /tmp/spark-work --webui-port 8081 "$@" ;;
  submit)
    job="${1:?usage: submit JOB [ARGS...] (a file of jobs/ without .py, e.g. pipeline)}"
    shift
    if [ ! -f "$DIVSPA_HOME/jobs/$job.py" ]; then
      echo "divspa-entrypoint: no job $job; jobs are: $(cd "$DIVSPA_HOME/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
      exit 2
    fi
    jars=()  # delta-spark and hadoop-aws, fetched by Maven when the image was built
    if [ -d "${DIVSPA_JARS:-}" ]; then jars=(--jars "$(python3 -m divspa.jars)"); fi
    run "$SPARK_HOME/bin/spark-submit" --master "$SPARK_MASTER_URL" \
      --properties-file "$DIVSPA_HOME/conf/spark-defaults.conf" "${jars[@]}" "$DIVSPA_HOME/jobs/$job.py" "$@" ;;
  divspa)
    run divspa "$@" ;;
  help|-h|--help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    run "$role" "$@" ;;
esac
