#!/usr/bin/env bash
# The newcomer's entry point (see README):
#   ./dev.sh demo   set up .venv (idempotent) and run the pipeline on the embedded synthetic default
#   ./dev.sh test   set up .venv (idempotent) and run the test suite
# Other sub-commands: setup (only set up), lint (ruff),
#   package [--env]  what spark-submit ships to executors (docs/CLUSTER.md): the wheel, the same
#                    wheel as a --py-files zip, and with --env a venv-pack archive for spark.archives.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${DIVSPA_VENV:-.venv}"

log() { printf '[dev.sh] %s\n' "$*" >&2; }

ensure_java() {
  if command -v java >/dev/null 2>&1; then return; fi
  log "java not found: installing openjdk-17-jre-headless (Spark needs a JVM)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    log "not root: install Java 17 yourself (e.g. apt-get install openjdk-17-jre-headless)"; exit 1
  fi
}

pick_python() {
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$p"; return
    fi
  done
  log "Python 3.11 is required (torch 2.13.0 CPU wheel is cp311)"; exit 1
}

setup() {
  ensure_java
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$(pick_python)" -m venv "$VENV"
  fi
  # Re-install only when the dependency spec changed: the stamp is a hash of both files.
  local stamp
  stamp="$VENV/.divspa-installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    log "installing pinned dependencies (first run downloads ~3.2 GB: torch with its CUDA libraries, pyspark)"
    "$VENV/bin/python" -m pip install -q -c constraints.txt "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
    rm -f "$VENV"/.divspa-installed-*
    touch "$stamp"
  fi
  fetch_jars
}

# The JVM jars for native Delta and s3a:// (conf/jars.pom.xml): Maven resolves them into ~/.m2
# once; the venv records their classpath (divspa/jars.py reads it). Without Maven, Delta runs
# embedded (delta-rs commits) and every session says so in its log.
fetch_jars() {
  local classpath="$VENV/divspa-jars.classpath" stamp
  stamp="$VENV/.divspa-jars-$(sha256sum conf/jars.pom.xml | cut -c1-16)"
  if [ -f "$stamp" ] && [ -f "$classpath" ]; then return; fi
  if ! command -v mvn >/dev/null 2>&1; then
    log "mvn not found: no delta-spark jars; Delta tables are committed by delta-rs (embedded mode)"
    return
  fi
  log "fetching JVM jars with Maven: delta-spark, hadoop-aws and the AWS SDK bundle (first time ~720 MB into ~/.m2)"
  local out="$classpath.tmp"
  case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
  if mvn -q -B -Dstyle.color=never -f conf/jars.pom.xml dependency:build-classpath -DincludeScope=runtime \
       -Dmdep.outputFile="$out" >"$VENV/divspa-jars.mvn.log" 2>&1; then
    mv "$classpath.tmp" "$classpath"
    rm -f "$VENV"/.divspa-jars-*
    touch "$stamp"
  else
    log "Maven could not resolve conf/jars.pom.xml (see $VENV/divspa-jars.mvn.log): Delta runs embedded"
    rm -f "$classpath.tmp"
  fi
}

package() {
  setup
  local version
  version="$("$VENV/bin/python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
  rm -f dist/divspa-"$version"*
  "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w dist .
  # A wheel is a zip with the package at its root; Spark puts only .zip/.egg/.py on executors' path.
  cp "dist/divspa-$version-py3-none-any.whl" "dist/divspa-$version-py-files.zip"
  log "built dist/divspa-$version-py3-none-any.whl and dist/divspa-$version-py-files.zip (for --py-files)"
  if [ "${1:-}" = "--env" ]; then
    # venv-pack refuses editable installs, so the archive is packed from a fresh venv with the wheel.
    local env=build/pack-env
    rm -rf "$env"
    "$(pick_python)" -m venv "$env"
    "$env/bin/python" -m pip install -q -c constraints.txt "torch==2.13.0"
    "$env/bin/python" -m pip install -q -c constraints.txt "dist/divspa-$version-py3-none-any.whl" venv-pack
    "$env/bin/venv-pack" -q -p "$env" -o "dist/divspa-env-$version.tar.gz" --force
    log "packed dist/divspa-env-$version.tar.gz ($(du -h "dist/divspa-env-$version.tar.gz" | cut -f1)): spark-submit --archives dist/divspa-env-$version.tar.gz#env"
  fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    exec "$VENV/bin/divspa" run --conf conf/default.yaml "$@" ;;
  test)
    setup
    "$VENV/bin/ruff" check .
    # Both Delta modes are tested; CI must not skip the native one for want of jars.
    if [ "${CI:-}" = true ]; then export DIVSPA_REQUIRE_NATIVE=1; fi
    exec "$VENV/bin/python" -m pytest "$@" ;;
  package) package "$@" ;;
  lint)
    setup
    exec "$VENV/bin/ruff" check . ;;
  *)
    echo "usage: ./dev.sh {demo|test|setup|package|lint} [args...]" >&2; exit 2 ;;
esac
