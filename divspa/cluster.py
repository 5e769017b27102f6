"""A Spark standalone cluster on this machine, from the pip-installed Spark, bound to 127.0.0.1.

It exists so the cluster tests (and anyone curious) can run the jobs the way users do, with
`spark-submit --master spark://...`, real executors in separate JVMs, and workers that can be
killed. Each daemon runs in its own process group: killing a worker's group takes its executors
and their Python workers with it, as losing a node would.

    divspa cluster start [--workers 2] [--dir .divspa-cluster]
    divspa cluster status | stop [--dir .divspa-cluster]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STATE_FILE = "cluster.json"


def spark_home() -> Path:
    import pyspark

    return Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class StandaloneCluster:
    """A master and `workers` workers; the state (ports, pids) lives in `workdir/cluster.json`."""

    workdir: Path
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "2g"
    port: int = 7077
    webui_port: int = 8080
    master_pid: int | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    @property
    def webui(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 90) -> StandaloneCluster:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if (self.workdir / STATE_FILE).is_file():
            old = StandaloneCluster.load(self.workdir)
            if old.master_pid and _alive(old.master_pid):
                raise RuntimeError(f"a cluster from {self.workdir} is already running at {old.url} (stop it first)")
        self.master_pid = self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", HOST,
                                                 "--port", str(self.port), "--webui-port", str(self.webui_port)])
        self._save()
        self._wait(lambda s: s.get("status") == "ALIVE", timeout_s, "the master to come up")
        for i in range(self.workers):
            work = self.workdir / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self.worker_pids.append(self._spawn(f"worker-{i}", [
                "org.apache.spark.deploy.worker.Worker", self.url, "--host", HOST, "--cores", str(self.cores_per_worker),
                "--memory", self.memory_per_worker, "--work-dir", str(work), "--webui-port", str(free_port())]))
            self._save()
        self._wait(lambda s: self._alive_workers(s) >= self.workers, timeout_s, f"{self.workers} workers to register")
        log.info("standalone cluster up at %s (web UI %s), %d workers x %d cores", self.url, self.webui, self.workers,
                 self.cores_per_worker)
        return self

    def stop(self, grace_s: float = 10) -> None:
        pids = [p for p in [*self.worker_pids, self.master_pid] if p]
        for pid in pids:
            _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            _kill_group(pid, signal.SIGKILL)
        (self.workdir / STATE_FILE).unlink(missing_ok=True)
        log.info("standalone cluster at %s stopped", self.url)

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker `index` and everything it started (executors, Python workers): a lost node."""
        pid = self.worker_pids[index]
        _kill_group(pid, signal.SIGKILL)
        return pid

    def executor_ids(self, index: int) -> list[str]:
        """Ids of the executors running under worker `index` (its process group), from /proc."""
        ids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.getpgid(int(proc.name)) != self.worker_pids[index]:
                    continue
                args = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, ProcessLookupError):
                continue
            if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in args and b"--executor-id" in args:
                ids.append(args[args.index(b"--executor-id") + 1].decode())
        return ids

    # --- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        """The master's own view (`/json`): status, workers with their states, applications."""
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=5) as r:
            return json.load(r)

    @staticmethod
    def _alive_workers(state: dict) -> int:
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def _wait(self, ok, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.master_pid and not _alive(self.master_pid):
                raise RuntimeError(f"the Spark master exited; see {self.workdir / 'master.log'}")
            try:
                if ok(self.state()):
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} ({last}); logs in {self.workdir}")

    def _spawn(self, name: str, args: list[str]) -> int:
        env = dict(os.environ, SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP=HOST,
                   SPARK_LOG_DIR=str(self.workdir), SPARK_WORKER_DIR=str(self.workdir))
        # Executors' Python: the interpreter (and so the venv) that started the cluster, unless the
        # application says otherwise with spark.pyspark.python.
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the daemon owns it from here
        proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        out.close()
        return proc.pid

    def _save(self) -> None:
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        (self.workdir / STATE_FILE).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, workdir: Path | str) -> StandaloneCluster:
        path = Path(workdir) / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no cluster state in {path} (was it started with this --dir?)")
        data = json.loads(path.read_text())
        data["workdir"] = Path(data["workdir"])
        return cls(**data)


def main(argv: list[str]) -> int:
    """`divspa cluster start|stop|status`."""
    import argparse

    p = argparse.ArgumentParser(prog="divspa cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--dir", default=".divspa-cluster", help="state and logs (default .divspa-cluster)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1, help="cores per worker")
    p.add_argument("--memory", default="2g", help="memory per worker")
    p.add_argument("--port", type=int, default=7077)
    p.add_argument("--webui-port", type=int, default=8080)
    args = p.parse_args(argv)
    try:
        return _run(args)
    except (OSError, RuntimeError, TimeoutError) as exc:  # a missing state file, a busy port, a dead daemon
        print(f"divspa cluster: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.action == "start":
        c = StandaloneCluster(Path(args.dir), args.workers, args.cores, args.memory, args.port, args.webui_port).start()
        print(f"master {c.url} (pid {c.master_pid}), web UI {c.webui}; workers pids {c.worker_pids}; "
              f"logs in {c.workdir}\nstop with: divspa cluster stop --dir {args.dir}")
        return 0
    c = StandaloneCluster.load(args.dir)
    if args.action == "stop":
        c.stop()
        print(f"stopped {c.url}")
        return 0
    s = c.state()
    print(f"{c.url}: {s.get('status')}, workers {StandaloneCluster._alive_workers(s)}/{len(s.get('workers', []))} "
          f"alive, running apps {len(s.get('activeapps', []))}")
    return 0
