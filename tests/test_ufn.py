"""train.false_negatives: UFNRec's reversal, its moving-average teacher and consistency loss."""

from __future__ import annotations

import copy
import math

import pyarrow as pa
import pytest
import torch
from torch.nn import functional as F

from divspa.config import TrainConfig
from divspa.models.loss import sampled_softmax_loss
from divspa.models.towers import UserInputs
from divspa.models.ufn import FalseNegatives, MovingAverage, RowMemory, hard_entries, level_off, row_keys
from divspa.stages.train_base import BASE_VERSION, build_bundle
from tests.test_archs import _model


def _rows(users: list[int], items: list[int]) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64())})


def test_row_keys_are_stable_and_spread():
    table = _rows([1, 1, 2, 2], [5, 6, 5, 6])
    keys = row_keys(table)
    assert keys.tolist() == row_keys(table).tolist() and (keys >= 0).all() and len(set(keys.tolist())) == 4
    memory = RowMemory(rows=1000, width=4, max_slots=1 << 30)
    assert memory.slots == 2048 and memory.nbytes == 2048 * (8 + 4 * 4 + 4 * 2)  # 2 x rows, a power of two
    assert RowMemory(rows=10**9, width=4, max_slots=1 << 20).slots == 1 << 20  # bounded by configuration


def test_the_memory_gives_back_what_a_row_stored_and_forgets_a_row_whose_slot_was_taken():
    memory = RowMemory(rows=8, width=2, max_slots=16)
    keys = torch.tensor([3, 19, 5])  # 3 and 19 share slot 3 of 16; 19 is later in the batch and wins
    rows = memory.visit(keys, reverse=5)
    assert rows.idx.eq(0).all() and not rows.reversed.any()
    memory.store(rows, torch.tensor([[7, 8], [9, 0], [4, 0]]), torch.tensor([[2, 0], [1, 0], [5, 0]]))
    again = memory.visit(keys, reverse=1)
    assert again.idx.tolist() == [[0, 0], [9, 0], [4, 0]]  # 3 lost its slot to 19
    assert again.counts.tolist() == [[0, 0], [2, 0], [6, 0]]  # one more visit each
    assert again.reversed.tolist() == [[False, False], [True, False], [True, False]]  # counts > reverse


def _visit(memory: RowMemory, reverse: int, hard_item: int, hard: bool, pos_logit: float = 0.0):
    """One visit of row (user 1, item 1) whose shared negatives are items 2..5; `hard_item` scores
    above the positive when `hard`, every other negative below."""
    rows = memory.visit(row_keys(_rows([1], [1])), reverse)
    neg_idx = torch.tensor([2, 3, 4, 5, 3])  # 3 drawn twice
    neg_logit = torch.where(neg_idx == hard_item, 1.0 if hard else -1.0, -1.0).unsqueeze(0)
    row_logit = torch.where(rows.idx == hard_item, 1.0 if hard else -1.0, -1.0)
    idx, counts = hard_entries(rows, row_logit, torch.tensor([1]), torch.tensor([pos_logit]), neg_idx, neg_logit)
    memory.store(rows, idx, counts)
    return rows


def test_an_item_is_reversed_after_exactly_reverse_repeats_and_stays_reversed():
    """Hard on the first visit, it is the row's negative again on the next ones, counted each time;
    on the visit its count passes `reverse` it is a positive, and it stays one when no longer hard."""
    reverse, memory = 3, RowMemory(rows=4, width=2, max_slots=64)
    seen = [_visit(memory, reverse, hard_item=3, hard=True) for _ in range(reverse + 2)]
    assert [r.idx[0].tolist() for r in seen] == [[0, 0]] + [[3, 0]] * (reverse + 1)  # counted once, not twice
    assert [int(r.counts[0, 0]) for r in seen] == list(range(reverse + 2))
    assert [bool(r.reversed[0, 0]) for r in seen] == [False] * (reverse + 1) + [True]
    later = [_visit(memory, reverse, hard_item=3, hard=False) for _ in range(2)]
    assert all(bool(r.reversed[0, 0]) and int(r.idx[0, 0]) == 3 for r in later)
    assert later[0].negative_idx()[0].tolist() == [0, 0]  # a reversed item is no longer a negative


def test_an_item_that_stops_being_hard_is_forgotten_with_its_count():
    memory = RowMemory(rows=4, width=2, max_slots=64)
    for _ in range(3):
        _visit(memory, 5, hard_item=4, hard=True)
    _visit(memory, 5, hard_item=4, hard=False)
    assert _visit(memory, 5, hard_item=4, hard=True).idx[0].tolist() == [0, 0]


def test_reversal_waits_for_the_loss_to_level_off():
    assert not level_off([5.0, 4.0, 3.0, 2.5, 2.2, 2.0, 1.9, 1.85], 8, 0.005)  # still falling: 0.05 > 3 / 200
    assert level_off([5.0, 4.0, 3.0, 2.5, 2.2, 2.0, 1.9, 1.899], 8, 0.005)  # 0.001 < 0.015
    assert not level_off([5.0, 4.0, 3.0, 2.5, 2.2, 2.0, 1.899], 8, 0.005)  # too soon: 7 epochs
    fn = FalseNegatives(TrainConfig(false_negatives=True, ufn_min_epochs=3, ufn_level_off=0.1, ufn_reverse=2), 10)
    model = _model("youtubednn")
    assert fn.visit(_rows([1], [1]), torch.device("cpu")) is None  # nothing remembered before
    assert not fn.after_epoch(2, [3.0, 2.0], False, model)  # too soon, even without a better validation
    assert not fn.after_epoch(3, [3.0, 2.0, 1.5], True, model) and not fn.active  # 0.5 > 0.1 x 1.5
    assert fn.after_epoch(4, [3.0, 2.0, 1.5, 1.45], True, model) and fn.active and fn.started_after == 4
    assert not fn.after_epoch(5, [3.0, 2.0, 1.5, 1.45, 1.44], True, model)  # once
    assert [fn.holds(e) for e in (5, 6, 7, 8)] == [True, True, True, False]  # 8: the first reversals
    early = FalseNegatives(TrainConfig(false_negatives=True, ufn_min_epochs=3), rows=10)
    assert early.after_epoch(3, [3.0, 2.0, 1.0], False, model)  # still falling, but validation did not improve


def test_the_teacher_is_torch_emas_moving_average():
    model = torch.nn.Linear(2, 1)
    ema = MovingAverage(model, decay=0.999)
    start = [p.detach().clone() for p in model.parameters()]
    expected = [p.clone() for p in start]
    for n in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        ema.update(model)
        decay = min(0.999, (1 + n) / (10 + n))  # torch_ema's warm-up
        expected = [e - (1 - decay) * (e - p) for e, p in zip(expected, model.parameters(), strict=True)]
    for got, want in zip(ema.model.parameters(), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6) and not got.requires_grad


def test_row_negatives_join_the_denominator_except_where_they_are_the_positive():
    torch.manual_seed(0)
    user, pos, neg = torch.randn(2, 4), torch.randn(2, 4), torch.randn(3, 4)
    row = torch.randn(2, 2, 4)
    pos_idx, neg_idx, row_idx = torch.tensor([1, 2]), torch.tensor([5, 6, 7]), torch.tensor([[8, 0], [2, 9]])
    omega = 2.0
    row_logit = omega * (user.unsqueeze(1) * row).sum(-1)
    got = sampled_softmax_loss(user, pos, neg, pos_idx, neg_idx, omega, row_neg=(row_logit, row_idx))
    for b, want_rows in ((0, [0]), (1, [1])):  # row 0: item 8 (0 is none); row 1: 9 (2 is its positive)
        logits = [omega * float(user[b] @ pos[b])] + [omega * float(user[b] @ n) for n in neg] + \
            [float(row_logit[b, w]) for w in want_rows]
        want = -(logits[0] - math.log(sum(math.exp(v) for v in logits)))
        assert float(got[b]) == pytest.approx(want, rel=1e-5)


def test_the_reversed_items_loss_and_the_consistency_term_by_hand():
    """A row whose remembered item 4 is reversed: its Eq. 1 term joins the row's loss, and
    lambda x BCE(student logit, sigmoid(teacher logit)) the batch's."""
    tcfg = TrainConfig(false_negatives=True, ufn_reverse=0, ufn_consistency=0.3, ufn_min_epochs=2, ufn_level_off=1e9)
    model = _model("youtubednn")
    fn = FalseNegatives(tcfg, rows=4)
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fn.after_epoch(2, [2.0, 1.0], False, teacher)  # the teacher starts as a copy of these weights
    table = _rows([1, 2], [1, 2])
    first = fn.visit(table, torch.device("cpu"))
    fn.memory.store(first, torch.tensor([[4] + [0] * 7, [0] * 8]), torch.zeros(2, 8, dtype=torch.long))
    rows = fn.visit(table, torch.device("cpu"))
    assert rows.reversed[0, 0] and not rows.reversed[1].any()
    users = UserInputs(torch.tensor([[1, 2], [3, 0]]), torch.tensor([[1, 2, 3], [2, 3, 4]]))
    user = model.user_vectors(users)
    row_vecs = model.item_vectors(rows.idx.reshape(-1)).view(2, 8, -1)
    row_loss = torch.rand(2, 8)
    pos_idx, neg_idx = torch.tensor([1, 2]), torch.tensor([5, 6])
    pos_logit, neg_logit = torch.zeros(2), torch.full((2, 2), -5.0)
    got = fn.loss(rows, users, user, row_vecs, row_loss, model.omega, pos_idx, pos_logit, neg_idx, neg_logit).detach()
    with torch.no_grad():
        s = model.omega * float(user[0] @ model.item_vectors(torch.tensor([4]))[0])
        t = teacher.omega * float(teacher.user_vectors(users)[0] @ teacher.item_vectors(torch.tensor([4]))[0])
    consistency = float(F.binary_cross_entropy_with_logits(torch.tensor(s), torch.sigmoid(torch.tensor(t))))
    assert float(got[0]) == pytest.approx(float(row_loss[0, 0]) + 0.3 * consistency, rel=1e-5)
    assert float(got[1]) == pytest.approx(0.3 * consistency, rel=1e-5)  # a batch term: once in the mean


def _train(trained, epochs: int, **settings) -> tuple[dict[str, torch.Tensor], object]:
    from divspa.models.trainer import Trainer

    cfg = copy.deepcopy(trained.cfg)
    for key, value in settings.items():
        setattr(cfg.train, key, value)
    bundle = build_bundle(trained, BASE_VERSION, cfg)
    trainer = Trainer(cfg, bundle, trained.warehouse.dataset("train_examples"), trained.run_id)
    report = trainer.fit(epochs=epochs)
    return bundle.model.state_dict(), (report, trainer)


def test_off_and_never_started_train_the_same_weights_and_reversal_reproduces(trained):
    """On but before the loss levels off, the trainer is today's, bit for bit; once reversal starts
    (here after epoch 2, reversing at the first repeat) it remembers, reverses, and keeps the
    moving average."""
    off, _ = _train(trained, 3)
    waiting, _ = _train(trained, 3, false_negatives=True, ufn_min_epochs=20)  # fixed epochs: the loss rule only
    assert all(torch.equal(off[k], waiting[k]) for k in off)
    on, (report, trainer) = _train(trained, 4, false_negatives=True, ufn_min_epochs=2, ufn_level_off=1e9,
                                   ufn_reverse=0)
    assert report.reversal_after == 2 and all(math.isfinite(v) for v in report.train_loss)
    # epoch 3 remembers (and reverses only for a user's repeated clicks of an item), epoch 4 reverses
    assert len(report.reversed) == 2 and report.reversed[1] > report.reversed[0]
    memory = trainer.false_negatives.memory
    assert (memory.keys >= 0).sum() > 0 and (memory.items > 0).sum() > 0  # rows remembered hard negatives
    assert (memory.counts > 0).sum() > 0  # and met them again
    kept = trainer.false_negatives.teacher.model.state_dict()
    assert all(torch.equal(on[k], kept[k]) for k in on)  # the averaged weights are the ones kept
    again, _ = _train(trained, 4, false_negatives=True, ufn_min_epochs=2, ufn_level_off=1e9, ufn_reverse=0)
    assert all(torch.equal(on[k], again[k]) for k in on)  # reproducible, bit for bit
