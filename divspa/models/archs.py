"""FM, DeepFM and AutoInt as two-tower bases (the paper's Table 1 competitors, §4).

Each side of the model is a set of *fields*, each one embedding of `embedding_dim`:
- user: the click history (one field: the mean of its items' embeddings; present, as a zero
  vector, for a user without history) and each of the user's feature tokens;
- item: the item id and each of the item's feature tokens.
A token is a one-hot feature in FM's sense ("occupation=engineer", "genre=Drama"), so
multi-valued features (several genres) are several fields. The towers never see the other side:
vectors are computed separately, s(u, v) = u.v, and faiss retrieval holds as for YoutubeDNN.

- FM (Rendle 2010) split over the towers: u = [sum of user fields; user's own FM terms; 1],
  v = [sum of item fields; 1; item's own FM terms], so u.v is every user-item pair interaction
  <e_i, e_j> plus each side's own second- and first-order terms: FM's score, exactly.
- DeepFM (Guo et al. 2017): the FM vector beside a DNN over the same embeddings (first field and
  the mean of the token fields, as YoutubeDNN feeds its MLP); u.v = FM score + DNN_u . DNN_v.
- AutoInt (Song et al. 2019): layers of multi-head self-attention over the fields with residual
  connections and ReLU, then the mean of the attended fields through the MLP.

Every output is L2-normalised like YoutubeDNN's, so u.v is the cosine s(u, v) the paper's
self-distillation uses (§3.2) and omega * u.v the logits; for FM and DeepFM it is the cosine of
the FM vectors. Vector sizes: FM embedding_dim + 2, DeepFM embedding_dim + 2 + output_dim,
AutoInt output_dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from divspa.models.layers import UserInputs, masked_mean, mlp

# Embeddings start small: FM's own terms are sums of squares over fields, and N(0, 1) (torch's
# default) makes them dominate the normalised vector before training has begun.
_INIT_STD = 0.1


def _embedding(rows: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(rows, dim, padding_idx=0)
    nn.init.normal_(emb.weight, std=_INIT_STD)
    with torch.no_grad():
        emb.weight[0].zero_()
    return emb


class FMHead(nn.Module):
    """One side's share of FM's score: [sum of fields; own terms; 1] (user) or [sum; 1; own] (item)."""

    def __init__(self, emb_dim: int, side: str) -> None:
        super().__init__()
        self.side = side
        self.out_dim = emb_dim + 2

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, linear: torch.Tensor | None) -> torch.Tensor:
        e = emb * mask.unsqueeze(-1).to(emb.dtype)
        total = e.sum(1)
        own = 0.5 * (total.pow(2).sum(-1) - e.pow(2).sum((1, 2)))
        if linear is not None:
            own = own + linear
        one = torch.ones_like(own)
        parts = [own, one] if self.side == "user" else [one, own]
        return torch.cat([total, parts[0].unsqueeze(-1), parts[1].unsqueeze(-1)], dim=-1)


class DeepFMHead(nn.Module):
    """FM's vector beside a DNN over the first field and the mean of the token fields."""

    def __init__(self, emb_dim: int, side: str, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.fm = FMHead(emb_dim, side)
        self.dnn = mlp([2 * emb_dim, *hidden, out_dim])
        self.out_dim = self.fm.out_dim + out_dim

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, linear: torch.Tensor | None) -> torch.Tensor:
        first = emb[:, 0]
        tokens = masked_mean(emb[:, 1:], mask[:, 1:].long())
        return torch.cat([self.fm(emb, mask, linear), self.dnn(torch.cat([first, tokens], dim=-1))], dim=-1)


class SelfAttention(nn.Module):
    """AutoInt's interacting layer: multi-head attention over fields, residual projection, ReLU."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.residual = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, f, d = x.shape
        q, k, v = (t.reshape(b, f, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))  # padding fields are never attended
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, f, d)
        return F.relu(out + self.residual(x))


class AutoIntHead(nn.Module):
    def __init__(self, emb_dim: int, heads: int, layers: int, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SelfAttention(emb_dim, heads) for _ in range(layers))
        self.mlp = mlp([emb_dim, *hidden, out_dim])
        self.out_dim = out_dim

    def forward(self, emb: torch.Tensor, mask: torch.Tensor, linear: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            emb = layer(emb, mask)
        return self.mlp(masked_mean(emb, mask.long()))


def _head(arch: str, side: str, emb_dim: int, hidden: list[int], out_dim: int, heads: int, layers: int) -> nn.Module:
    if arch == "fm":
        return FMHead(emb_dim, side)
    if arch == "deepfm":
        return DeepFMHead(emb_dim, side, hidden, out_dim)
    if arch == "autoint":
        return AutoIntHead(emb_dim, heads, layers, hidden, out_dim)
    raise ValueError(f"unknown model.arch {arch!r}")


def _linear_terms(arch: str) -> bool:
    """FM's first-order weights; AutoInt has none (an unused parameter would stall DDP)."""
    return arch in ("fm", "deepfm")


class FieldUserTower(nn.Module):
    def __init__(self, arch: str, num_items: int, num_tokens: int, emb_dim: int, hidden: list[int], out_dim: int,
                 heads: int, layers: int) -> None:
        super().__init__()
        self.tokens = _embedding(num_tokens + 1, emb_dim)
        self.history = _embedding(num_items + 1, emb_dim)
        self.token_weights = _embedding(num_tokens + 1, 1) if _linear_terms(arch) else None
        self.head = _head(arch, "user", emb_dim, hidden, out_dim, heads, layers)

    def fields(self, x: UserInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(field embeddings [B, F, d], mask [B, F], first-order terms [B] or None); field 0 is the history."""
        hist = masked_mean(self.history(x.history), x.history).unsqueeze(1)
        emb = torch.cat([hist, self.tokens(x.tokens)], dim=1)
        mask = torch.cat([torch.ones_like(x.tokens[:, :1], dtype=torch.bool), x.tokens > 0], dim=1)
        linear = self.token_weights(x.tokens).squeeze(-1).sum(1) if self.token_weights is not None else None
        return emb, mask, linear

    def forward(self, x: UserInputs) -> torch.Tensor:
        return F.normalize(self.head(*self.fields(x)), dim=-1)


class FieldItemTower(nn.Module):
    def __init__(self, arch: str, num_items: int, num_tokens: int, item_tokens: torch.Tensor, emb_dim: int,
                 hidden: list[int], out_dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.ids = _embedding(num_items + 1, emb_dim)
        self.tokens = _embedding(num_tokens + 1, emb_dim)
        self.register_buffer("item_tokens", item_tokens)  # [num_items + 1, T] feature tokens per item
        if _linear_terms(arch):
            self.id_weights = _embedding(num_items + 1, 1)
            self.token_weights = _embedding(num_tokens + 1, 1)
        else:
            self.id_weights = self.token_weights = None
        self.head = _head(arch, "item", emb_dim, hidden, out_dim, heads, layers)

    def fields(self, items: torch.Tensor, keep: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(field embeddings [B, F, d], mask [B, F], first-order terms [B] or None); field 0 is the id.
        `keep` [B, F]: fields left out are absent, as padding is (RFM's views, models/rfm.py)."""
        toks, ids = self.item_tokens[items], self.ids(items)
        has_id = torch.ones_like(toks[:, :1], dtype=torch.bool)
        id_weights = self.id_weights(items) if self.id_weights is not None else None
        if keep is not None:
            toks, has_id, ids = toks * keep[:, 1:], keep[:, :1], ids * keep[:, :1]
            id_weights = id_weights * keep[:, :1] if id_weights is not None else None
        emb = torch.cat([ids.unsqueeze(1), self.tokens(toks)], dim=1)
        mask = torch.cat([has_id, toks > 0], dim=1)
        linear = None
        if id_weights is not None and self.token_weights is not None:
            linear = id_weights.squeeze(-1) + self.token_weights(toks).squeeze(-1).sum(1)
        return emb, mask, linear

    def forward(self, items: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.head(*self.fields(items, keep)), dim=-1)
