"""The pipeline: stages in order, each skipped when this run already committed its outputs."""

from __future__ import annotations

import logging
from typing import Any

from divspa.errors import ConfigError
from divspa.runtime import RunContext
from divspa.stages import BY_NAME, STAGES, Stage

__all__ = ["BY_NAME", "STAGES", "run_pipeline", "run_stage"]

log = logging.getLogger(__name__)



def run_stage(ctx: RunContext, stage: Stage) -> dict[str, Any] | None:
    """Run one stage unless its outputs for this run are committed (then skip, unless forced)."""
    if not ctx.force and stage.done(ctx):
        log.info("stage %s: outputs for run %s already committed; skipping (use --force to redo)",
                 stage.name, ctx.run_id)
        return None
    with ctx.timed(stage.name) as info:
        info.update(stage.run(ctx))
    return info


def run_pipeline(ctx: RunContext, stages: list[str] | None = None) -> dict[str, dict[str, Any]]:
    names = stages or [s.name for s in STAGES]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ConfigError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(BY_NAME)}")
    for stage in STAGES:
        if stage.name in names:
            run_stage(ctx, stage)
    return ctx.stats
