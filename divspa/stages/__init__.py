"""Pipeline stages. Each is a module `divspa.stages.<name>` with `run(ctx)`, writing its tables.

The catalogue (`STAGES`, here below the stages so that any of them may read it) names the stages
without importing them: stage modules bring torch, faiss and Spark's functions, and
`divspa --help` or `divspa tables` must not pay for them. A stage's module is imported when it
first runs; `divspa.pipeline` runs them in order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from divspa import storage

if TYPE_CHECKING:
    from divspa.runtime import RunContext


@dataclass(frozen=True)
class Stage:
    name: str  # also the module's name under divspa.stages
    outputs: tuple[str, ...]  # tables whose committed transaction marks the stage done for a run
    doc: str
    # The module's artifacts(ctx) lists files besides tables (a checkpoint) the stage must have
    # produced for it to count as done.
    artifacts: bool = False
    # Never skipped: the stage is cheap and judges inputs that may have been redone (publish).
    always: bool = False

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"divspa.stages.{self.name}")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return self.module.run(ctx)

    def done(self, ctx: RunContext) -> bool:
        if self.always:
            return False
        files = self.module.artifacts(ctx) if self.artifacts else []
        return ctx.stage_done(self.name, list(self.outputs)) and all(storage.settings().is_file(f) for f in files)


STAGES: tuple[Stage, ...] = (
    Stage("ingest", ("clicks", "clicks_quarantine", "user_features", "item_features"),
          "read and validate the click log into Delta"),
    Stage("split", ("split_clicks",), "train/test split (one global time cut, or each user's latest clicks)"),
    Stage("prepare", ("train_examples", "user_histories"), "build training examples and user histories"),
    Stage("tune", ("tuning",), "search the base's training settings on the validation slice (when tune.trials > 0)"),
    Stage("train_base", ("metrics",), "train the base model (model.arch, the teacher; tuned settings if any)",
          artifacts=True),
    Stage("export", ("user_embeddings", "item_embeddings"), "export the teacher's user and item vectors"),
    Stage("retrieve", ("neighbours",), "faiss top-k neighbours (u2i, i2i, u2u) of the teacher's vectors"),
    Stage("augment", ("augmented_positives",), "re-score and sample weighted augmented positives"),
    Stage("train_divspa", ("metrics",),
          "train the DivSPA student with the mix-up loss (rounds of self-distillation)", artifacts=True),
    Stage("export_student", ("user_embeddings", "item_embeddings", "neighbours"),
          "export the final student's user/item vectors and its i2i neighbours (the run's product)"),
    Stage("evaluate", ("metrics",), "HR/NDCG@K and diversity of every model; HTML report"),
    Stage("publish", ("runs",), "check the quality gates; record the run, published or not, in the runs table",
          always=True),
)
BY_NAME = {s.name: s for s in STAGES}
