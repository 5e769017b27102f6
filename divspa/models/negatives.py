"""A batch's negatives: sampled uniformly or by popularity^power, the batch's own positives
(in-batch), or both, with the log-probability table the logQ correction subtracts."""

from __future__ import annotations

import torch

from divspa.config import TrainConfig


class NegativeSampler:
    """Draws item indices 1..num_items, uniformly or by popularity^power, from a seeded generator."""

    def __init__(self, counts: torch.Tensor, kind: str, power: float, seed: int) -> None:
        # counts[i] = train clicks of item index i + 1
        if kind == "uniform":
            probs = torch.ones(len(counts), dtype=torch.float64)
        else:
            probs = counts.to(torch.float64).clamp_min(1.0) ** power
        self.probs = (probs / probs.sum()).to(torch.float32)
        self.uniform = kind == "uniform"
        self.logq_table = torch.cat([torch.zeros(1), torch.log(self.probs)])  # index 0 = padding
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, n: int) -> torch.Tensor:
        if self.uniform:
            return torch.randint(1, len(self.probs) + 1, (n,), generator=self.generator)
        return torch.multinomial(self.probs, n, replacement=True, generator=self.generator) + 1

    def logq(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logq_table[idx]

    def mixture_logq_table(self, sampled: int, in_batch: int, popularity: torch.Tensor) -> torch.Tensor:
        """log q of one negative slot when `sampled` slots come from this sampler and `in_batch`
        from the batch's positives (drawn ~ `popularity`, index 0 = padding)."""
        q = torch.cat([torch.zeros(1), self.probs.double()])
        mixed = (sampled * q + in_batch * popularity.double()) / max(sampled + in_batch, 1)
        return torch.log(mixed.clamp_min(1e-30)).to(torch.float32)


class BatchNegatives:
    """The negatives every row of a batch shares, as train.num_negatives, negative_sampler,
    popularity_power, in_batch_negatives and logq_correction say."""

    def __init__(self, item_counts: torch.Tensor, tcfg: TrainConfig, seed: int) -> None:
        self.tcfg = tcfg
        self.sampler = NegativeSampler(item_counts, tcfg.negative_sampler, tcfg.popularity_power, seed)
        self.use_logq = tcfg.logq_correction and (tcfg.negative_sampler != "uniform" or tcfg.in_batch_negatives)
        counts = torch.cat([torch.zeros(1), item_counts.to(torch.float64).clamp_min(0)])
        self.popularity = counts / counts.sum().clamp_min(1.0)  # how often an item is a batch positive

    def __call__(self, pos_idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's shared negatives, and the log q table of the logQ correction (None when off)."""
        sampled = self.sampler.sample(self.tcfg.num_negatives).to(device)
        if not self.tcfg.in_batch_negatives:
            table = self.sampler.logq_table.to(device) if self.use_logq else None
            return sampled, table
        in_batch = pos_idx[pos_idx > 0]
        neg_idx = torch.cat([sampled, in_batch])
        if not self.use_logq:
            return neg_idx, None
        table = self.sampler.mixture_logq_table(len(sampled), len(in_batch), self.popularity)
        return neg_idx, table.to(device)
