"""Training loop for two-tower models: streamed batches, sampled softmax, early stopping.

`Trainer.batch_loss` is the one place the objective lives; the DivSPA trainer overrides it
(and the columns it streams) to add the mix-up term of Eq. 3, and `with_ssl` adds `model.ssl`'s
self-supervised term (models/rfm.py) to either, so both share the loop, the
negatives (models/negatives.py), the validation (models/validation.py), the optimisers
(models/optimizers.py), what ranks share (models/ranks.py) and the checkpoints.
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
import pyarrow.dataset as pads
import torch
from torch.distributed.algorithms.join import Join

from divspa.config import Config
from divspa.models.checkpoint import ModelBundle
from divspa.models.data import encode_examples, encode_users
from divspa.models.loss import logits, sampled_softmax_loss
from divspa.models.negatives import BatchNegatives
from divspa.models.optimizers import make_optimizer
from divspa.models.ranks import from_rank0, step_fn, sum_over_ranks
from divspa.models.rfm import RandomFeatureMasking
from divspa.models.ufn import FalseNegatives, RowNegatives
from divspa.models.validation import Validation
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
    reversal_after: int = 0  # train.false_negatives: the epoch after which reversal started (0: it did not)
    reversed: list[int] = field(default_factory=list)  # ... and each epoch's reversed (row, item) pairs


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
        self.negatives_of = BatchNegatives(bundle.item_counts, self.tcfg, cfg.run.seed)
        self.optimizer = make_optimizer(self.model, self.tcfg)
        self.ssl = RandomFeatureMasking(bundle.mcfg, self.model.num_items, cfg.run.seed + self.rank, self.device) \
            if bundle.mcfg.ssl == "rfm" else None
        run = pads.field("run_id") == run_id
        for key, value in (where or {}).items():
            run = run & (pads.field(key) == value)
        self.train_filter = run & (pads.field("is_val") == False)  # noqa: E712 (Arrow expression)
        self.val_filter = run & (pads.field("is_val") == True)  # noqa: E712
        self.validation = Validation(dataset, self.columns, self.train_filter, self.val_filter, bundle, self.tcfg,
                                     self.device)
        # Called with (epoch, validation HR) after each epoch; stage tune's pruner raises from it
        # to stop a trial that trails the earlier ones.
        self.epoch_hook: Callable[[int, float], None] | None = None
        self.train_rows = dataset.count_rows(filter=self.train_filter)
        if self.train_rows == 0:
            raise ValueError(f"train_examples holds no training rows for run {run_id}")
        self.false_negatives = FalseNegatives(self.tcfg, self.train_rows // self.world_size + 1) \
            if self.tcfg.false_negatives else None

    # --- the objective -------------------------------------------------------------------------

    def batch_loss(self, table: pa.Table) -> torch.Tensor:
        """Eq. 1: sampled softmax of each positive against the batch's shared negatives."""
        batch = encode_examples(table, self.bundle.vocab, self.bundle.mcfg)
        users = batch.users.to(self.device)
        user = self.model.user_vectors(users)
        pos_idx = batch.items.to(self.device)
        neg_idx, logq = self.negatives(pos_idx)
        pos, neg = self.item_vectors(pos_idx, neg_idx)
        neg_logq, pos_logq = (logq[neg_idx], logq[pos_idx]) if logq is not None else (None, None)
        rows, row, row_neg = self.row_negatives(table, user)
        loss = sampled_softmax_loss(user, pos, neg, pos_idx, neg_idx, self.model.omega, neg_logq, pos_logq, row_neg)
        loss = loss + self.reversed_loss(rows, users, user, row, pos, pos_idx, neg, neg_idx, logq, row_neg)
        return self.with_ssl(loss.mean(), pos_idx)

    def with_ssl(self, loss: torch.Tensor, pos_idx: torch.Tensor) -> torch.Tensor:
        """The batch's loss plus `model.ssl`'s term (RFM), whichever objective the loss is."""
        return loss if self.ssl is None else loss + self.ssl.loss(self.model, pos_idx)

    # --- UFNRec's terms (train.false_negatives; models/ufn.py), for either objective ------------

    def row_negatives(self, table: pa.Table, user: torch.Tensor) -> tuple[
            RowNegatives | None, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """What the batch's rows remember (None before reversal starts), the remembered items'
        vectors [B, W, d], and (logits, indices) [B, W] of those still negatives, for Eq. 1's
        denominators. The vectors are picked by index_select: most places are empty (index 0), and
        indexing's backward adds so many repeats in an order that varies from run to run."""
        rows = self.false_negatives.visit(table, self.device) if self.false_negatives else None
        if rows is None:
            return None, None, None
        unique, inverse = torch.unique(rows.idx, return_inverse=True)
        row = self.model.item_vectors(unique).index_select(0, inverse.reshape(-1)).view(*rows.idx.shape, -1)
        return rows, row, (self.model.omega * (user.unsqueeze(1) * row).sum(-1), rows.negative_idx())

    def reversed_loss(self, rows: RowNegatives | None, users: torch.Tensor, user: torch.Tensor,
                      row: torch.Tensor | None, pos: torch.Tensor, pos_idx: torch.Tensor, neg: torch.Tensor,
                      neg_idx: torch.Tensor, logq: torch.Tensor | None,
                      row_neg: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | float:
        """[B] UFNRec's terms of each row (0 before reversal starts): each reversed item as a positive
        against the row's negatives, and the teacher's consistency loss."""
        if rows is None or row is None:
            return 0.0
        omega = self.model.omega
        row_logq = logq[rows.idx] if logq is not None else None
        row_loss = sampled_softmax_loss(user, row, neg, rows.idx, neg_idx, omega,
                                        logq[neg_idx] if logq is not None else None, row_logq, row_neg)
        with torch.no_grad():
            pos_logit, neg_logit = logits(user, pos.unsqueeze(1), neg, omega)
        return self.false_negatives.loss(rows, users, user, row, row_loss, omega, pos_idx, pos_logit.squeeze(1),
                                         neg_idx, neg_logit)

    def negatives(self, pos_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's shared negatives, and the log q table of the logQ correction (None when off)."""
        return self.negatives_of(pos_idx, self.device)

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

    def _epoch_seed(self, epoch: int) -> None:
        """Ranks draw different negatives, reproducibly: the sampler is seeded from (seed, epoch, rank).
        One process keeps the single generator it always had (same numbers as before)."""
        if self.world_size > 1:
            seed = np.random.SeedSequence([self.cfg.run.seed, epoch, self.rank]).generate_state(1)[0]
            self.negatives_of.sampler.generator.manual_seed(int(seed))

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
        step = step_fn(self.model, self.batch_loss, self.world_size)
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
                    if self.false_negatives:
                        self.false_negatives.after_step(self.model)
                    total += float(loss.detach()) * table.num_rows
                    seen += table.num_rows
                    progress.update(seen, total / seen)
            progress.close()
            self.optimizer.flush()
            fn = self.false_negatives
            total, seen_all, reversed_ = sum_over_ranks(self.world_size, total, seen, fn.take_reversed() if fn else 0)
            if fn is not None and fn.active:
                report.reversed.append(int(reversed_))
                log.info("epoch %d: %d remembered negatives were treated as positives (reversed)", epoch, reversed_)
            report.epoch_s.append(time.monotonic() - epoch_started)
            seen = int(seen_all)
            report.examples += seen
            report.epoch_examples.append(seen)
            report.train_loss.append(total / max(seen, 1))
            report.epochs_run = epoch
            val = self.validate() if has_val and self.rank == 0 else -report.train_loss[-1]
            val = from_rank0(self.world_size, val)
            report.val_hr.append(val)
            log.info("epoch %d: train loss %.4f, val HR@%d %.4f", epoch, report.train_loss[-1], self.tcfg.val_k, val)
            if self.epoch_hook is not None:
                self.epoch_hook(epoch, val)
            improved = best_state is None or val > report.best_val_hr
            if fn is not None and fn.after_epoch(epoch, report.train_loss, improved or fixed, self.model):
                log.info("epoch %d: training has converged; false negatives are reversed from now on, and the "
                         "moving-average teacher is validated and kept", epoch)
                report.reversal_after, bad_epochs = epoch, 0
            if fixed:
                report.best_val_hr, report.best_epoch = val, epoch
                continue
            if improved:
                report.best_val_hr, report.best_epoch = val, epoch
                best_state = copy.deepcopy(self.kept_model().state_dict())
                bad_epochs = 0
            elif fn is None or not fn.holds(epoch):
                bad_epochs += 1
                if bad_epochs >= self.tcfg.patience:
                    log.info("early stopping after epoch %d: best val HR@%d %.4f at epoch %d", epoch,
                             self.tcfg.val_k, report.best_val_hr, report.best_epoch)
                    break
        if fixed and self.kept_model() is not self.model:
            best_state = copy.deepcopy(self.kept_model().state_dict())
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        report.wall_s = time.monotonic() - started
        report.examples_per_s = report.examples / max(report.wall_s, 1e-9)
        return report

    def fitted_items(self) -> dict[int, np.ndarray]:
        return self.validation.fitted_items()

    def kept_model(self) -> torch.nn.Module:
        """The weights validated and kept: UFNRec's moving average once reversal has started."""
        fn = self.false_negatives
        return fn.teacher.model if fn is not None and fn.teacher is not None else self.model

    def validate(self) -> float:
        return self.validation.hr(self.kept_model())


@torch.no_grad()
def user_vectors_for(bundle: ModelBundle, table: pa.Table, device: torch.device | None = None) -> np.ndarray:
    """User vectors for rows with history and user_features: the code the export runs on executors."""
    users = encode_users(table, bundle.vocab, bundle.mcfg)
    if device is not None:
        users = users.to(device)
    return bundle.model.user_vectors(users).cpu().numpy()
