#!/usr/bin/env bash
# The newcomer's entry point (see README):
#   ./dev.sh demo   set up .venv (idempotent) and run the pipeline on the embedded synthetic default
#   ./dev.sh test   set up .venv (idempotent) and run the test suite
# Other sub-commands: setup (only set up), lint (ruff).
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
    log "installing pinned dependencies (first run downloads pyspark, ~450 MB)"
    "$VENV/bin/python" -m pip install -q -c constraints.txt "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
    rm -f "$VENV"/.divspa-installed-*
    touch "$stamp"
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
    exec "$VENV/bin/python" -m pytest "$@" ;;
  lint)
    setup
    exec "$VENV/bin/ruff" check . ;;
  *)
    echo "usage: ./dev.sh {demo|test|setup|lint} [args...]" >&2; exit 2 ;;
esac
