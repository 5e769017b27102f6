"""Pipeline stages. Each is a function of the run context that writes its output tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from divspa import storage
from divspa.runtime import RunContext


@dataclass(frozen=True)
class Stage:
    name: str
    outputs: tuple[str, ...]  # tables whose committed transaction marks the stage done for a run
    run: Callable[[RunContext], dict[str, Any]]
    doc: str
    # Files besides tables the stage must have produced (a checkpoint) for it to count as done.
    artifacts: Callable[[RunContext], list[str]] | None = None

    def done(self, ctx: RunContext) -> bool:
        files = self.artifacts(ctx) if self.artifacts else []
        return ctx.stage_done(self.name, list(self.outputs)) and all(storage.settings().is_file(f) for f in files)
