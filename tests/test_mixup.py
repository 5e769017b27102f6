"""The mix-up loss (Eq. 3, and Eq. 2) against hand computation and its reduction to Eq. 1."""

from __future__ import annotations

import math

import torch

from divspa.models.divspa import mixup_loss
from divspa.models.loss import sampled_softmax_loss


def l_ori(u, v, negs, omega):
    pos = math.exp(omega * sum(a * b for a, b in zip(u, v, strict=True)))
    neg = sum(math.exp(omega * sum(a * b for a, b in zip(u, n, strict=True))) for n in negs)
    return -math.log(pos / (pos + neg))


U = [1.0, 0.0]
VPOS = [0.8, 0.6]
AUG = [[0.6, 0.8], [0.0, 1.0]]
NEG = [[-1.0, 0.0], [0.0, -1.0]]
W = [0.7, 0.3]
OMEGA, BETA = 2.0, 0.5


def tensors(weights=W):
    return dict(user=torch.tensor([U]), pos=torch.tensor([VPOS]), aug=torch.tensor([AUG]), neg=torch.tensor(NEG),
                pos_idx=torch.tensor([1]), aug_idx=torch.tensor([[2, 3]]), aug_w=torch.tensor([weights]),
                neg_idx=torch.tensor([4, 5]), omega=OMEGA)


def test_output_space_mixup_equals_hand_computation():
    got = float(mixup_loss(**tensors(), beta=BETA))
    expected = l_ori(U, VPOS, NEG, OMEGA) + BETA * sum(w * l_ori(U, a, NEG, OMEGA) for w, a in zip(W, AUG, strict=True))
    assert abs(got - expected) < 1e-5


def test_representation_space_mixup_equals_hand_computation():
    mixed = [VPOS[d] + BETA * sum(w * a[d] for w, a in zip(W, AUG, strict=True)) for d in range(2)]
    got = float(mixup_loss(**tensors(), beta=BETA, mode="representation"))
    assert abs(got - l_ori(U, mixed, NEG, OMEGA)) < 1e-5


def test_reduces_to_eq1_without_beta_or_augmentation():
    eq1 = float(sampled_softmax_loss(torch.tensor([U]), torch.tensor([VPOS]), torch.tensor(NEG), torch.tensor([1]),
                                     torch.tensor([4, 5]), OMEGA))
    assert abs(eq1 - l_ori(U, VPOS, NEG, OMEGA)) < 1e-6
    for mode in ("output", "representation"):
        assert abs(float(mixup_loss(**tensors(), beta=0.0, mode=mode)) - eq1) < 1e-6
        no_aug = tensors(weights=[0.0, 0.0])
        no_aug["aug_idx"] = torch.tensor([[0, 0]])
        assert abs(float(mixup_loss(**no_aug, beta=BETA, mode=mode)) - eq1) < 1e-6


def test_gradients_flow_to_augmented_items():
    t = tensors()
    t["aug"] = t["aug"].clone().requires_grad_(True)
    mixup_loss(**t, beta=BETA).backward()
    assert t["aug"].grad is not None and float(t["aug"].grad.abs().sum()) > 0


def test_augmented_item_grad_scales_only_the_augmented_items_gradient():
    # divspa.augmented_item_grad = g: the same loss value; the user (and the real positive and
    # negatives) get the same gradient, the augmented item vectors g times theirs (none at 0).
    grads = {}
    for g in (1.0, 0.5, 0.0):
        t = tensors()
        for name in ("user", "aug", "pos"):
            t[name] = t[name].clone().requires_grad_(True)
        loss = mixup_loss(**t, beta=BETA, aug_grad=g)
        loss.backward()
        grads[g] = (float(loss.detach()), t["user"].grad, t["aug"].grad, t["pos"].grad)
    assert grads[1.0][0] == grads[0.0][0] and abs(grads[0.5][0] - grads[1.0][0]) < 1e-6
    for g in (0.5, 0.0):
        assert torch.equal(grads[1.0][1], grads[g][1]) and torch.equal(grads[1.0][3], grads[g][3])
    assert float(grads[1.0][2].abs().sum()) > 0 and grads[0.0][2] is None
    assert torch.allclose(grads[0.5][2], 0.5 * grads[1.0][2])


def test_each_augmented_positive_may_carry_its_strategys_item_grad_share():
    # divspa.augmented_item_grad_<strategy>: [B, A] shares, e.g. i2i's 1 and u2i's 0: the same loss,
    # the first augmented vector its full gradient, the second none; the user's is unchanged.
    grads = {}
    for name, share in (("one", 1.0), ("each", torch.tensor([[1.0, 0.0]]))):
        t = tensors()
        for key in ("user", "aug"):
            t[key] = t[key].clone().requires_grad_(True)
        loss = mixup_loss(**t, beta=BETA, aug_grad=share)
        loss.backward()
        grads[name] = (float(loss.detach()), t["user"].grad, t["aug"].grad)
    assert grads["one"][0] == grads["each"][0] and torch.equal(grads["one"][1], grads["each"][1])
    assert torch.equal(grads["each"][2][:, 0], grads["one"][2][:, 0]) and float(grads["one"][2][:, 1].abs().sum()) > 0
    assert not grads["each"][2][:, 1].any()


def test_each_augmented_positive_may_carry_its_strategys_beta():
    betas = [0.5, 0.2]  # e.g. the first from i2i, the second from u2i
    got = float(mixup_loss(**tensors(), beta=torch.tensor([betas])))
    expected = l_ori(U, VPOS, NEG, OMEGA) + sum(
        b * w * l_ori(U, a, NEG, OMEGA) for b, w, a in zip(betas, W, AUG, strict=True))
    assert abs(got - expected) < 1e-5
    mixed = [VPOS[d] + sum(b * w * a[d] for b, w, a in zip(betas, W, AUG, strict=True)) for d in range(2)]
    got = float(mixup_loss(**tensors(), beta=torch.tensor([betas]), mode="representation"))
    assert abs(got - l_ori(U, mixed, NEG, OMEGA)) < 1e-5
    # one value everywhere is the shared beta
    same = float(mixup_loss(**tensors(), beta=torch.tensor([[BETA, BETA]])))
    assert abs(same - float(mixup_loss(**tensors(), beta=BETA))) < 1e-6


def test_strategy_names_become_their_betas_position_by_position():
    import pyarrow as pa

    from divspa.config import DivspaConfig
    from divspa.models.encoding import string_value_lists

    cfg = DivspaConfig(beta=0.1, beta_i2i=0.3, augmented_item_grad=0.5, augmented_item_grad_u2i=0.0)
    assert cfg.strategy_betas() == {"u2i": 0.1, "i2i": 0.3, "u2u2i": 0.1}
    assert cfg.strategy_item_grads() == {"u2i": 0.0, "i2i": 0.5, "u2u2i": 0.5}
    lists = pa.chunked_array([pa.array([["i2i", "u2i"], []], pa.list_(pa.string())),
                              pa.array([["u2u2i", "other", "i2i"]], pa.list_(pa.string()))])
    got = string_value_lists(lists, cfg.strategy_betas(), 3).tolist()
    assert got == [[0.30000001192092896, 0.10000000149011612, 0.0], [0.0, 0.0, 0.0],
                   [0.10000000149011612, 0.0, 0.30000001192092896]]


def test_distillation_is_zero_for_the_teachers_own_scores_and_pulls_only_the_student():
    from divspa.models.divspa import distill_loss

    teacher = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert torch.allclose(distill_loss(teacher.clone(), teacher, 2.0), torch.zeros(2), atol=1e-6)
    student = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.5]], requires_grad=True)
    t = teacher.clone().requires_grad_(True)
    loss = distill_loss(student, t, 1.0)
    p_t, p_s = torch.softmax(teacher, 1), torch.softmax(student.detach(), 1)
    assert torch.allclose(loss, (p_t * (p_t.log() - p_s.log())).sum(1), atol=1e-6) and bool((loss > 0).all())
    loss.sum().backward()
    assert t.grad is None and torch.allclose(student.grad, p_s - p_t, atol=1e-6)  # d KL / d logits
    # a logQ correction shifts both sides: same items, same shift, still zero for equal scores
    logq = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).expand(2, -1)
    assert torch.allclose(distill_loss(teacher.clone(), teacher, 1.0, logq), torch.zeros(2), atol=1e-6)
