"""Pipeline stages. Each is a module `divspa.stages.<name>` with `run(ctx)`, writing its tables.

The catalog (`divspa.pipeline.STAGES`) names the stages without importing them: stage modules
bring torch, faiss and Spark's functions, and `divspa --help` or `divspa tables` must not pay
for them. A stage's module is imported when it first runs.
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
