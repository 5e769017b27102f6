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

