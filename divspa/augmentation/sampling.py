"""Drawing m of each group's candidates and weighing them (paper §3.2): pure numpy.

Efraimidis-Spirakis weighted sampling without replacement: candidate i gets the key
log(r_i) / p_i and the m largest keys win, r_i a uniform number hashed from the row (so every
draw is a function of its row, whatever the partitioning). Sums are taken in candidate-id order,
one term after the other, as Spark's window sums took them: the same seed gives the same table
bit for bit. No Spark here: the tests check the distributions on synthetic groups.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from divspa.config import AugmentConfig


@cache
def beta_rank_probs(k: int, alpha: float) -> tuple[tuple[float, ...], ...]:
    """probs[n-1][r-1]: chance that a Beta(alpha, alpha) draw over n ranked candidates picks rank r."""
    grid = 4096
    out = []
    for n in range(1, k + 1):
        x = (np.arange(n * grid) + 0.5) / (n * grid)  # midpoints: the density is finite there
        dens = x ** (alpha - 1) * (1 - x) ** (alpha - 1)
        mass = dens.reshape(n, grid).sum(axis=1)
        out.append(tuple(float(v) for v in mass / mass.sum()))
    return tuple(out)


def ranks_in(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based position of each row of `order` (rows sorted by group first) within its group."""
    g = group[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1] if len(g) else np.zeros(0, np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return np.arange(len(g)) - first + 1


def _sequential_sums(group: np.ndarray, aug: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row: the sum of its group's values added one after another in candidate-id order (how
    Spark's window sum adds them), so a weight has the same bits as before."""
    order = np.lexsort((aug, group))
    pos = ranks_in(group, order) - 1
    ids, slot = np.unique(group[order], return_inverse=True)
    grid = np.zeros((len(ids), int(pos.max()) + 1 if len(pos) else 0))
    grid[slot, pos] = values[order]
    total = np.zeros(len(ids))
    for j in range(grid.shape[1]):  # x + 0.0 == x: padding changes no sum
        total = total + grid[:, j]
    return total[np.searchsorted(ids, group)]


def sample_groups(group: np.ndarray, aug: np.ndarray, sel: np.ndarray, rank: np.ndarray, r: np.ndarray,
                  cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows chosen, their weight): m of each group's candidates by Efraimidis-Spirakis keys
    log(r) / p, p from augment.sampler; weights floor(sel) / their sum over the chosen."""
    floor = np.maximum(sel, cfg.min_score)
    _, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    n = counts[inverse]
    if cfg.sampler == "uniform":
        prob = 1.0 / n.astype(np.float64)
    elif cfg.sampler == "importance":
        prob = floor / _sequential_sums(group, aug, floor)
    else:
        table = np.zeros((cfg.k, cfg.k))
        for i, row in enumerate(beta_rank_probs(cfg.k, cfg.beta_alpha)):
            table[i, :len(row)] = row
        prob = table[n - 1, rank - 1]
    key = np.log(r) / prob
    order = np.lexsort((aug, -key, group))
    chosen = order[ranks_in(group, order) <= cfg.m]
    weight = floor[chosen] / _sequential_sums(group[chosen], aug[chosen], floor[chosen])
    return chosen, weight.astype(np.float32)
