"""UFNRec: false negatives reversed, with a moving-average teacher (Liu et al., SDM 2023; the
paper's Table 3, `train.false_negatives`).

Once the training loss has levelled off, each training row remembers the negatives that scored
above its positive, and they are drawn again as that row's own negatives the next time it is
trained. A negative that has been one of the row's hard negatives on more than `ufn_reverse`
visits is a false negative: from then on it is one of the row's positives, scored against the
same negatives. An exponential moving average of the model's weights, started when reversal
starts, is a teacher whose sigmoid scores of the reversed items are the soft labels of a
consistency loss (binary cross-entropy, weight `ufn_consistency`); validation, early stopping and
the kept weights then use the averaged model.

Adapted to the shared-negatives softmax of Eq. 1 (the reference trains SASRec with a per-position
binary cross-entropy): a row's remembered negatives join its softmax denominator, a reversed
item is one more positive of the row, and what a row remembers lives in a hashed table of fixed
size (`RowMemory`), so a log of any size costs `ufn_slots` rows of a few bytes, not a Python dict
per click. The reference keeps an item's count for as long as it runs; here an item that stops
being hard leaves the row's `ufn_width` places and its count with it, so reversal needs
`ufn_reverse` + 1 visits in a row on which it was hard.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from divspa.config import TrainConfig
from divspa.models.tensors import first_occurrences

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash, the same in every process (unlike hash())."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def row_keys(table: pa.Table) -> torch.Tensor:
    """A non-negative 63-bit key per training row: its user and item hashed together (a user's two
    clicks of one item are one positive pair, and share what they remember)."""
    user = table.column("user_id").to_numpy().astype(np.uint64)
    item = table.column("item_id").to_numpy().astype(np.uint64)
    key = _mix(_mix(user) ^ item)
    return torch.from_numpy((key >> np.uint64(1)).astype(np.int64))


@dataclass
class RowNegatives:
    """What the memory holds for one batch's rows."""

    slot: torch.Tensor  # [B] each row's place in the memory
    keys: torch.Tensor  # [B]
    idx: torch.Tensor  # [B, W] remembered item indices, 0 = none
    counts: torch.Tensor  # [B, W] visits on which each has been a hard negative of the row, this one included
    reversed: torch.Tensor  # [B, W] bool: a false negative, now a positive of the row

    def negative_idx(self) -> torch.Tensor:
        """[B, W] the remembered items that are still negatives (0 elsewhere)."""
        return torch.where(self.reversed, torch.zeros_like(self.idx), self.idx)


class RowMemory:
    """Per training row, up to `width` hard negatives and their counts, in a table of fixed size.

    A row's place is its key modulo the number of slots (the next power of two above twice the
    training rows, at most `max_slots`); a row whose place another row took starts afresh."""

    def __init__(self, rows: int, width: int, max_slots: int) -> None:
        self.slots = min(max_slots, 1 << max(4, math.ceil(math.log2(max(2 * rows, 1)))))
        self.keys = torch.full((self.slots,), -1, dtype=torch.int64)
        self.items = torch.zeros((self.slots, width), dtype=torch.int32)
        self.counts = torch.zeros((self.slots, width), dtype=torch.int16)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.items, self.counts))

    def visit(self, keys: torch.Tensor, reverse: int) -> RowNegatives:
        slot = keys % self.slots
        mine = (self.keys[slot] == keys).unsqueeze(1)
        idx = torch.where(mine, self.items[slot].long(), 0)
        counts = torch.where(idx > 0, self.counts[slot].long() + 1, 0)
        return RowNegatives(slot, keys, idx, counts, counts > reverse)

    def store(self, rows: RowNegatives, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """Writes each row's new entries; of two rows of a batch with one place, the later wins."""
        win = first_occurrences(rows.slot.flip(0)).flip(0)  # each place's last row
        slot = rows.slot[win]
        self.keys[slot] = rows.keys[win]
        self.items[slot] = idx[win].to(torch.int32)
        self.counts[slot] = counts[win].clamp_max(torch.iinfo(torch.int16).max).to(torch.int16)


def hard_entries(rows: RowNegatives, row_logit: torch.Tensor, pos_idx: torch.Tensor, pos_logit: torch.Tensor,
                 neg_idx: torch.Tensor, neg_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What each row remembers after this visit: (idx, counts), each [B, W].

    Reversed items keep their places; the others go to the row's negatives, remembered or shared,
    that scored above its positive, highest first (a shared negative drawn twice, or already one
    of the row's, counts once; the row's own positive never)."""
    width = rows.idx.shape[1]
    fresh = first_occurrences(neg_idx).unsqueeze(0) & ~(neg_idx.view(1, -1, 1) == rows.idx.unsqueeze(1)).any(-1)  # [B, N]
    cand_idx = torch.cat([rows.negative_idx(), neg_idx.expand(len(pos_idx), -1)], 1)
    cand_logit = torch.cat([row_logit, neg_logit], 1)
    cand_count = torch.cat([rows.counts, torch.zeros_like(neg_logit, dtype=torch.long)], 1)
    hard = (cand_idx > 0) & (cand_idx != pos_idx.unsqueeze(1)) & (cand_logit > pos_logit.unsqueeze(1))
    hard[:, width:] &= fresh
    sticky = torch.cat([rows.reversed, torch.zeros_like(fresh)], 1)
    priority = torch.where(sticky, math.inf, torch.where(hard, cand_logit.float(), -math.inf))
    top = priority.topk(width, dim=1)
    keep = top.values > -math.inf
    idx = torch.where(keep, torch.cat([rows.idx, cand_idx[:, width:]], 1).gather(1, top.indices), 0)
    counts = torch.where(keep, cand_count.gather(1, top.indices), 0)
    return idx, counts


class MovingAverage:
    """The teacher: an exponential moving average of the model's weights (as torch_ema computes it,
    which UFNRec's code uses: decay min(decay, (1 + n) / (10 + n)) at the n-th update)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine = list(self.model.parameters())
        torch._foreach_lerp_(mine, [p.detach() for p in model.parameters()], 1.0 - decay)


def level_off(losses: list[float], min_epochs: int, fraction: float) -> bool:
    """UFNRec's switch: after at least `min_epochs` epochs, the last epoch's drop in training loss is
    below `fraction` of the drop over the first six (the reference: 8 epochs, 1/200)."""
    if len(losses) < max(min_epochs, 2):
        return False
    early = losses[0] - losses[min(5, len(losses) - 1)]
    return losses[-2] - losses[-1] < early * fraction


class FalseNegatives:
    """UFNRec's state in one trainer: the switch, the row memory, the teacher."""

    def __init__(self, tcfg: TrainConfig, rows: int) -> None:
        self.tcfg = tcfg
        self.memory = RowMemory(rows, tcfg.ufn_width, tcfg.ufn_slots)
        self.teacher: MovingAverage | None = None
        self.started_after: int | None = None  # the epoch after which reversal started
        self.reversed_visits = 0  # reversed (row, item) pairs met since the last `take_reversed`

    @property
    def active(self) -> bool:
        return self.teacher is not None

    def after_epoch(self, epoch: int, losses: list[float], improved: bool, model: torch.nn.Module) -> bool:
        """Starts reversal once training has converged; True on the epoch it starts.

        Converged is UFNRec's rule (the training loss has levelled off), or, as early-stopped
        training sees it, an epoch that did not improve validation HR: the reference trains 201
        epochs, and here a sparse log's base stops long before its training loss levels off."""
        tcfg = self.tcfg
        if self.active or epoch < tcfg.ufn_min_epochs:
            return False
        if improved and not level_off(losses, tcfg.ufn_min_epochs, tcfg.ufn_level_off):
            return False
        self.teacher = MovingAverage(model, tcfg.ufn_ema_decay)
        self.started_after = epoch
        return True

    def holds(self, epoch: int) -> bool:
        """Whether early stopping must wait: until the first epoch in which an item can be reversed
        (a row is visited once an epoch: hard on the first visit after the start, placed again on
        each of the next `ufn_reverse` + 1), no epoch counts against `train.patience`."""
        return self.started_after is not None and epoch < self.started_after + self.tcfg.ufn_reverse + 2

    def visit(self, table: pa.Table, device: torch.device) -> RowNegatives | None:
        if not self.active:
            return None
        rows = self.memory.visit(row_keys(table), self.tcfg.ufn_reverse)
        return RowNegatives(rows.slot, rows.keys, rows.idx.to(device), rows.counts.to(device), rows.reversed.to(device))

    def loss(self, rows: RowNegatives, users: torch.Tensor, user: torch.Tensor, row_vecs: torch.Tensor,
             row_loss: torch.Tensor, omega: float, pos_idx: torch.Tensor, pos_logit: torch.Tensor,
             neg_idx: torch.Tensor, neg_logit: torch.Tensor) -> torch.Tensor:
        """[B] the reversed items' softmax terms, plus the consistency term (a batch mean, added to each row);
        remembers this visit's hard negatives. `row_loss` [B, W]: Eq. 1 of each remembered item as
        a positive; `users` the encoded user inputs the teacher scores."""
        row_logit = omega * (user.unsqueeze(1) * row_vecs).sum(-1)
        with torch.no_grad():
            idx, counts = hard_entries(rows, row_logit.detach(), pos_idx, pos_logit.detach(), neg_idx,
                                       neg_logit.detach())
        self.memory.store(rows, idx.cpu(), counts.cpu())
        reversed_ = rows.reversed & (rows.idx > 0)
        extra = torch.where(reversed_, row_loss, torch.zeros_like(row_loss)).sum(1)
        n = int(reversed_.sum())
        self.reversed_visits += n
        if n == 0 or self.teacher is None:
            return extra
        with torch.no_grad():
            teacher = self.teacher.model
            t_user = teacher.user_vectors(users)
            t_items = teacher.item_vectors(rows.idx.reshape(-1)).view(*rows.idx.shape, -1)
            t_logit = teacher.omega * (t_user.unsqueeze(1) * t_items).sum(-1)
        consistency = F.binary_cross_entropy_with_logits(row_logit[reversed_], torch.sigmoid(t_logit[reversed_]))
        return extra + self.tcfg.ufn_consistency * consistency  # the same on every row: once in the batch's mean

    def take_reversed(self) -> int:
        n, self.reversed_visits = self.reversed_visits, 0
        return n

    def after_step(self, model: torch.nn.Module) -> None:
        if self.teacher is not None:
            self.teacher.update(model)
