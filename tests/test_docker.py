"""What can be checked of the runtime image without Docker: the entrypoint's roles, the pins, the files."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"


def entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, DIVSPA_DRY_RUN="1", DIVSPA_HOME=str(REPO), SPARK_HOME="/opt/spark", **env)
    return subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), *args], capture_output=True, text=True,
                          env=full_env)


def test_entrypoint_roles():
    master = entrypoint("master", SPARK_MASTER_HOST="master")
    assert master.returncode == 0, master.stderr
    assert master.stdout.split() == ["/opt/spark/bin/spark-class", "org.apache.spark.deploy.master.Master",
                                     "--host", "master", "--port", "7077", "--webui-port", "8080"]
    worker = entrypoint("worker", SPARK_MASTER_URL="spark://m:7077", SPARK_WORKER_CORES="3")
    assert worker.stdout.split()[:6] == ["/opt/spark/bin/spark-class", "org.apache.spark.deploy.worker.Worker",
                                         "spark://m:7077", "--cores", "3", "--memory"]
    submit = entrypoint("submit", "augment", "--conf", "conf/default.yaml", SPARK_MASTER_URL="spark://m:7077")
    assert submit.stdout.split() == ["/opt/spark/bin/spark-submit", "--master", "spark://m:7077", "--properties-file",
                                     f"{REPO}/conf/spark-defaults.conf", f"{REPO}/jobs/augment.py", "--conf",
                                     "conf/default.yaml"]
    help_text = entrypoint("help")
    assert help_text.returncode == 0 and "submit JOB" in help_text.stdout


def test_entrypoint_rejects_unknown_job():
    res = entrypoint("submit", "no_such_job")
    assert res.returncode == 2
    assert "no job no_such_job" in res.stderr and "augment" in res.stderr


def test_every_job_the_entrypoint_can_submit_exists():
    for job in REPO.glob("jobs/*.py"):
        res = entrypoint("submit", job.stem)
        assert res.returncode == 0 and res.stdout.split()[5] == str(job)


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version.strip()
    return pins


def test_dockerfile_installs_the_pinned_versions():
    text = (DOCKER / "Dockerfile").read_text()
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    torch = re.search(r"torch==([\w.+]+)", text)
    assert torch and torch.group(1) == _constraints()["torch"]
    assert "FROM python:3.11" in text and "openjdk-17" in text
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.M):  # not the Maven stage's output
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which the repository lacks"


def test_compose_services_use_the_image_and_known_roles():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    roles = {"master", "worker", "submit", "divspa", "help"}
    for name, svc in compose["services"].items():
        assert (REPO / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        # the image's entrypoint is `tini -- divspa-entrypoint ROLE ...`: ROLE is the first argument after it
        args = [*svc.get("entrypoint", ["tini", "--", "divspa-entrypoint"])[3:], *svc["command"]]
        role = args[0]
        assert role in roles, (name, role)
    workers = [s for s in compose["services"] if s.startswith("worker")]
    assert len(workers) >= 2


def test_dev_sh_setup_is_idempotent_and_refuses_unknown_commands():
    """`./dev.sh demo` and `./dev.sh test` set up first: on a set-up venv that must install nothing."""
    venv = Path(sys.prefix)
    spec = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "constraints.txt").read_bytes())
    if not (venv / f".divspa-installed-{spec.hexdigest()[:16]}").exists():
        pytest.skip(f"{venv} was not set up by ./dev.sh for this dependency spec")
    env = dict(os.environ, DIVSPA_VENV=str(venv))
    setup = subprocess.run(["bash", str(REPO / "dev.sh"), "setup"], capture_output=True, text=True, env=env)
    assert setup.returncode == 0, setup.stderr
    assert "installing" not in setup.stderr and "fetching" not in setup.stderr, setup.stderr
    unknown = subprocess.run(["bash", str(REPO / "dev.sh"), "deploy"], capture_output=True, text=True, env=env)
    assert unknown.returncode == 2 and unknown.stderr.startswith("usage: ./dev.sh {demo|test|"), unknown.stderr
