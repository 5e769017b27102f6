"""Pieces every tower uses: the user side's inputs, MLPs, masked means over padded indices."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UserInputs:
    tokens: torch.Tensor  # [B, T] user feature token indices, 0 = padding
    history: torch.Tensor  # [B, L] item indices of recent clicks, 0 = padding

    def to(self, device: torch.device) -> UserInputs:
        return UserInputs(self.tokens.to(device), self.history.to(device))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def masked_mean(emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    mask = (idx > 0).unsqueeze(-1).to(emb.dtype)
    return (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)
