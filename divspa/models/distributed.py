"""Training a model, in this process or as N data-parallel ranks through Spark's TorchDistributor.

`train.processes: 1` is the in-process trainer. With N > 1, `TorchDistributor` (torchrun) starts
N ranks on the driver's machine (`train.distributor: local`) or as barrier tasks on executors
(`cluster`); each rank runs `Trainer.fit` under DistributedDataParallel on its own share of the
example table's work units. Everything a rank needs travels in one picklable `TrainJob`: the
initialised model as checkpoint bytes (every rank starts from the same weights), the example
table's snapshot pinned once on the driver (every rank reads the same version, by URI), and the
storage settings. Rank 0 validates, and at the end writes the checkpoint (whole or not at all);
the driver reads the figures rank 0 returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from divspa import storage
from divspa.config import Config
from divspa.errors import TrainingError
from divspa.models.checkpoint import ModelBundle, load_checkpoint, save_checkpoint, to_bytes
from divspa.models.trainer import Trainer, TrainReport, pick_device
from divspa.snapshot import Snapshot

log = logging.getLogger(__name__)
TrainerKind = Literal["base", "divspa"]


@dataclass
class TrainJob:
    """What every rank needs to train one model and what rank 0 needs to save it; picklable."""

    cfg: Config
    kind: TrainerKind
    snapshot: Snapshot  # the example table at the version all ranks read
    run_id: str
    where: dict[str, str] | None
    epochs: int | None  # None: early stopping on validation HR (Trainer.fit)
    checkpoint: str  # where the trained model is written
    bundle: bytes = b""  # the initialised model as checkpoint bytes (filled by `train`)
    store: storage.StorageSettings | None = None


def trainer_for(kind: TrainerKind) -> type[Trainer]:
    if kind == "divspa":
        from divspa.models.divspa import DivspaTrainer

        return DivspaTrainer
    return Trainer


def _finish(bundle: ModelBundle, trainer: Trainer, report: TrainReport, path: str) -> None:
    bundle.model = trainer.model.cpu()
    bundle.meta.update({"best_epoch": report.best_epoch, "val_hr": report.best_val_hr,
                        "processes": trainer.world_size})
    if trainer.false_negatives is not None:  # what UFNRec did: when reversal started, what it kept
        tcfg = trainer.tcfg
        bundle.meta["false_negatives"] = {"reversal_after": report.reversal_after, "reversed": report.reversed,
                                          "reverse": tcfg.ufn_reverse,
                                          "consistency": tcfg.ufn_consistency, "ema_decay": tcfg.ufn_ema_decay,
                                          "memory_bytes": trainer.false_negatives.memory.nbytes}
    save_checkpoint(path, bundle)


def train(job: TrainJob, bundle: ModelBundle) -> TrainReport:
    """Train `bundle.model` on the job's examples and write its checkpoint; `bundle.model` is
    the trained model afterwards (read back from the checkpoint when ranks trained it)."""
    tcfg = job.cfg.train
    if tcfg.processes == 1:
        trainer = trainer_for(job.kind)(job.cfg, bundle, job.snapshot.dataset(), job.run_id, where=job.where)
        report = trainer.fit(job.epochs)
        _finish(bundle, trainer, report, job.checkpoint)
        return report
    from pyspark.ml.torch.distributor import TorchDistributor

    job.bundle, job.store = to_bytes(bundle), storage.settings()
    where = "the driver's machine" if tcfg.distributor == "local" else "executors"
    log.info("training %s with %d processes on %s (TorchDistributor, %s), examples version %d",
             bundle.version, tcfg.processes, where, "nccl" if _uses_cuda(job.cfg) else "gloo", job.snapshot.version)
    distributor = TorchDistributor(num_processes=tcfg.processes, local_mode=tcfg.distributor == "local",
                                   use_gpu=_uses_cuda(job.cfg))
    try:
        with _ranks_output_to_log():
            figures = distributor.run(rank_main, job)
    except RuntimeError as exc:
        raise TrainingError(_one_line(exc, tcfg.processes)) from None
    if not isinstance(figures, dict):
        raise TrainingError(f"training with {tcfg.processes} processes returned no result from rank 0")
    trained = load_checkpoint(job.checkpoint)
    bundle.model, bundle.meta = trained.model, trained.meta
    return TrainReport(**figures)


def rank_main(job: TrainJob) -> dict[str, Any]:
    """One rank (run by torchrun): train on this rank's share; rank 0 writes the checkpoint."""
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    # Ranks other than 0 repeat rank 0's epoch lines (the figures are all-reduced): warnings only.
    logging.basicConfig(level=job.cfg.run.log_level if rank == 0 else logging.WARNING, stream=sys.stderr, force=True,
                        format=f"rank {rank} %(levelname)s %(name)s: %(message)s")
    if job.store is not None:
        storage.configure(job.store.spark_conf, job.store.extra_options)
    tcfg = job.cfg.train
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    if _uses_cuda(job.cfg):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if _uses_cuda(job.cfg) else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(job.cfg.run.seed + rank)  # dropout and any other torch draw: per rank, reproducible
        bundle = load_checkpoint(job.bundle)
        trainer = trainer_for(job.kind)(job.cfg, bundle, job.snapshot.dataset(), job.run_id, where=job.where,
                                        shard=(rank, world))
        report = trainer.fit(job.epochs)
        if rank == 0:
            _finish(bundle, trainer, report, job.checkpoint)
        # Every rank returns rank 0's figures (once its checkpoint is written): TorchDistributor's
        # script has each rank write its return value to one file, the last writer winning, and a
        # rank that returned None after rank 0 lost the result (seen once in CI).
        figures = [asdict(report) if rank == 0 else None]
        dist.broadcast_object_list(figures, src=0)
        return figures[0]
    finally:
        dist.destroy_process_group()


def _uses_cuda(cfg: Config) -> bool:
    return pick_device(cfg.train.device).type == "cuda"


def _one_line(exc: RuntimeError, processes: int) -> str:
    """TorchDistributor's error carries 100 lines of the ranks' output (already in the log)."""
    text = str(exc)
    code = re.search(r"return code (-?\d+)", text)
    cause = f"a rank exited with code {code.group(1)}" if code else text.splitlines()[0][:200]
    return f"training with {processes} processes failed: {cause} (the ranks' output is in the log above)"


class _LogLines:
    """A stdout stand-in that sends each line the ranks print to the run's log."""

    def __init__(self, target: logging.Logger) -> None:
        self.target, self.pending = target, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.target.info("%s", line)
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.target.info("%s", self.pending)
        self.pending = ""


@contextlib.contextmanager
def _ranks_output_to_log() -> Iterator[None]:
    """TorchDistributor copies the ranks' output to sys.stdout; the run's log is where it belongs."""
    saved, lines = sys.stdout, _LogLines(logging.getLogger("divspa.ranks"))
    sys.stdout = lines  # type: ignore[assignment]
    try:
        yield
    finally:
        lines.flush()
        sys.stdout = saved
