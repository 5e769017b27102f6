"""Each positive's candidates per strategy, re-scored by the teacher and ranked: numpy over one
chunk of user rows (Arrow in, arrays out); no Spark object is touched here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from divspa.augmentation.items import Items, find_sorted
from divspa.augmentation.sampling import ranks_in
from divspa.config import AugmentConfig
from divspa.retrieval.spark_knn import list_vectors


def _flatten(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(row of each value, flat values) of a list array; null lists are empty."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.repeat(np.arange(len(col)), lengths), pc.list_flatten(col)


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(row of each value, flat values as numpy) of a list column; null lists are empty."""
    rows, values = _flatten(table.column(name))
    return rows, values.to_numpy(zero_copy_only=False)


def pooled_peers(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, item, support) per distinct (user row, item) that the user's similar users clicked:
    support is the sum of those users' similarities to u (augment.rank_by neighbour). The sums add
    at most k_users float32 values in double, exactly unless their magnitudes differ by more than
    2^29: the order they are added in does not matter."""
    _, sim = _list_column(table, "peer_sim")
    peer_user, lists = _flatten(table.column("peer_items"))  # one item list per similar user, as peer_sim
    peer, items = _flatten(lists)
    user, item = peer_user[peer], items.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((item, user))
    user, item, support = user[order], item[order], sim[peer[order]].astype(np.float64)
    start = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (item[1:] != item[:-1])]) if len(user) else user
    return user[start], item[start], np.add.reduceat(support, start) if len(start) else support


def _cosine(u: np.ndarray, uu: np.ndarray, v: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64 (the same bits whatever else the arrays hold), as float32; uu
    and vv are the rows' squared norms, summed once per user and item, not once per candidate."""
    dot = (u * v).sum(axis=1)
    norms = np.sqrt(uu * vv)
    return (dot / np.maximum(norms, 1e-12)).astype(np.float32)


def top_k(group: np.ndarray, aug: np.ndarray, sel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, their rank 1..k): each group's k best by `sel` (ties: smaller id)."""
    order = np.lexsort((aug, -sel, group))
    rank = ranks_in(group, order)
    keep = rank <= k
    return order[keep], rank[keep]


@dataclass
class Cands:
    """Candidate rows of one strategy in a chunk: `pos` indexes the chunk's positives."""

    pos: np.ndarray
    aug: np.ndarray
    score: np.ndarray
    sel: np.ndarray
    rank: np.ndarray

    def take(self, idx: np.ndarray) -> Cands:
        return Cands(self.pos[idx], self.aug[idx], self.score[idx], self.sel[idx], self.rank[idx])


class Chunk:
    """One chunk of user rows, flattened: users and their positives (which no candidate may be)."""

    def __init__(self, table: pa.Table, items: Items) -> None:
        self.items = items
        self.user_ids = table.column("user_id").to_numpy().astype(np.int64)
        self.user_vecs = list_vectors(table, "_u").astype(np.float64)
        self.user_sq = (self.user_vecs * self.user_vecs).sum(axis=1)
        self.pos_user, self.pos_item = _list_column(table, "pos")
        self.pos_item = self.pos_item.astype(np.int64)
        rows, found = items.rows(self.pos_item)
        self.seen = np.unique(self.pos_user[found] * len(items.ids) + rows[found])  # sorted

    def fresh(self, user: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of candidates with a vector that user may get, their item rows)."""
        rows, found = self.items.rows(item_ids)
        keys = user * len(self.items.ids) + rows
        return found & ~find_sorted(self.seen, keys)[1], rows

    def scored(self, user: np.ndarray, aug: np.ndarray, rows: np.ndarray, own: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(teacher's score, selection): the score or the strategy's own similarity, discounted."""
        score = _cosine(self.user_vecs[user], self.user_sq[user], self.items.vectors[rows].astype(np.float64),
                        self.items.sq_norms[rows])
        sel = (score if own is None else own).astype(np.float64)
        if self.items.factor is not None:
            sel = sel * self.items.factor[rows]
        return score, sel

    def per_user(self, cfg: AugmentConfig, user: np.ndarray, aug: np.ndarray, own: np.ndarray | None) -> Cands:
        """A per-user strategy's top-k, ranked once per user, offered to each of the user's positives."""
        ok, rows = self.fresh(user, aug)
        user, aug, rows = user[ok], aug[ok], rows[ok]
        score, sel = self.scored(user, aug, rows, None if own is None else own[ok])
        kept, rank = top_k(user, aug, sel, cfg.k)  # sorted by user first: one run of rows a user
        per = np.bincount(user[kept], minlength=len(self.user_ids))
        start = np.cumsum(per) - per
        reps = per[self.pos_user]
        pos = np.repeat(np.arange(len(self.pos_user)), reps)
        src = start[self.pos_user[pos]] + np.arange(len(pos)) - np.repeat(np.cumsum(reps) - reps, reps)
        idx = kept[src]
        return Cands(pos, aug[idx], score[idx], sel[idx], rank[src])

    def i2i(self, cfg: AugmentConfig, own: bool) -> Cands:
        rows, found = self.items.rows(self.pos_item)
        width = self.items.i2i.shape[1]
        pos = np.repeat(np.arange(len(self.pos_item)), width)
        nb = np.where(found[:, None], self.items.i2i[rows], -1).reshape(-1)
        nb_score = self.items.i2i_score[rows].reshape(-1)
        keep = nb >= 0
        pos, aug, nb_score = pos[keep], nb[keep], nb_score[keep]
        ok, item_rows = self.fresh(self.pos_user[pos], aug)
        pos, aug, item_rows, nb_score = pos[ok], aug[ok], item_rows[ok], nb_score[ok]
        score, sel = self.scored(self.pos_user[pos], aug, item_rows, nb_score if own else None)
        kept, rank = top_k(pos, aug, sel, cfg.k)
        return Cands(pos[kept], aug[kept], score[kept], sel[kept], rank)


def chunk_candidates(cfg: AugmentConfig, table: pa.Table, items: Items) -> tuple[Chunk, dict[str, Cands]]:
    """Every positive's ranked candidates per enabled strategy, for one chunk of user rows."""
    chunk = Chunk(table, items)
    own = cfg.rank_by == "neighbour"  # i2i and u2u2i ranked by their own similarity, not s(u, v)
    out: dict[str, Cands] = {}
    if "u2i" in cfg.strategies:
        user, aug = _list_column(table, "u2i")
        out["u2i"] = chunk.per_user(cfg, user, aug.astype(np.int64), None)
    if "i2i" in cfg.strategies:
        out["i2i"] = chunk.i2i(cfg, own)
    if "u2u2i" in cfg.strategies:
        user, aug, nb = pooled_peers(table)
        out["u2u2i"] = chunk.per_user(cfg, user, aug, nb if own else None)
    return chunk, out


