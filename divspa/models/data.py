"""Streaming Delta tables into PyTorch batches: Arrow record batches, never one big frame.

Rows are read file by file (in an order seeded by (seed, epoch)) into a shuffle buffer, which
is permuted and cut into batches. Memory is bounded by the buffer, not by the table, and the
order is reproducible for a given table version and seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from divspa.config import ModelConfig
from divspa.models.encoding import Vocab
from divspa.models.towers import UserInputs


def fragments(dataset: pads.Dataset, filter: pads.Expression | None) -> list[pads.Fragment]:
    frags = list(dataset.get_fragments(filter=filter))
    return sorted(frags, key=lambda f: f.path)


def stream_tables(dataset: pads.Dataset, columns: list[str], filter: pads.Expression | None, batch_size: int,
                  shuffle_buffer: int = 0, seed: int = 0, epoch: int = 0, limit: int | None = None,
                  ) -> Iterator[pa.Table]:
    """Yield tables of `batch_size` rows (the last may be shorter); shuffled when shuffle_buffer > 0."""
    rng = np.random.default_rng([seed, epoch])
    frags = fragments(dataset, filter)
    if shuffle_buffer:
        frags = [frags[i] for i in rng.permutation(len(frags))]
    buffer: list[pa.RecordBatch] = []
    buffered = 0
    emitted = 0
    target = max(shuffle_buffer, batch_size)

    def drain(final: bool) -> Iterator[pa.Table]:
        nonlocal buffer, buffered, emitted
        table = pa.Table.from_batches(buffer) if buffer else None
        buffer, buffered = [], 0
        if table is None or table.num_rows == 0:
            return
        if shuffle_buffer:
            table = table.take(pa.array(rng.permutation(table.num_rows)))
        full = table.num_rows if final else (table.num_rows // batch_size) * batch_size
        for start in range(0, full, batch_size):
            chunk = table.slice(start, min(batch_size, full - start))
            if limit is not None and emitted + chunk.num_rows > limit:
                chunk = chunk.slice(0, limit - emitted)
            if chunk.num_rows:
                emitted += chunk.num_rows
                yield chunk
        rest = table.slice(full)
        if rest.num_rows:
            buffer, buffered = rest.to_batches(), rest.num_rows

    for frag in frags:
        # Scanning with the dataset's schema fills partition columns (run_id) from the fragment's path.
        scanner = pads.Scanner.from_fragment(frag, schema=dataset.schema, columns=columns, filter=filter,
                                             batch_size=min(batch_size, 65536), use_threads=False)
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            buffer.append(batch)
            buffered += batch.num_rows
            if buffered >= target:
                yield from drain(final=False)
                if limit is not None and emitted >= limit:
                    return
    yield from drain(final=True)


def encode_users(table: pa.Table, vocab: Vocab, mcfg: ModelConfig) -> UserInputs:
    return UserInputs(
        tokens=vocab.user_token_lists(table.column("user_features"), mcfg.max_user_tokens),
        history=vocab.item_lists(table.column("history"), mcfg.history_len, keep="last"),
    )


@dataclass
class ExampleBatch:
    users: UserInputs
    items: torch.Tensor  # [B] item index of the positive

    @property
    def size(self) -> int:
        return int(self.items.shape[0])


def encode_examples(table: pa.Table, vocab: Vocab, mcfg: ModelConfig) -> ExampleBatch:
    items = vocab.item_index(np.asarray(table.column("item_id").to_numpy(), dtype=np.int64))
    return ExampleBatch(encode_users(table, vocab, mcfg), torch.from_numpy(items))
