"""The two-tower base models: YoutubeDNN (paper §3.1; Covington et al. 2016), the default, and
FM, DeepFM and AutoInt (divspa.models.archs), chosen by `model.arch`.

User tower: mean of the user's feature-token embeddings and mean of the embeddings of their
recent clicked items (history strictly before the predicted event), concatenated, through an
MLP to u. Item tower: item id embedding and mean item feature-token embedding, through an MLP
to v. Both outputs are L2-normalised, so u.v is the cosine s(u, v) the retrieval and the
self-distillation use, and omega * u.v are the training logits.

`TwoTower` is the one model everything else sees, whatever the arch: user vectors from a
`UserInputs` batch, item vectors from item indices, logits omega * u.v. The trainer, the loss,
export, retrieval and augmentation have no branch per arch.
"""

from __future__ import annotations

import typing

import torch
from torch import nn
from torch.nn import functional as F

from divspa.config import Arch
from divspa.models.archs import FieldItemTower, FieldUserTower
from divspa.models.layers import UserInputs, masked_mean, mlp

__all__ = ["ARCHS", "TwoTower", "UserInputs"]

ARCHS: tuple[str, ...] = typing.get_args(Arch)


class UserTower(nn.Module):
    def __init__(self, num_items: int, num_tokens: int, emb_dim: int, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(num_tokens + 1, emb_dim, padding_idx=0)
        self.history = nn.Embedding(num_items + 1, emb_dim, padding_idx=0)
        self.mlp = mlp([2 * emb_dim, *hidden, out_dim])

    def forward(self, x: UserInputs) -> torch.Tensor:
        feats = masked_mean(self.tokens(x.tokens), x.tokens)
        hist = masked_mean(self.history(x.history), x.history)
        return F.normalize(self.mlp(torch.cat([feats, hist], dim=-1)), dim=-1)


class ItemTower(nn.Module):
    def __init__(self, num_items: int, num_tokens: int, item_tokens: torch.Tensor, emb_dim: int,
                 hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(num_items + 1, emb_dim, padding_idx=0)
        self.tokens = nn.Embedding(num_tokens + 1, emb_dim, padding_idx=0)
        self.register_buffer("item_tokens", item_tokens)  # [num_items + 1, T] feature tokens per item
        self.mlp = mlp([2 * emb_dim, *hidden, out_dim])

    def forward(self, items: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """`keep` [B, 1 + T] (id, tokens): fields left out are absent, as padding is (models/rfm.py)."""
        toks, ids = self.item_tokens[items], self.ids(items)
        if keep is not None:
            toks, ids = toks * keep[:, 1:], ids * keep[:, :1]
        feats = masked_mean(self.tokens(toks), toks)
        return F.normalize(self.mlp(torch.cat([ids, feats], dim=-1)), dim=-1)


class TwoTower(nn.Module):
    """s(u, v) = u.v with unit-norm towers; logits omega * u.v."""

    def __init__(self, num_items: int, num_user_tokens: int, num_item_tokens: int, item_tokens: torch.Tensor,
                 emb_dim: int = 32, hidden: list[int] | None = None, out_dim: int = 32, omega: float = 10.0,
                 arch: str = "youtubednn", heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        hidden = list(hidden or [])
        self.num_items = num_items
        self.omega = omega
        self.user_tower: nn.Module
        self.item_tower: nn.Module
        if arch == "youtubednn":
            self.user_tower = UserTower(num_items, num_user_tokens, emb_dim, hidden, out_dim)
            self.item_tower = ItemTower(num_items, num_item_tokens, item_tokens, emb_dim, hidden, out_dim)
        elif arch in ARCHS:
            self.user_tower = FieldUserTower(arch, num_items, num_user_tokens, emb_dim, hidden, out_dim, heads, layers)
            self.item_tower = FieldItemTower(arch, num_items, num_item_tokens, item_tokens, emb_dim, hidden, out_dim,
                                             heads, layers)
        else:
            raise ValueError(f"unknown model.arch {arch!r}; archs are {', '.join(ARCHS)}")

    def user_vectors(self, x: UserInputs) -> torch.Tensor:
        return self.user_tower(x)

    def item_vectors(self, items: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of the given item indices, or of every item (row i = index i + 1); `keep` masks
        fields (RFM's views)."""
        if items is None:
            items = torch.arange(1, self.num_items + 1, device=self.item_tower.item_tokens.device)
        return self.item_tower(items) if keep is None else self.item_tower(items, keep)
