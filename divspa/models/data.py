"""Arrow batches of divspa tables to model inputs (streaming itself lives in divspa.reader)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from divspa.config import ModelConfig
from divspa.models.encoding import Vocab
from divspa.models.towers import UserInputs


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
