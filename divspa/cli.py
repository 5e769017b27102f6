"""The `divspa` command: run the pipeline or one stage, and inspect the warehouse.

    divspa run --conf conf/default.yaml [--set section.key=value ...] [--run-id ID] [--force]
    divspa <stage> --conf ...          one stage (the same code spark-submit's jobs/<stage>.py runs)
    divspa tables | history TABLE      what the warehouse holds
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from divspa.config import Config, ConfigError, load_config
from divspa.pipeline import BY_NAME, STAGES, run_pipeline, run_stage
from divspa.runtime import RunContext, StageError, setup_logging

log = logging.getLogger("divspa")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", default=None, help="YAML config (default: built-in defaults = conf/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set split.test_fraction=0.2 (repeatable)")
    p.add_argument("--run-id", default=None, help="run id (default: run.run_id, else today's UTC date)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="divspa", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the pipeline: " + " -> ".join(s.name for s in STAGES))
    _common(p)
    p.add_argument("--force", action="store_true", help="redo stages whose outputs this run already committed")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run, in pipeline order")
    for stage in STAGES:
        p = sub.add_parser(stage.name, help=stage.doc)
        _common(p)
        p.add_argument("--force", action="store_true", help="redo the stage even if its outputs are committed")
    p = sub.add_parser("tables", help="list tables with version, rows and files")
    _common(p)
    p = sub.add_parser("history", help="a table's Delta history")
    _common(p)
    p.add_argument("table")
    p.add_argument("--limit", type=int, default=20)
    return parser


def _config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.run_id:
        overrides.append(f"run.run_id={args.run_id}")
    return load_config(args.conf, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _config(args)
        if args.command in ("tables", "history"):
            return _inspect(args, cfg)
        stages = args.stages.split(",") if getattr(args, "stages", None) else None
        if stages:
            unknown = [s for s in stages if s not in BY_NAME]
            if unknown:
                raise ConfigError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(BY_NAME)}")
        ctx = RunContext.start(cfg, args.command, force=args.force)
        if args.command == "run":
            stats = run_pipeline(ctx, stages)
            _print_summary(ctx, stats)
        else:
            run_stage(ctx, BY_NAME[args.command])
        return 0
    except ConfigError as exc:
        print(f"divspa: config error: {exc}", file=sys.stderr)
        return 2
    except StageError as exc:
        log.debug("traceback", exc_info=True)
        print(f"divspa: {exc}", file=sys.stderr)
        return 1


def _print_summary(ctx: RunContext, stats: dict) -> None:
    print(f"\nrun {ctx.run_id}: warehouse {ctx.warehouse.root}")
    for stage in STAGES:
        info = stats.get(stage.name)
        if info is None:
            print(f"  {stage.name:<12} skipped (already committed for this run)")
        else:
            figures = ", ".join(f"{k}={v}" for k, v in info.items() if k != "wall_s" and not isinstance(v, dict))
            print(f"  {stage.name:<12} {info['wall_s']:>7.1f}s  {figures}")
    print(f"  logs and resolved configs: {ctx.cfg.run_dir}")


def _inspect(args: argparse.Namespace, cfg: Config) -> int:
    from divspa.delta import Warehouse
    from divspa.spark import get_spark

    setup_logging("WARNING")
    wh = Warehouse(get_spark(cfg.spark), cfg.warehouse)
    if args.command == "tables":
        names = wh.tables()
        if not names:
            print(f"no tables under {wh.root}")
            return 0
        print(f"{'table':<22} {'version':>7} {'rows':>12}  last commit")
        for name in names:
            last = wh.history(name, 1)[0]
            print(f"{name:<22} {wh.version(name):>7} {wh.row_count(name):>12,}  {_ts(last)} {last.get('operation')}")
        return 0
    if not wh.exists(args.table):
        print(f"divspa: no table {args.table!r} under {wh.root} (have: {', '.join(wh.tables()) or 'none'})",
              file=sys.stderr)
        return 1
    for h in wh.history(args.table, args.limit):
        extra = {k: v for k, v in h.items() if k.startswith("divspa.")}
        print(f"v{h.get('version'):<5} {_ts(h)} {h.get('operation'):<14} {extra}")
    return 0


def _ts(entry: dict) -> str:
    import datetime as dt

    ms = entry.get("timestamp")
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "?"


if __name__ == "__main__":
    sys.exit(main())
