"""Exact top-K evaluation: HR@K and NDCG@K per test pair, train items masked.

For each test user the scorer ranks every item of the catalogue; items the user clicked in
train are removed; each (user, test item) pair is a hit at K when the item is in the top K, with
NDCG 1 / log2(rank + 1). Figures are means over test pairs. Any scorer (a two-tower model, the
popularity baseline) goes through the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from divspa.models.checkpoint import ModelBundle
from divspa.models.data import encode_users
from divspa.models.encoding import Vocab

Scorer = Callable[[pa.Table], torch.Tensor]  # rows of user_histories -> [B, num_items] scores


@dataclass
class EvalResult:
    pairs: int = 0
    users: int = 0
    hits: dict[int, float] = field(default_factory=dict)
    ndcg: dict[int, float] = field(default_factory=dict)
    topk_items: dict[int, np.ndarray] = field(default_factory=dict)  # per K: how often each item index is recommended

    def rows(self, model: str) -> list[tuple[str, str, int | None, float]]:
        out: list[tuple[str, str, int | None, float]] = []
        for k in sorted(self.hits):
            out.append((model, "hr", k, self.hits[k] / max(self.pairs, 1)))
            out.append((model, "ndcg", k, self.ndcg[k] / max(self.pairs, 1)))
        out.append((model, "test_pairs", None, float(self.pairs)))
        out.append((model, "test_users", None, float(self.users)))
        return out

    def diversity_rows(self, model: str, long_tail: np.ndarray) -> list[tuple[str, str, int | None, float]]:
        """Distinct items in the union of the test users' top-K lists, coverage, Gini, long-tail share,
        and distinct_share: distinct items over the lists' slots (users x K), how concentrated a
        model is whatever the catalogue's size (the paper's base: 9,134 items in 112k users'
        top-100, 0.08 %). DivSPA widened a base that concentrated and narrowed one that did not
        (issue 38), so every run measures it.

        long_tail[i] is True when item index i is long-tail (index 0, padding, is never counted).
        """
        out: list[tuple[str, str, int | None, float]] = []
        for k, counts in sorted(self.topk_items.items()):
            exposure = counts[1:]
            distinct = int((exposure > 0).sum())
            out += [(model, "distinct_items", k, float(distinct)),
                    (model, "distinct_share", k, distinct / max(self.users * k, 1)),
                    (model, "coverage", k, distinct / max(len(exposure), 1)),
                    (model, "gini", k, gini(exposure)),
                    (model, "long_tail_share", k, float(exposure[long_tail[1:]].sum() / max(exposure.sum(), 1)))]
        return out

    def metric(self, name: str, k: int) -> float:
        table = self.hits if name == "hr" else self.ndcg
        return table[k] / max(self.pairs, 1)


def model_scorer(bundle: ModelBundle, device: torch.device | None = None) -> Scorer:
    device = device or torch.device("cpu")
    model = bundle.model.to(device).eval()
    with torch.no_grad():
        items = model.item_vectors()

    @torch.no_grad()
    def score(table: pa.Table) -> torch.Tensor:
        return model.user_vectors(encode_users(table, bundle.vocab, bundle.mcfg).to(device)) @ items.T

    return score


def popularity_scorer(item_counts: torch.Tensor) -> Scorer:
    scores = torch.log1p(item_counts.to(torch.float32))

    def score(table: pa.Table) -> torch.Tensor:
        return scores.unsqueeze(0).expand(table.num_rows, -1)

    return score


def evaluate(scorer: Scorer, tables: Iterable[pa.Table], vocab: Vocab, ks: list[int],
             diversity_ks: list[int] | None = None) -> EvalResult:
    """Accuracy at `ks`; exposure counts of the top-K lists at `ks` and `diversity_ks` (capped at the catalogue)."""
    ks = sorted(set(min(k, vocab.num_items) for k in ks))
    exposure_ks = sorted(set(ks) | {min(k, vocab.num_items) for k in diversity_ks or []})
    kmax = exposure_ks[-1]
    result = EvalResult(hits={k: 0.0 for k in ks}, ndcg={k: 0.0 for k in ks},
                        topk_items={k: np.zeros(vocab.num_items + 1, dtype=np.int64) for k in exposure_ks})
    discount = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float64))
    for table in tables:
        table = table.filter(pc.greater(pc.list_value_length(table.column("test_items")), 0))
        if table.num_rows == 0:
            continue
        scores = scorer(table).to(torch.float32).clone()
        width = int(pc.max(pc.list_value_length(table.column("train_items"))).as_py() or 0)
        if width:
            seen = vocab.item_lists(table.column("train_items"), width, keep="first")
            r, c = torch.nonzero(seen > 0, as_tuple=True)
            scores[r.to(scores.device), (seen[r, c] - 1).to(scores.device)] = float("-inf")
        top = scores.topk(kmax, dim=1).indices.cpu() + 1  # [B, kmax] item indices
        targets = vocab.item_lists(table.column("test_items"),
                                   int(pc.max(pc.list_value_length(table.column("test_items"))).as_py()),
                                   keep="first")
        row, col = torch.nonzero(targets > 0, as_tuple=True)
        items = targets[row, col]
        match = top[row] == items.unsqueeze(1)  # [pairs, kmax]
        found = match.any(1)
        rank = torch.where(found, match.float().argmax(1), torch.full_like(items, kmax))
        for k in ks:
            hit = found & (rank < k)
            result.hits[k] += float(hit.sum())
            result.ndcg[k] += float(discount[rank[hit]].sum())
        for k in exposure_ks:
            np.add.at(result.topk_items[k], top[:, :k].reshape(-1).numpy(), 1)
        result.pairs += int(items.shape[0])
        result.users += table.num_rows
    return result


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of exposure counts (0 = every item equally often, 1 = one item only)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.sum() == 0 or len(x) == 0:
        return math.nan
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))
