"""The `runs` table: each run's record, its quality gates, and which run a trainer should read.

A scheduled pipeline produces a new run every day, and a run whose teacher came out worse than
popularity is as complete as a good one. So every run ends (stage `publish`) by checking the
configured gates against its own metrics and the previous published run, and records the
outcome here. Trainers ask for the latest *published* run (`latest_published`, or
`DeltaIterableDataset(..., run="latest")`, `divspa sql --run latest`) and never see a gated one;
a gated run's tables stay in place for inspection.

Reading this table needs no JVM and no torch (delta-rs), so a trainer or a scheduler's check can
use it anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import yaml
from deltalake.exceptions import TableNotFoundError

from divspa.config import Config, PublishConfig, redacted_dict
from divspa.errors import NoPublishedRun
from divspa.snapshot import Snapshot

TABLE = "runs"
PUBLISHED, GATED, FAILED = "published", "gated", "failed"


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float | None
    threshold: str
    detail: str  # one line, said when the gate fails


# Per metric at publish.k, per model role (popularity, base, divspa): the evaluate stage's figures
# the gates read and the runs row records.
Figures = dict[str, dict[str, float | None]]
PUBLISH_METRICS = ("hr", "ndcg", "distinct_items", "long_tail_share", "distinct_share", "gini")


def check_gates(cfg: PublishConfig, figures: Figures, augmented_rows: int | None,
                previous: dict[str, Any] | None) -> list[Gate]:
    """The configured gates on this run's figures.

    A gate whose inputs are missing fails (a run without an evaluated student must not be
    published by accident); the augmented-rows gate passes when there is no previous published
    run to compare with (the first run)."""
    k = cfg.k
    get = lambda metric, role: figures.get(metric, {}).get(role)  # noqa: E731
    pop, base = get(cfg.metric, "popularity"), get(cfg.metric, "base")
    gates = []
    if cfg.min_base_vs_popularity is not None:
        ratio = base / pop if base is not None and pop else None
        threshold = f">= {cfg.min_base_vs_popularity:g} x popularity"
        ok = ratio is not None and ratio >= cfg.min_base_vs_popularity
        detail = (f"base {cfg.metric}@{k} {_f(base)} is {_f(ratio)}x popularity's {_f(pop)} (gate: "
                  f"{threshold})") if ratio is not None else f"base or popularity {cfg.metric}@{k} missing"
        gates.append(Gate("base_vs_popularity", ok, ratio, threshold, detail))
    student_gates = [("divspa_vs_base", cfg.metric, cfg.max_divspa_drop),
                     ("ndcg_vs_base", "ndcg", cfg.max_ndcg_drop if cfg.metric != "ndcg" else None),
                     ("distinct_vs_base", "distinct_items", cfg.max_diversity_drop),
                     ("long_tail_vs_base", "long_tail_share", cfg.max_diversity_drop)]
    for name, metric, drop in student_gates:
        if drop is not None:
            gates.append(_versus_base(name, metric, k, drop, get(metric, "divspa"), get(metric, "base"),
                                      get("distinct_share", "base")))
    if cfg.augmented_rows_range is not None:
        low, high = cfg.augmented_rows_range
        before = previous.get("augmented_rows") if previous else None
        threshold = f"in [{low:g}, {high:g}] x the previous published run"
        if not before:
            gates.append(Gate("augmented_rows", augmented_rows is not None, None, threshold,
                              "no augmented rows" if augmented_rows is None else "no previous published run"))
        else:
            ratio = (augmented_rows or 0) / before
            detail = (f"augmented rows {augmented_rows or 0:,} are {ratio:.2f}x run {previous['run_id']}'s "
                      f"{before:,} (gate: {threshold})")
            gates.append(Gate("augmented_rows", low <= ratio <= high, ratio, threshold, detail))
    return gates


_WHAT = {"hr": "HR@{k}", "ndcg": "NDCG@{k}", "distinct_items": "distinct items in the top-{k} lists",
         "long_tail_share": "long-tail share of the top-{k} lists"}


def _versus_base(name: str, metric: str, k: int, drop: float, student: float | None, base: float | None,
                 base_share: float | None) -> Gate:
    """The final student's `metric` against (1 - drop) x the base's. A base at 0 (no long-tail item
    in its lists) cannot be undercut, so any student passes it."""
    floor = 1 - drop
    threshold = f">= {floor:g} x base"
    what = _WHAT[metric].format(k=k)
    if student is None or base is None:
        return Gate(name, False, None, threshold, f"DivSPA or base {what} missing (did train_divspa and evaluate run?)")
    ratio = student / base if base else None
    ok = ratio is None or ratio >= floor
    detail = f"DivSPA {what} {_f(student)} is {_f(ratio)}x base's {_f(base)} (gate: {threshold})"
    if metric == "distinct_items" and base_share is not None:
        # How concentrated the base was says whether augmentation could have widened it (issue 38).
        detail += f"; the base's top-{k} lists fill {base_share:.2%} of their slots with distinct items"
    return Gate(name, ok, ratio, threshold, detail)


def outcome(gates: list[Gate]) -> tuple[str, str | None]:
    failed = [g.detail for g in gates if not g.passed]
    return (GATED, "; ".join(failed)) if failed else (PUBLISHED, None)


def gates_json(gates: list[Gate]) -> str:
    return json.dumps([asdict(g) for g in gates])


def config_hash(cfg: Config) -> str:
    """Equal for two runs with equal settings: the run id is left out, secrets masked."""
    data = redacted_dict(cfg)
    data["run"]["run_id"] = None
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"


# --- reading (delta-rs: no JVM) ------------------------------------------------------------------


def records(wh: Any) -> list[dict[str, Any]]:
    """Every run's record, oldest first (by when it was recorded)."""
    return _sorted(wh.snapshot(TABLE)) if wh.exists(TABLE) else []


def records_at(runs_uri: str, storage_options: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The same from the runs table's location (a trainer that knows only a table's URI)."""
    try:
        snapshot = Snapshot.load(runs_uri, None, storage_options)
    except (TableNotFoundError, FileNotFoundError, OSError) as exc:
        raise NoPublishedRun(f"no runs table at {runs_uri}: has any run reached stage publish?") from exc
    return _sorted(snapshot)


def _sorted(snapshot: Snapshot) -> list[dict[str, Any]]:
    return sorted(snapshot.dataset().to_table().to_pylist(), key=lambda r: r["recorded_at"])


def record(wh: Any, run_id: str) -> dict[str, Any] | None:
    return next((r for r in records(wh) if r["run_id"] == run_id), None)


def latest_published(wh: Any) -> dict[str, Any] | None:
    """The most recently recorded run whose outcome is published (a trainer's "latest")."""
    return latest_of(records(wh))


def latest_of(rows: list[dict[str, Any]], exclude: str | None = None) -> dict[str, Any] | None:
    """The same among `rows` (records(), oldest first), leaving out run `exclude`."""
    published = [r for r in rows if r["outcome"] == PUBLISHED and r["run_id"] != exclude]
    return published[-1] if published else None


def resolve_run(rows: list[dict[str, Any]], run: str, where: str) -> str:
    """A run id as given, or for "latest" the latest published run's id among `rows`."""
    if run != "latest":
        return run
    latest = latest_of(rows)
    if latest is None:
        raise NoPublishedRun(f"no published run under {where}: every recorded run failed a gate or a stage, "
                             "or none has reached stage publish (`divspa runs` lists them)")
    return latest["run_id"]
