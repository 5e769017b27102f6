"""The `divspa` command: run the pipeline or one stage, and inspect the warehouse.

    divspa run --conf conf/default.yaml [--set section.key=value ...] [--run-id ID] [--force]
    divspa <stage> --conf ...          one stage (the same code spark-submit's jobs/<stage>.py runs)
    divspa tables | history TABLE      what the warehouse holds
    divspa runs                        every run's record: published, gated or failed, and why
    divspa report RUN_ID|latest        re-render a run's HTML report from its tables (no JVM)
    divspa gc [--keep N] [--dry-run]   retention: drop old runs' partitions, vacuum, checkpoint
    divspa cluster start|stop|status   a local Spark standalone cluster (see divspa/cluster.py)

Exit codes (divspa/errors.py): 0 success, 1 the work failed (one line on stderr, tables at their
previous versions), 2 the command line or configuration is wrong (nothing ran), 3 the run
completed but a quality gate failed (recorded, not published), 4 another process holds this run id.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from divspa import __version__, storage
from divspa.config import Config, load_config
from divspa.delta import Warehouse
from divspa.errors import ConfigError, DivspaError, NotPublished, StageError
from divspa.pipeline import BY_NAME, STAGES, run_pipeline, run_stage
from divspa.runtime import RunContext, close_log, setup_logging

log = logging.getLogger("divspa")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", default=None, help="YAML config (default: built-in defaults = conf/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set split.test_fraction=0.2 (repeatable)")
    p.add_argument("--run-id", default=None, help="run id (default: run.run_id, else today's UTC date)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="divspa", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"divspa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the pipeline: " + " -> ".join(s.name for s in STAGES))
    _common(p)
    p.add_argument("--force", action="store_true", help="redo stages whose outputs this run already committed")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run, in pipeline order")
    for stage in STAGES:
        p = sub.add_parser(stage.name, help=stage.doc)
        _common(p)
        p.add_argument("--force", action="store_true", help="redo the stage even if its outputs are committed")
    sub.add_parser("cluster", help="start|stop|status a local Spark standalone cluster (divspa cluster -h)")
    p = sub.add_parser("tables", help="list tables with version, rows and files")
    _common(p)
    p = sub.add_parser("history", help="a table's Delta history")
    _common(p)
    p.add_argument("table")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("runs", help="every run's record (outcome, gates, key figures); no JVM")
    _common(p)
    p = sub.add_parser("report", help="re-render a run's HTML report from its tables, without re-evaluating; "
                                      "no JVM (pass the --conf the run used: the page states its settings)")
    _common(p)
    p.add_argument("run", metavar="RUN", help='a run id, or "latest" (the latest published run)')
    p = sub.add_parser("gc", help="drop all but the newest --keep runs' partitions, vacuum, checkpoint; no JVM")
    _common(p)
    p.add_argument("--keep", type=int, default=None, help="runs to keep (default: run.keep_runs)")
    p.add_argument("--dry-run", action="store_true", help="say what would be dropped, change nothing")
    p = sub.add_parser("sql", help="read-only Spark SQL over the warehouse's tables, by name "
                                   "(time travel and DESCRIBE HISTORY with native Delta)")
    _common(p)
    p.add_argument("query", help='e.g. "SELECT strategy, count(*) FROM augmented_positives GROUP BY 1"')
    p.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    p.add_argument("--run", default=None, metavar="RUN",
                   help='"latest" (the latest published run) or a run id: every table shows only that run')
    return parser


def _config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.run_id:
        overrides.append(f"run.run_id={args.run_id}")
    return load_config(args.conf, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cluster"]:  # no config, no session: it manages Spark daemons
        from divspa import cluster

        setup_logging("INFO")
        return cluster.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        close_log()


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
        if args.command in ("tables", "history", "sql", "runs", "gc", "report"):
            return _inspect(args, cfg)
        stages = args.stages.split(",") if getattr(args, "stages", None) else None
        if stages:
            unknown = [s for s in stages if s not in BY_NAME]
            if unknown:
                raise ConfigError(f"--stages: unknown stage {unknown[0]!r}; stages are {', '.join(BY_NAME)}")
        ctx = RunContext.start(cfg, args.command, force=args.force)
        try:
            _work(ctx, args.command, stages)
        finally:
            ctx.close()
        return 0
    except (DivspaError, FileNotFoundError) as exc:  # exit codes: divspa/errors.py
        log.debug("traceback", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"divspa: {'config error: ' if isinstance(exc, ConfigError) else ''}{first}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


def _work(ctx: RunContext, command: str, stages: list[str] | None) -> None:
    """Run the stages; record a failure in the runs table; after publish, retention and the verdict."""
    try:
        if command == "run":
            stats = run_pipeline(ctx, stages)
            _print_summary(ctx, stats)
        else:
            run_stage(ctx, BY_NAME[command])
    except StageError as exc:
        _record_failure(ctx, str(exc))
        raise
    verdict = ctx.stats.get("publish")
    if verdict is None:
        return
    if ctx.cfg.run.keep_runs is not None:
        from divspa import retention

        retention.collect(ctx.warehouse, ctx.cfg, ctx.cfg.run.keep_runs)
    if verdict["outcome"] != "published":
        raise NotPublished(f"run {ctx.run_id} is not published: {verdict['reason']}")
    print(f"run {ctx.run_id}: published (trainers reading the latest published run now get it)")


def _record_failure(ctx: RunContext, reason: str) -> None:
    """A failed run is recorded as such (never "latest"); a record that cannot be written is only logged."""
    try:
        from divspa.stages.publish import record

        record(ctx, "failed", reason.splitlines()[0][:1000])
    except Exception as exc:  # the stage's own error is what the user must see
        log.warning("could not record the failure in the runs table: %s", exc)


def _print_summary(ctx: RunContext, stats: dict) -> None:
    print(f"\nrun {ctx.run_id}: warehouse {ctx.warehouse.root}")
    for stage in STAGES:
        info = stats.get(stage.name)
        if info is None:
            print(f"  {stage.name:<14} skipped (already committed for this run)")
        else:
            figures = ", ".join(f"{k}={v}" for k, v in info.items() if k != "wall_s" and not isinstance(v, dict))
            print(f"  {stage.name:<14} {info['wall_s']:>7.1f}s  {figures}")
    print(f"  logs and resolved configs: {ctx.cfg.run_dir}")
    _print_comparison(ctx)


def _print_comparison(ctx: RunContext) -> None:
    """Base vs DivSPA (and popularity) side by side, from the metrics table."""
    wh = ctx.warehouse
    if not wh.exists("metrics"):
        return
    rows = ctx.read("metrics").where("stage = 'evaluate'").collect()
    if not rows:
        return
    get = {(r["model"], r["metric"], r["k"]): r["value"] for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    ks = sorted({r["k"] for r in rows if r["metric"] == "hr"})
    dks = sorted({r["k"] for r in rows if r["metric"] == "distinct_items"})
    tks = sorted({r["k"] for r in rows if r["metric"] == "long_tail_share"})[:1]
    cols = [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + [f"distinct@{k}" for k in dks]
    cols += [f"long_tail@{k}" for k in tks]

    def values(m: str) -> list[float | None]:
        out = [get.get((m, "hr", k)) for k in ks] + [get.get((m, "ndcg", k)) for k in ks]
        return out + [get.get((m, "distinct_items", k)) for k in dks] + [get.get((m, "long_tail_share", k)) for k in tks]

    width = max(12, *(len(m) + 9 for m in models))
    mcfg = ctx.cfg.model
    print(f"\nbase: {mcfg.arch}{' with RFM (model.ssl)' if mcfg.ssl == 'rfm' else ''}; students train as it did")
    print(f"{'model':<{width}}" + "".join(f"{c:>14}" for c in cols))
    for m in models:
        cells = [f"{v:>14,.0f}" if c.startswith("distinct") else f"{v:>14.4f}" if v is not None else f"{'-':>14}"
                 for c, v in zip(cols, values(m), strict=True)]
        print(f"{m:<{width}}" + "".join(cells))
    # What the method is for, in one line per model: its change over the base model, measured here.
    base = values("base") if "base" in models else None
    for m in models:
        if base is None or m == "base":
            continue
        cells = [f"{100 * (v - b) / b:>+13.1f}%" if v is not None and b else f"{'-':>14}"
                 for v, b in zip(values(m), base, strict=True)]
        print(f"{m + ' vs base':<{width}}" + "".join(cells))
    k = ctx.cfg.publish.k
    share, gini = get.get(("base", "distinct_share", k)), get.get(("base", "gini", k))
    if share is not None:
        print(f"\nbase concentration: its top-{k} lists fill {share:.2%} of their slots with distinct items"
              + (f", Gini {gini:.3f}" if gini is not None else ""))
    report = storage.join(ctx.cfg.run_dir, "report.html")
    if storage.settings().is_file(report):
        print(f"\nreport: {report}")


def _inspect(args: argparse.Namespace, cfg: Config) -> int:
    from divspa.runtime import connect

    setup_logging("INFO" if args.command == "gc" else "WARNING")
    if args.command == "sql":
        _, wh = connect(cfg)
        return _sql(wh, args.query, args.limit, args.run)
    # The rest read and commit Delta logs with delta-rs: no JVM. Object-store settings come from
    # the config's spark.conf (spark.hadoop.fs.s3a.*) and AWS_* variables, as for a run.
    storage.configure(dict(cfg.spark.conf), cfg.run.storage_options)
    wh = Warehouse(None, cfg.warehouse, checkpoint_interval=cfg.run.checkpoint_interval)
    if args.command == "runs":
        return _runs(wh)
    if args.command == "report":
        return _report(wh, args)
    if args.command == "gc":
        from divspa import retention

        keep = args.keep if args.keep is not None else cfg.run.keep_runs
        if keep is None or keep < 1:
            raise ConfigError("gc: how many runs to keep? pass --keep N (N >= 1) or set run.keep_runs")
        res = retention.collect(wh, cfg, keep, dry_run=args.dry_run)
        verb = "would drop" if args.dry_run else "dropped"
        print(f"kept {len(res.kept)} runs: {', '.join(res.kept) or '-'}\n{verb} {len(res.dropped)} runs: "
              f"{', '.join(res.dropped) or '-'}" + ("" if args.dry_run else f"\nvacuumed {res.vacuumed_files} files"))
        return 0
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


def _runs(wh: Warehouse) -> int:
    from divspa import runs

    rows = runs.records(wh)
    if not rows:
        print(f"no run recorded under {wh.root} (runs are recorded by stage publish)")
        return 0
    latest = runs.latest_of(rows)
    print(f"{'run_id':<22} {'outcome':<10} {'recorded (UTC)':<20} {'metric':<7} {'popular':>8} {'base':>8} "
          f"{'divspa':>8} {'augmented':>11} {'base conc.':>10}  reason")
    for r in rows:
        mark = " *" if latest is not None and r["run_id"] == latest["run_id"] else ""
        cells = [f"{r[c]:>8.4f}" if r[c] is not None else f"{'-':>8}" for c in ("popularity", "base", "divspa")]
        aug = f"{r['augmented_rows']:>11,}" if r["augmented_rows"] is not None else f"{'-':>11}"
        share = r.get("base_distinct_share")  # none in rows recorded before the column existed
        conc = f"{share:>10.2%}" if share is not None else f"{'-':>10}"
        print(f"{r['run_id'] + mark:<22} {r['outcome']:<10} {r['recorded_at']:%Y-%m-%d %H:%M:%S}  "
              f"{r['metric'] or '-':<7} {' '.join(cells)} {aug} {conc}  {r['reason'] or ''}")
    print("(* the latest published run: what trainers reading run='latest' get; base conc.: the share of the "
          "base's top-k slots holding distinct items)" if latest else "(no run is published)")
    return 0


def _report(wh: Warehouse, args: argparse.Namespace) -> int:
    import pyarrow.compute as pc

    from divspa import runs
    from divspa.report import write_report

    run_id = runs.resolve_run(runs.records(wh), args.run, wh.root)
    evaluated = wh.exists("metrics") and wh.dataset("metrics").count_rows(
        filter=(pc.field("run_id") == run_id) & (pc.field("stage") == "evaluate")) > 0
    if not evaluated:
        print(f"divspa: run {run_id!r} has no evaluated figures under {wh.root} (stage evaluate writes them; "
              "`divspa runs` lists the recorded runs)", file=sys.stderr)
        return 1
    cfg = load_config(args.conf, [*args.overrides, f"run.run_id={run_id}"])
    print(f"report: {write_report(wh, cfg)}")
    return 0


def _sql(wh, query: str, limit: int, run: str | None = None) -> int:
    from pyspark.errors import PySparkException

    from divspa import runs
    from divspa.sql import check_read_only, register_tables

    run_id = runs.resolve_run(runs.records(wh), run, wh.root) if run else None
    try:
        check_read_only(wh.spark, query)  # before anything runs: DDL/DML would execute eagerly
        register_tables(wh, run_id)
        df = wh.spark.sql(query)
        rows = df.limit(limit + 1).collect()
    except PySparkException as exc:
        print(f"divspa: SQL error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    cols = df.columns
    cells = [[_cell(r[c]) for c in cols] for r in rows[:limit]]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    more = " (more rows not shown: --limit)" if len(rows) > limit else ""
    print(f"({min(len(rows), limit)} rows{more})")
    return 0


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        return "[" + ", ".join(map(_cell, value[:8])) + f", ... ({len(value)} items)]"
    return "NULL" if value is None else str(value)


def _ts(entry: dict) -> str:
    import datetime as dt

    ms = entry.get("timestamp")
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "?"


if __name__ == "__main__":
    sys.exit(main())
