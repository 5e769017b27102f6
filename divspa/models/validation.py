"""Validation HR on the latest slice of train: what early stopping and stage tune judge by."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from divspa.config import TrainConfig
from divspa.models.checkpoint import ModelBundle
from divspa.models.data import encode_examples
from divspa.reader import stream_tables


class Validation:
    """HR@val_k of the validation rows (`val_filter`) against every item the user was not fitted on
    (`train_filter`'s rows)."""

    def __init__(self, dataset: pads.Dataset, columns: list[str], train_filter: pads.Expression,
                 val_filter: pads.Expression, bundle: ModelBundle, tcfg: TrainConfig, device: torch.device) -> None:
        self.dataset, self.columns, self.bundle, self.tcfg, self.device = dataset, columns, bundle, tcfg, device
        self.train_filter, self.val_filter = train_filter, val_filter
        self._fitted: dict[int, np.ndarray] | None = None

    def fitted_items(self) -> dict[int, np.ndarray]:
        """Per validation user, the item indices of their fitted train clicks (read once).

        Validation masks them as the test evaluation masks train items: unmasked, a model's top-K
        is partly the user's own past clicks, and a student that learnt to rank augmented items
        there scored lower on validation than on test, stopping at the wrong epoch.
        """
        if self._fitted is None:
            users = [t.column("user_id") for t in stream_tables(self.dataset, ["user_id"], self.val_filter, 65536,
                                                                 limit=self.tcfg.max_val_examples)]
            ids = pc.unique(pa.chunked_array(users, pa.int64())) if users else pa.array([], pa.int64())
            rows = self.dataset.to_table(columns=["user_id", "item_id"],
                                         filter=self.train_filter & pads.field("user_id").isin(ids))
            user = rows.column("user_id").to_numpy()
            item = self.bundle.vocab.item_index(rows.column("item_id").to_numpy())
            order = np.argsort(user, kind="stable")
            user, item = user[order], item[order]
            starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.array([], int)
            self._fitted = {int(u): items for u, items in zip(user[starts], np.split(item, starts[1:]), strict=True)}
        return self._fitted

    @torch.no_grad()
    def hr(self, model: torch.nn.Module) -> float:
        """HR@val_k of the held-out latest train clicks against every item the user has not been
        fitted on (deterministic); a validation click of an item the user was fitted on is skipped."""
        model.eval()
        items = model.item_vectors()
        fitted = self.fitted_items()
        hits = n = 0
        for table in stream_tables(self.dataset, self.columns, self.val_filter, 1024,
                                   limit=self.tcfg.max_val_examples):
            batch = encode_examples(table, self.bundle.vocab, self.bundle.mcfg)
            scores = model.user_vectors(batch.users.to(self.device)) @ items.T
            target = batch.items.to(self.device)
            rows, cols = [], []
            for r, u in enumerate(table.column("user_id").to_numpy()):
                seen = fitted.get(int(u))
                if seen is not None:
                    rows.append(np.full(len(seen), r))
                    cols.append(seen)
            known = target > 0
            if rows:
                r_idx = torch.from_numpy(np.concatenate(rows)).to(self.device)
                c_idx = torch.from_numpy(np.concatenate(cols).astype(np.int64)).to(self.device)
                ok = c_idx > 0  # 0: an item outside the vocabulary
                r_idx, c_idx = r_idx[ok], c_idx[ok]
                refitted = torch.zeros_like(known)
                refitted[r_idx[c_idx == target[r_idx]]] = True
                known &= ~refitted
                scores[r_idx, c_idx - 1] = float("-inf")
            k = min(self.tcfg.val_k, scores.shape[1])
            top = scores.topk(k, dim=1).indices + 1
            hits += int(((top == target.unsqueeze(1)).any(1) & known).sum())
            n += int(known.sum())
        return hits / n if n else 0.0
