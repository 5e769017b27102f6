"""Ids and feature tokens to embedding indices, vectorised over Arrow batches.

One `Vocab` serves the trainer, the evaluator and the Spark export (on executors), so the
vectors a job exports are exactly the ones the trained model computes. Index 0 is padding and
unknown values (an item never seen in train, a new feature value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch


@dataclass
class Vocab:
    """The feature values are Arrow string arrays, not Python lists: one buffer and its offsets
    (tens of millions of values are a few hundred MB, where a list of str is several GB of
    objects), stored so in checkpoints (`token_tensors`)."""

    item_ids: np.ndarray  # sorted int64 item ids; item_ids[i] has index i + 1
    user_tokens: pa.StringArray  # user_tokens[i] has index i + 1 (a list of str is taken too)
    item_tokens: pa.StringArray

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        if len(self.item_ids) > 1 and np.any(np.diff(self.item_ids) <= 0):
            raise ValueError("item_ids must be sorted and unique")
        self.user_tokens = _strings(self.user_tokens)
        self.item_tokens = _strings(self.item_tokens)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        """Embedding index of each item id (0 for ids outside the vocabulary)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.num_items == 0:
            return np.zeros(ids.shape, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids)
        clipped = np.minimum(pos, self.num_items - 1)
        return np.where(self.item_ids[clipped] == ids, clipped + 1, 0).astype(np.int64)

    def item_id(self, index: np.ndarray) -> np.ndarray:
        return self.item_ids[np.asarray(index) - 1]

    def item_lists(self, lists: pa.Array, width: int, keep: str = "last") -> torch.Tensor:
        """A list<long> column as a [rows, width] index matrix, zero-padded (keep the last/first items)."""
        flat = np.asarray(pc.list_flatten(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
        return _pad(self.item_index(flat), _offsets(lists), width, keep)

    def float_lists(self, lists: pa.Array, width: int) -> torch.Tensor:
        """A list<float> column (e.g. weights aligned with item_lists(keep="first")) as [rows, width]."""
        flat = np.asarray(pc.list_flatten(lists).to_numpy(zero_copy_only=False), dtype=np.float32)
        return _pad(flat, _offsets(lists), width, "first")

    def user_token_lists(self, lists: pa.Array, width: int) -> torch.Tensor:
        return _tokens(lists, self.user_tokens, width)

    def item_token_lists(self, lists: pa.Array, width: int) -> torch.Tensor:
        return _tokens(lists, self.item_tokens, width)


def _strings(values: pa.Array | pa.ChunkedArray | list[str]) -> pa.StringArray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string()) if isinstance(values, pa.Array) else pa.array(values, pa.string())


def token_tensors(values: pa.StringArray) -> dict[str, torch.Tensor]:
    """A string array as two tensors (UTF-8 bytes, int64 offsets): what a checkpoint stores."""
    values = values.cast(pa.large_string()).take(pa.array(np.arange(len(values))))  # compact: offsets from 0
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64, count=len(values) + 1) if len(values) else \
        np.zeros(1, np.int64)
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8, count=int(offsets[-1])) if offsets[-1] else \
        np.zeros(0, np.uint8)
    return {"offsets": torch.from_numpy(offsets.copy()), "data": torch.from_numpy(data.copy())}


def tokens_from_tensors(stored: dict[str, torch.Tensor] | list[str]) -> pa.StringArray:
    """`token_tensors`' inverse; a list of str (checkpoints before 2026-12-07) is read as it is."""
    if isinstance(stored, list):
        return _strings(stored)
    offsets, data = stored["offsets"].numpy(), stored["data"].numpy()
    large = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.tobytes()),
                                             pa.py_buffer(data.tobytes()))
    return large.cast(pa.string())


def _offsets(lists: pa.Array) -> np.ndarray:
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    return np.asarray(lists.offsets.to_numpy(), dtype=np.int64) - int(lists.offsets[0].as_py() or 0)


def _tokens(lists: pa.Array, value_set: pa.Array, width: int) -> torch.Tensor:
    flat = pc.list_flatten(lists)
    idx = pc.fill_null(pc.index_in(flat, value_set=value_set), -1).to_numpy(zero_copy_only=False) + 1
    return _pad(np.asarray(idx, dtype=np.int64), _offsets(lists), width, "first")


def _pad(values: np.ndarray, offsets: np.ndarray, width: int, keep: str) -> torch.Tensor:
    """Scatter ragged rows (values split at offsets) into a zero-padded [rows, width] matrix."""
    rows = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.zeros((rows, width), dtype=values.dtype if values.dtype.kind == "f" else np.int64)
    if len(values):
        row = np.repeat(np.arange(rows), lengths)
        col = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
        if keep == "last":  # drop the oldest items so the most recent survive truncation
            col = col - np.repeat(np.maximum(lengths - width, 0), lengths)
        ok = (col >= 0) & (col < width)
        out[row[ok], col[ok]] = values[ok]
    return torch.from_numpy(out)
