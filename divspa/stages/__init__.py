"""Pipeline stages. Each is a function of the run context that writes its output tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from divspa.runtime import RunContext


@dataclass(frozen=True)
class Stage:
    name: str
    outputs: tuple[str, ...]  # tables whose committed transaction marks the stage done for a run
    run: Callable[[RunContext], dict[str, Any]]
    doc: str
