"""The YoutubeDNN two-tower base model (paper §3.1; Covington et al. 2016).

User tower: mean of the user's feature-token embeddings and mean of the embeddings of their
recent clicked items (history strictly before the predicted event), concatenated, through an
MLP to u. Item tower: item id embedding and mean item feature-token embedding, through an MLP
to v. Both outputs are L2-normalised, so u.v is the cosine s(u, v) the retrieval and the
self-distillation use, and omega * u.v are the training logits.

`TwoTower` is the interface other bases (FM, DeepFM, AutoInt) would implement: user vectors
from a `UserInputs` batch, item vectors from item indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class UserInputs:
    tokens: torch.Tensor  # [B, T] user feature token indices, 0 = padding
    history: torch.Tensor  # [B, L] item indices of recent clicks, 0 = padding

    def to(self, device: torch.device) -> UserInputs:
        return UserInputs(self.tokens.to(device), self.history.to(device))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _masked_mean(emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    mask = (idx > 0).unsqueeze(-1).to(emb.dtype)
    return (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class UserTower(nn.Module):
    def __init__(self, num_items: int, num_tokens: int, emb_dim: int, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(num_tokens + 1, emb_dim, padding_idx=0)
        self.history = nn.Embedding(num_items + 1, emb_dim, padding_idx=0)
        self.mlp = _mlp([2 * emb_dim, *hidden, out_dim])

    def forward(self, x: UserInputs) -> torch.Tensor:
        feats = _masked_mean(self.tokens(x.tokens), x.tokens)
        hist = _masked_mean(self.history(x.history), x.history)
        return F.normalize(self.mlp(torch.cat([feats, hist], dim=-1)), dim=-1)


class ItemTower(nn.Module):
    def __init__(self, num_items: int, num_tokens: int, item_tokens: torch.Tensor, emb_dim: int,
                 hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(num_items + 1, emb_dim, padding_idx=0)
        self.tokens = nn.Embedding(num_tokens + 1, emb_dim, padding_idx=0)
        self.register_buffer("item_tokens", item_tokens)  # [num_items + 1, T] feature tokens per item
        self.mlp = _mlp([2 * emb_dim, *hidden, out_dim])

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        toks = self.item_tokens[items]
        feats = _masked_mean(self.tokens(toks), toks)
        return F.normalize(self.mlp(torch.cat([self.ids(items), feats], dim=-1)), dim=-1)


class TwoTower(nn.Module):
    """YoutubeDNN: s(u, v) = u.v with unit-norm towers; logits omega * u.v."""

    def __init__(self, num_items: int, num_user_tokens: int, num_item_tokens: int, item_tokens: torch.Tensor,
                 emb_dim: int = 32, hidden: list[int] | None = None, out_dim: int = 32, omega: float = 10.0) -> None:
        super().__init__()
        hidden = list(hidden or [])
        self.num_items = num_items
        self.omega = omega
        self.user_tower = UserTower(num_items, num_user_tokens, emb_dim, hidden, out_dim)
        self.item_tower = ItemTower(num_items, num_item_tokens, item_tokens, emb_dim, hidden, out_dim)

    def user_vectors(self, x: UserInputs) -> torch.Tensor:
        return self.user_tower(x)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of the given item indices, or of every item (row i = index i + 1)."""
        if items is None:
            items = torch.arange(1, self.num_items + 1, device=self.item_tower.item_tokens.device)
        return self.item_tower(items)
