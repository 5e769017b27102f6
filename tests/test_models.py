"""The PyTorch side: encoding, loss, evaluation metrics on hand-checked examples."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

from divspa.models.encoding import Vocab
from divspa.models.evaluate import evaluate, gini, popularity_scorer
from divspa.models.loss import sampled_softmax_loss
from divspa.models.negatives import NegativeSampler


def vocab() -> Vocab:
    return Vocab(np.array([10, 20, 30, 40]), ["age=1", "age=2"], ["genre=a"])


def test_item_index_and_lists():
    v = vocab()
    assert v.item_index(np.array([10, 40, 15, 99])).tolist() == [1, 4, 0, 0]
    lists = pa.array([[10, 20, 30], [], [40, 99, 10, 20, 30]], pa.list_(pa.int64()))
    last = v.item_lists(lists, 2, keep="last")
    assert last.tolist() == [[2, 3], [0, 0], [2, 3]]
    first = v.item_lists(lists, 2, keep="first")
    assert first.tolist() == [[1, 2], [0, 0], [4, 0]]
    toks = v.user_token_lists(pa.array([["age=2", "zzz"], ["age=1"]]), 3)
    assert toks.tolist() == [[2, 0, 0], [1, 0, 0]]
    sliced = lists.slice(1)  # offsets that do not start at 0
    assert v.item_lists(sliced, 3, keep="last").tolist() == [[0, 0, 0], [1, 2, 3]]


def test_feature_values_are_stored_as_arrow_data_and_old_checkpoints_read():
    """A checkpoint holds the values as UTF-8 bytes and offsets, no Python strings; what it reads
    back encodes as the vocabulary it was written from (non-ASCII, empty and sliced values too),
    and the list of str of older checkpoints is read as it is."""
    import io

    from divspa.models.encoding import token_tensors, tokens_from_tensors
    from divspa.stages.train_base import sorted_strings

    values = sorted_strings(pa.table({"t": ["tag=é", "age=2", "", "city=東京", "age=10"]}))
    assert values.to_pylist() == sorted(["tag=é", "age=2", "", "city=東京", "age=10"])  # code-point order
    for array in (values, values.slice(2), pa.array([], pa.string())):
        stored = token_tensors(array)
        assert set(stored) == {"offsets", "data"} and stored["data"].dtype == torch.uint8
        buf = io.BytesIO()
        torch.save(stored, buf)  # what a checkpoint holds loads with weights_only
        back = tokens_from_tensors(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
        assert back.equals(array) and back.type == pa.string()
    assert tokens_from_tensors(["a=1", "b=2"]).to_pylist() == ["a=1", "b=2"]
    v = Vocab(np.array([1]), values, tokens_from_tensors(token_tensors(values)))
    probe = pa.array([["city=東京", "tag=é", "nope"], [""]])
    assert v.user_token_lists(probe, 3).tolist() == v.item_token_lists(probe, 3).tolist() == [[4, 5, 0], [1, 0, 0]]


def test_sampled_softmax_matches_hand_computation():
    user = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[0.6, 0.8]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    omega = 2.0
    # negative 3 is the positive itself (same index): an accidental hit, masked out.
    loss = sampled_softmax_loss(user, pos, neg, torch.tensor([5]), torch.tensor([1, 2, 5]), omega)
    expected = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0) + math.exp(2.0)))
    assert loss.shape == (1,)
    assert abs(float(loss[0]) - expected) < 1e-6
    # Several positives per row share the negatives: each equals its own single-positive loss.
    pos2 = torch.stack([pos[0], torch.tensor([0.0, 1.0])]).unsqueeze(0)
    multi = sampled_softmax_loss(user, pos2, neg, torch.tensor([[5, 1]]), torch.tensor([1, 2, 5]), omega)
    single = sampled_softmax_loss(user, torch.tensor([[0.0, 1.0]]), neg, torch.tensor([1]), torch.tensor([1, 2, 5]),
                                  omega)
    assert multi.shape == (1, 2)
    assert abs(float(multi[0, 0]) - expected) < 1e-6 and abs(float(multi[0, 1]) - float(single[0])) < 1e-6


def _direct_loss(user, pos, neg, pos_idx, neg_idx, omega, neg_logq=None, pos_logq=None):
    """Eq. 1 spelled out: a [B, P, N] block of negative logits with each positive's hits set to -inf."""
    pos_logit = omega * (user.unsqueeze(1) * pos).sum(-1)
    neg_logit = omega * user @ neg.T
    if neg_logq is not None:
        neg_logit, pos_logit = neg_logit - neg_logq, pos_logit - pos_logq
    block = neg_logit.unsqueeze(1).expand(-1, pos_logit.shape[1], -1)
    block = block.masked_fill(neg_idx.view(1, 1, -1) == pos_idx.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(torch.cat([pos_logit.unsqueeze(-1), block], -1), -1) - pos_logit


def test_shared_negatives_loss_equals_the_direct_form_with_hits_and_duplicates():
    gen = torch.Generator().manual_seed(7)
    for logq in (False, True):
        table = torch.randn(31, 16, generator=gen, dtype=torch.float64, requires_grad=True)
        user = torch.randn(64, 16, generator=gen, dtype=torch.float64, requires_grad=True)
        neg_idx = torch.randint(1, 30, (50,), generator=gen)  # many duplicates and accidental hits
        pos_idx = torch.randint(0, 30, (64, 7), generator=gen)  # 0 = padding of augmented slots
        q = torch.randn(31, generator=gen, dtype=torch.float64)
        extra = (q[neg_idx], q[pos_idx]) if logq else ()
        fast = sampled_softmax_loss(user, table[pos_idx], table[neg_idx], pos_idx, neg_idx, 5.0, *extra)
        direct = _direct_loss(user, table[pos_idx], table[neg_idx], pos_idx, neg_idx, 5.0, *extra)
        assert torch.allclose(fast, direct, rtol=1e-9, atol=1e-9)
        g_fast = torch.autograd.grad(fast.sum(), (user, table))
        g_direct = torch.autograd.grad(direct.sum(), (user, table))
        for a, b in zip(g_fast, g_direct, strict=True):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-7)


def test_logq_correction_shifts_logits():
    user, pos, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    plain = sampled_softmax_loss(user, pos, neg, torch.tensor([1]), torch.tensor([2]), 1.0)
    corrected = sampled_softmax_loss(user, pos, neg, torch.tensor([1]), torch.tensor([2]), 1.0,
                                     neg_logq=torch.tensor([math.log(0.5)]), pos_logq=torch.tensor([math.log(0.5)]))
    assert torch.allclose(plain, corrected)  # equal q for both: no change
    skewed = sampled_softmax_loss(user, pos, neg, torch.tensor([1]), torch.tensor([2]), 1.0,
                                  neg_logq=torch.tensor([math.log(0.9)]), pos_logq=torch.tensor([math.log(0.1)]))
    assert float(skewed) < float(plain)  # a frequently sampled negative is down-weighted


def test_popularity_sampler_distribution_and_seed():
    counts = torch.tensor([1, 1, 98])
    s = NegativeSampler(counts, "popularity", 1.0, seed=3)
    draws = s.sample(20000)
    share = float((draws == 3).float().mean())
    assert 0.96 < share < 0.99 and int(draws.min()) >= 1 and int(draws.max()) <= 3
    assert torch.equal(NegativeSampler(counts, "uniform", 1.0, 5).sample(50),
                       NegativeSampler(counts, "uniform", 1.0, 5).sample(50))


def test_evaluate_hr_ndcg_with_masking():
    v = vocab()  # items 10, 20, 30, 40 -> indices 1..4
    table = pa.table({
        "train_items": pa.array([[40], []], pa.list_(pa.int64())),
        "test_items": pa.array([[20, 10], [30]], pa.list_(pa.int64())),
    })

    def scorer(t):  # user 0 ranks 40 > 20 > 10 > 30; user 1 ranks 40 > 30 > 20 > 10
        return torch.tensor([[2.0, 3.0, 1.0, 4.0], [1.0, 2.0, 3.0, 4.0]])

    res = evaluate(scorer, [table], v, [1, 2])
    # user 0: 40 is masked (train) -> ranking 20, 10, 30: 20 at rank 1, 10 at rank 2.
    # user 1: ranking 40, 30: 30 at rank 2.
    assert res.pairs == 3 and res.users == 2
    assert res.metric("hr", 1) == 1 / 3
    assert res.metric("hr", 2) == 1.0
    assert abs(res.metric("ndcg", 2) - (1 + 1 / math.log2(3) + 1 / math.log2(3)) / 3) < 1e-9
    assert res.topk_items[1].tolist() == [0, 0, 1, 0, 1]


def test_popularity_scorer_and_gini():
    s = popularity_scorer(torch.tensor([5, 1, 0]))
    assert s(pa.table({"x": [1, 2]})).shape == (2, 3)
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert abs(gini(np.array([0, 0, 0, 10])) - 0.75) < 1e-9


def test_mixed_negatives_logq_is_the_mixture_distribution():
    counts = torch.tensor([50.0, 30.0, 15.0, 5.0])
    sampler = NegativeSampler(counts, "uniform", 0.75, seed=0)
    popularity = torch.cat([torch.zeros(1), counts / counts.sum()])
    table = sampler.mixture_logq_table(sampled=200, in_batch=56, popularity=popularity)
    q = torch.exp(table[1:].double())
    assert math.isclose(float(q.sum()), 1.0, rel_tol=1e-6)  # one slot's distribution over items
    expected = (200 * 0.25 + 56 * counts / counts.sum()) / 256
    assert torch.allclose(q, expected.double(), rtol=1e-5)
    assert q[0] > q[3]  # popular items are sampled more often, so their logits are corrected more
    # Without in-batch slots it is the sampler's own table.
    assert torch.allclose(sampler.mixture_logq_table(200, 0, popularity)[1:], sampler.logq_table[1:], atol=1e-6)
