"""RFM: random feature masking, the self-supervised item-tower loss of Yao et al. (CIKM 2021), the
paper's best Table 1 baseline (`model.ssl: rfm`).

Each item of an SSL batch is seen twice by the same item tower: its fields (the id and every
feature token) are split at random into two disjoint sets, view 1 masks the first and view 2 the
second. An in-batch InfoNCE with a temperature asks each view 1 to find its own view 2 among the
batch's; it is added to the main loss with a weight. The SSL batch is drawn from the catalogue
(`model.ssl_items: catalogue`), not from the clicks, so tail items, which the main loss rarely
sees, get embeddings shaped by their features: the part of the catalogue DivSPA's diversity claim
is about. A masked field is absent, as padding is: it adds nothing to the tower's means, FM's
sums or AutoInt's attention.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from divspa.config import ModelConfig
from divspa.models.tensors import first_occurrences


def field_views(item_tokens: torch.Tensor, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep_1, keep_2), each [n, 1 + T] bool over (id, tokens): the fields each view keeps.

    An item's present fields (the id, and its non-padding tokens) are shuffled; view 1 masks the
    first k = round(rate * n) of them, clamped to 1..n-1 so that each view keeps at least one
    field, and view 2 masks the others. An item with its id alone keeps it in both views."""
    present = torch.cat([torch.ones_like(item_tokens[:, :1], dtype=torch.bool), item_tokens > 0], dim=1)
    scores = torch.rand(present.shape, generator=generator, device=item_tokens.device)
    scores = torch.where(present, scores, torch.full_like(scores, 2.0))  # absent fields sort last
    rank = scores.argsort(dim=1).argsort(dim=1)
    n = present.sum(1, keepdim=True)
    k = torch.where(n >= 2, (rate * n).round().long().clamp(min=1).minimum(n - 1), torch.zeros_like(n))
    masked_1 = present & (rank < k)
    masked_2 = present & (rank >= k) & (n >= 2)
    return ~masked_1, ~masked_2


def distinct_uniform(size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n distinct values of 0..size-1, uniformly: the first n distinct of 2n uniform draws (rejection
    sampling, exact), a permutation's first n when the draws hold fewer. A permutation of the
    catalogue at every step costs its size: 2.5 ms at 420k items against 0.06 ms (one thread), of an
    RFM step of about 22 ms (benchmarks/vocabulary.py --ssl rfm)."""
    draws = torch.randint(0, size, (2 * n,), generator=generator)
    distinct = draws[first_occurrences(draws)]  # in draw order
    return distinct[:n] if len(distinct) >= n else torch.randperm(size, generator=generator)[:n]


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of -log softmax(z1 z2^T / temperature) at the row's own column."""
    logits = z1 @ z2.T / temperature
    return F.cross_entropy(logits, torch.arange(len(z1), device=z1.device))


class RandomFeatureMasking:
    """The SSL term of one training step: draw the SSL batch, make two views, InfoNCE, weighted.

    Its random numbers come from its own generator (seeded from run.seed), so turning RFM on
    draws no number the main loss's negatives would otherwise have drawn."""

    def __init__(self, mcfg: ModelConfig, num_items: int, seed: int, device: torch.device) -> None:
        self.mcfg, self.num_items, self.device = mcfg, num_items, device
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + 17)

    def items(self, positives: torch.Tensor) -> torch.Tensor:
        """The SSL batch: distinct items (a duplicate would be its own negative), from the catalogue
        uniformly, or the main batch's positives."""
        if self.mcfg.ssl_items == "clicks":
            return torch.unique(positives)
        n = min(self.mcfg.ssl_batch, self.num_items)
        return (distinct_uniform(self.num_items, n, self.generator) + 1).to(self.device)

    def loss(self, model: torch.nn.Module, positives: torch.Tensor) -> torch.Tensor:
        items = self.items(positives)
        tokens = model.item_tower.item_tokens[items]
        keep_1, keep_2 = field_views(tokens.cpu(), self.mcfg.ssl_mask_rate, self.generator)
        z1 = model.item_vectors(items, keep_1.to(self.device))
        z2 = model.item_vectors(items, keep_2.to(self.device))
        return self.mcfg.ssl_weight * info_nce(z1, z2, self.mcfg.ssl_temperature)
