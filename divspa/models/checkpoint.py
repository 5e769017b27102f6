"""Checkpoints: weights, model shape, vocabularies and training figures in one file.

Only tensors, strings, numbers, lists and dicts go in, so `torch.load(weights_only=True)` reads
it: loading a checkpoint never executes pickled code (executors load it from a broadcast).
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from divspa import storage
from divspa.config import ModelConfig
from divspa.models.encoding import Vocab, token_tensors, tokens_from_tensors
from divspa.models.towers import TwoTower

FORMAT = "divspa.two_tower.v1"


@dataclass
class ModelBundle:
    """A model with everything needed to feed it: vocabularies and per-item train counts."""

    model: TwoTower
    vocab: Vocab
    mcfg: ModelConfig
    item_counts: torch.Tensor  # [num_items] train clicks of item index i + 1
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.meta.get("model_version", "unknown"))


def build_model(mcfg: ModelConfig, vocab: Vocab, item_tokens: torch.Tensor) -> TwoTower:
    return TwoTower(vocab.num_items, len(vocab.user_tokens), len(vocab.item_tokens), item_tokens,
                    emb_dim=mcfg.embedding_dim, hidden=mcfg.hidden_dims, out_dim=mcfg.output_dim, omega=mcfg.omega,
                    arch=mcfg.arch, heads=mcfg.attention_heads, layers=mcfg.attention_layers)


def save_checkpoint(path: str, bundle: ModelBundle) -> None:
    """Write the checkpoint to `path` (a path or URI) whole: never half-written under its name."""
    storage.settings().write_bytes(str(path), to_bytes(bundle))


def to_bytes(bundle: ModelBundle) -> bytes:
    """The checkpoint's bytes (what `load_checkpoint` reads back)."""
    state = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(bundle.mcfg),
        "state_dict": bundle.model.state_dict(),
        "item_ids": torch.from_numpy(bundle.vocab.item_ids.copy()),
        "user_tokens": token_tensors(bundle.vocab.user_tokens),
        "item_tokens": token_tensors(bundle.vocab.item_tokens),
        "item_counts": bundle.item_counts,
        "meta": bundle.meta,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_checkpoint(source: str | bytes) -> ModelBundle:
    """A checkpoint from its bytes or its location (a path or URI)."""
    data = source if isinstance(source, bytes) else storage.settings().read_bytes(str(source))
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"not a divspa two-tower checkpoint (format {state.get('format')!r})")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(state["model_config"]) - known)
    if unknown:  # a newer divspa's model: refused rather than built without what it needs
        raise ValueError(f"checkpoint {source if isinstance(source, str) else '(bytes)'} was written by a newer "
                         f"divspa: its model settings {', '.join(unknown)} are unknown here; upgrade divspa")
    mcfg = ModelConfig(**state["model_config"])  # settings added since it was written take their defaults
    vocab = Vocab(np.asarray(state["item_ids"].numpy(), dtype=np.int64), tokens_from_tensors(state["user_tokens"]),
                  tokens_from_tensors(state["item_tokens"]))
    model = build_model(mcfg, vocab, state["state_dict"]["item_tower.item_tokens"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    return ModelBundle(model, vocab, mcfg, state["item_counts"], state["meta"])
