"""Training loop for two-tower models: streamed batches, sampled softmax, early stopping.

`Trainer.batch_loss` is the one place the objective lives; the DivSPA trainer overrides it
(and the columns it streams) to add the mix-up term of Eq. 3, so both share the loop, the
sampler, the validation and the checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch
import torch.distributed as dist
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel

from divspa.config import Config, TrainConfig
from divspa.models.catchup_adam import CatchUpAdam
from divspa.models.checkpoint import ModelBundle
from divspa.models.data import encode_examples, encode_users
from divspa.models.loss import NegativeSampler, sampled_softmax_loss
from divspa.reader import stream_tables

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


@dataclass
class TrainReport:
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_hr: float = float("nan")
    val_hr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    examples: int = 0
    epoch_examples: list[int] = field(default_factory=list)  # summed over ranks: each epoch reads every row once
    epoch_s: list[float] = field(default_factory=list)  # each epoch's training time, validation not included
    examples_per_s: float = 0.0
    wall_s: float = 0.0


class Progress:
    """A progress line on a terminal, a log line every `every_s` seconds otherwise."""

    def __init__(self, label: str, total: int | None, every_s: float) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.tty = sys.stderr.isatty()
        self.started = self.last = time.monotonic()

    def update(self, done: int, loss: float) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < self.every_s:
            return
        rate = done / max(now - self.started, 1e-9)
        pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
        msg = f"{self.label}:{pct} {done:,} examples, loss {loss:.4f}, {rate:,.0f} ex/s"
        if self.tty:
            sys.stderr.write("\r" + msg[:120].ljust(120))
            sys.stderr.flush()
            if now - self.last >= self.every_s:
                log.debug(msg)
        else:
            log.info(msg)
        self.last = now

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def distinct_item_vectors(model: torch.nn.Module, *indices: torch.Tensor) -> list[torch.Tensor]:
    """Item vectors for several index tensors, running the model's item tower once per distinct item.

    A batch names the same popular items many times (positives, negatives, augmented
    positives); the tower's cost then follows the distinct items, not the slots.
    """
    flat = torch.cat([i.reshape(-1) for i in indices])
    unique, inverse = torch.unique(flat, return_inverse=True)
    vectors = model.item_vectors(unique)[inverse]
    out, start = [], 0
    for i in indices:
        out.append(vectors[start:start + i.numel()].reshape(*i.shape, -1))
        start += i.numel()
    return out


class Optimizers:
    """Several optimisers stepped as one (dense Adam beside CatchUpAdam for the embeddings)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def flush(self) -> None:
        """Apply the updates an optimiser defers (CatchUpAdam) before the whole model is read."""
        for o in self.optimizers:
            if isinstance(o, CatchUpAdam):
                o.flush()

    def attach(self) -> None:
        """Before training: CatchUpAdam takes its tables over (hooks, sparse gradients)."""
        for o in self.optimizers:
            if isinstance(o, CatchUpAdam):
                o.attach()

    def detach(self) -> None:
        """After training: the model is handed back as dense Adam would leave it, without hooks."""
        for o in self.optimizers:
            if isinstance(o, CatchUpAdam):
                o.detach()


def make_optimizer(model: torch.nn.Module, tcfg: TrainConfig) -> Optimizers:
    """Adam over every parameter; with `train.sparse_embeddings` (the default), the embedding
    tables of at least `train.sparse_min_rows` rows get sparse gradients and CatchUpAdam, which
    gives them dense Adam's updates at the cost of the rows a batch looks up.

    Why: dense gradients make every step zero, fill and Adam-update every row of every table, so
    a step's cost grows with the vocabulary (at 420k items ~364 ms of a 377 ms step:
    benchmarks/vocabulary.py). Coupled weight decay moves every row at every step by its own
    value and DistributedDataParallel all-reduces dense gradients, so with `train.weight_decay`
    or `train.processes > 1` the tables stay dense: the same updates, at the vocabulary's cost."""
    sparse = tcfg.sparse_embeddings and not tcfg.weight_decay and tcfg.processes == 1
    tables = [m for m in model.modules()
              if sparse and isinstance(m, torch.nn.Embedding) and m.num_embeddings >= tcfg.sparse_min_rows]
    if not tables:
        return Optimizers(torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay))
    sparse_ids = {id(m.weight) for m in tables}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    opts: list[torch.optim.Optimizer] = [CatchUpAdam(tables, lr=tcfg.lr)]
    if dense:
        opts.append(torch.optim.Adam(dense, lr=tcfg.lr))
    return Optimizers(*opts)


class Trainer:
    columns = ["user_id", "item_id", "history", "user_features"]

    def __init__(self, cfg: Config, bundle: ModelBundle, dataset: pads.Dataset, run_id: str,
                 where: dict[str, str] | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        """`shard=(rank, world_size)`: this process trains on its share of the examples and, with
        world_size > 1, synchronises gradients with the other ranks (an initialised process group)."""
        self.cfg = cfg
        self.rank, self.world_size = shard
        self.tcfg = cfg.train
        self.bundle = bundle
        self.dataset = dataset
        self.run_id = run_id
        self.device = pick_device(self.tcfg.device)
        self.model = bundle.model.to(self.device)
        self.sampler = NegativeSampler(bundle.item_counts, self.tcfg.negative_sampler, self.tcfg.popularity_power,
                                       cfg.run.seed)
        self.use_logq = self.tcfg.logq_correction and (self.tcfg.negative_sampler != "uniform"
                                                       or self.tcfg.in_batch_negatives)
        counts = torch.cat([torch.zeros(1), bundle.item_counts.to(torch.float64).clamp_min(0)])
        self.popularity = counts / counts.sum().clamp_min(1.0)  # how often an item is a batch positive
        self.optimizer = make_optimizer(self.model, self.tcfg)
        run = pads.field("run_id") == run_id
        for key, value in (where or {}).items():
            run = run & (pads.field(key) == value)
        self.train_filter = run & (pads.field("is_val") == False)  # noqa: E712 (Arrow expression)
        self.val_filter = run & (pads.field("is_val") == True)  # noqa: E712
        self._fitted: dict[int, np.ndarray] | None = None
        # Called with (epoch, validation HR) after each epoch; stage tune's pruner raises from it
        # to stop a trial that trails the earlier ones.
        self.epoch_hook: Callable[[int, float], None] | None = None
        self.train_rows = dataset.count_rows(filter=self.train_filter)
        if self.train_rows == 0:
            raise ValueError(f"train_examples holds no training rows for run {run_id}")

    # --- the objective -------------------------------------------------------------------------

    def batch_loss(self, table: pa.Table) -> torch.Tensor:
        """Eq. 1: sampled softmax of each positive against the batch's shared negatives."""
        batch = encode_examples(table, self.bundle.vocab, self.bundle.mcfg)
        user = self.model.user_vectors(batch.users.to(self.device))
        pos_idx = batch.items.to(self.device)
        neg_idx, logq = self.negatives(pos_idx)
        pos, neg = self.item_vectors(pos_idx, neg_idx)
        neg_logq, pos_logq = (logq[neg_idx], logq[pos_idx]) if logq is not None else (None, None)
        loss = sampled_softmax_loss(user, pos, neg, pos_idx, neg_idx, self.model.omega, neg_logq, pos_logq)
        return loss.mean()

    def negatives(self, pos_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's shared negatives, and the log q table of the logQ correction (None when off)."""
        sampled = self.sampler.sample(self.tcfg.num_negatives).to(self.device)
        if not self.tcfg.in_batch_negatives:
            table = self.sampler.logq_table.to(self.device) if self.use_logq else None
            return sampled, table
        in_batch = pos_idx[pos_idx > 0]
        neg_idx = torch.cat([sampled, in_batch])
        if not self.use_logq:
            return neg_idx, None
        table = self.sampler.mixture_logq_table(len(sampled), len(in_batch), self.popularity)
        return neg_idx, table.to(self.device)

    def item_vectors(self, *indices: torch.Tensor) -> list[torch.Tensor]:
        """The trained model's vectors for several index tensors (`distinct_item_vectors`)."""
        return distinct_item_vectors(self.model, *indices)

    # --- the loop ------------------------------------------------------------------------------

    def batches(self, epoch: int) -> Iterator[pa.Table]:
        """This rank's training batches of one epoch: its work units, in the epoch's shuffled order.

        `train.batch_size` is the optimiser step's batch whatever the number of ranks: each rank
        takes its 1/N of it, so N ranks make the same number of steps per epoch as one process
        (with half the steps, 2 ranks of full batches lost 0.07 test HR@20 in 4 epochs)."""
        return stream_tables(self.dataset, self.columns, self.train_filter,
                             max(1, self.tcfg.batch_size // self.world_size),
                             self.tcfg.shuffle_buffer, self.cfg.run.seed, epoch, shard=(self.rank, self.world_size))

    def _step_fn(self) -> Callable[[pa.Table], torch.Tensor]:
        """The batch objective; across ranks it runs through DDP, whose backward averages the gradients."""
        if self.world_size == 1:
            return self.batch_loss
        objective = _Objective(self)
        return DistributedDataParallel(objective, forward_sync_buffers=False)  # buffers are constants (item tokens)

    def _epoch_seed(self, epoch: int) -> None:
        """Ranks draw different negatives, reproducibly: the sampler is seeded from (seed, epoch, rank).
        One process keeps the single generator it always had (same numbers as before)."""
        if self.world_size > 1:
            seed = np.random.SeedSequence([self.cfg.run.seed, epoch, self.rank]).generate_state(1)[0]
            self.sampler.generator.manual_seed(int(seed))

    def _all_ranks(self, *values: float) -> list[float]:
        """Sums over ranks (identity in one process)."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def _from_rank0(self, value: float) -> float:
        """Rank 0's value on every rank: rank 0 validates, every rank then takes the same decision."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(t, src=0)
        return float(t.item())

    def fit(self, epochs: int | None = None) -> TrainReport:
        """Train with early stopping on validation HR, or for exactly `epochs` epochs (then the
        last weights are kept and validation is only reported)."""
        self.optimizer.attach()
        try:
            return self._fit(epochs)
        finally:
            self.optimizer.detach()

    def _fit(self, epochs: int | None) -> TrainReport:
        fixed = epochs is not None
        epochs = epochs if fixed else self.tcfg.epochs
        report = TrainReport()
        best_state: dict[str, Any] | None = None
        bad_epochs = 0
        started = time.monotonic()
        has_val = self.dataset.count_rows(filter=self.val_filter) > 0
        step = self._step_fn()
        label = f"rank {self.rank}: " if self.world_size > 1 else ""
        for epoch in range(1, epochs + 1):
            self.model.train()
            self._epoch_seed(epoch)
            progress = Progress(f"{label}epoch {epoch}/{epochs}", self.train_rows // self.world_size,
                                self.tcfg.log_every_s)
            total, seen = 0.0, 0
            epoch_started = time.monotonic()
            # Ranks may hold different numbers of batches: Join lets the ones that finish first
            # shadow the others' gradient all-reduces instead of hanging.
            with Join([step]) if self.world_size > 1 else contextlib.nullcontext():
                for table in self.batches(epoch):
                    loss = step(table)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    total += float(loss.detach()) * table.num_rows
                    seen += table.num_rows
                    progress.update(seen, total / seen)
            progress.close()
            self.optimizer.flush()
            total, seen_all = self._all_ranks(total, seen)
            report.epoch_s.append(time.monotonic() - epoch_started)
            seen = int(seen_all)
            report.examples += seen
            report.epoch_examples.append(seen)
            report.train_loss.append(total / max(seen, 1))
            report.epochs_run = epoch
            val = self.validate() if has_val and self.rank == 0 else -report.train_loss[-1]
            val = self._from_rank0(val)
            report.val_hr.append(val)
            log.info("epoch %d: train loss %.4f, val HR@%d %.4f", epoch, report.train_loss[-1], self.tcfg.val_k, val)
            if self.epoch_hook is not None:
                self.epoch_hook(epoch, val)
            if fixed:
                report.best_val_hr, report.best_epoch = val, epoch
                continue
            if best_state is None or val > report.best_val_hr:
                report.best_val_hr, report.best_epoch = val, epoch
                best_state = copy.deepcopy(self.model.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
                if bad_epochs >= self.tcfg.patience:
                    log.info("early stopping after epoch %d: best val HR@%d %.4f at epoch %d", epoch,
                             self.tcfg.val_k, report.best_val_hr, report.best_epoch)
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        report.wall_s = time.monotonic() - started
        report.examples_per_s = report.examples / max(report.wall_s, 1e-9)
        return report

    def fitted_items(self) -> dict[int, np.ndarray]:
        """Per validation user, the item indices of their fitted train clicks (read once).

        Validation masks them as the test evaluation masks train items: unmasked, a model's top-K
        is partly the user's own past clicks, and a student that learnt to rank augmented items
        there scored lower on validation than on test, stopping at the wrong epoch.
        """
        if self._fitted is None:
            users = [t.column("user_id") for t in stream_tables(self.dataset, ["user_id"], self.val_filter, 65536,
                                                                 limit=self.tcfg.max_val_examples)]
            ids = pc.unique(pa.chunked_array(users, pa.int64())) if users else pa.array([], pa.int64())
            rows = self.dataset.to_table(columns=["user_id", "item_id"],
                                         filter=self.train_filter & pads.field("user_id").isin(ids))
            user = rows.column("user_id").to_numpy()
            item = self.bundle.vocab.item_index(rows.column("item_id").to_numpy())
            order = np.argsort(user, kind="stable")
            user, item = user[order], item[order]
            starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.array([], int)
            self._fitted = {int(u): items for u, items in zip(user[starts], np.split(item, starts[1:]), strict=True)}
        return self._fitted

    @torch.no_grad()
    def validate(self) -> float:
        """HR@val_k of the held-out latest train clicks against every item the user has not been
        fitted on (deterministic); a validation click of an item the user was fitted on is skipped."""
        self.model.eval()
        items = self.model.item_vectors()
        fitted = self.fitted_items()
        hits = n = 0
        for table in stream_tables(self.dataset, self.columns, self.val_filter, 1024,
                                   limit=self.tcfg.max_val_examples):
            batch = encode_examples(table, self.bundle.vocab, self.bundle.mcfg)
            scores = self.model.user_vectors(batch.users.to(self.device)) @ items.T
            target = batch.items.to(self.device)
            rows, cols = [], []
            for r, u in enumerate(table.column("user_id").to_numpy()):
                seen = fitted.get(int(u))
                if seen is not None:
                    rows.append(np.full(len(seen), r))
                    cols.append(seen)
            known = target > 0
            if rows:
                r_idx = torch.from_numpy(np.concatenate(rows)).to(self.device)
                c_idx = torch.from_numpy(np.concatenate(cols).astype(np.int64)).to(self.device)
                ok = c_idx > 0  # 0: an item outside the vocabulary
                r_idx, c_idx = r_idx[ok], c_idx[ok]
                refitted = torch.zeros_like(known)
                refitted[r_idx[c_idx == target[r_idx]]] = True
                known &= ~refitted
                scores[r_idx, c_idx - 1] = float("-inf")
            k = min(self.tcfg.val_k, scores.shape[1])
            top = scores.topk(k, dim=1).indices + 1
            hits += int(((top == target.unsqueeze(1)).any(1) & known).sum())
            n += int(known.sum())
        return hits / n if n else 0.0


class _Objective(torch.nn.Module):
    """The trainer's batch loss as a module, so DistributedDataParallel can wrap it: DDP hooks the
    model's parameters (registered here) and its forward is the objective, Eq. 1 or Eq. 3."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        self._loss = trainer.batch_loss  # a bound method, not a module: nothing else is registered

    def forward(self, table: pa.Table) -> torch.Tensor:
        return self._loss(table)


@torch.no_grad()
def user_vectors_for(bundle: ModelBundle, table: pa.Table, device: torch.device | None = None) -> np.ndarray:
    """User vectors for rows with history and user_features: the code the export runs on executors."""
    users = encode_users(table, bundle.vocab, bundle.mcfg)
    if device is not None:
        users = users.to(device)
    return bundle.model.user_vectors(users).cpu().numpy()
