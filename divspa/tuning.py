"""The base's training settings that stage `tune` searches, and the chosen ones every trainer uses.

A trial's settings are a flat {"section.key": value} map over `Config` (`train.lr`, `model.omega`),
so the same map is what Optuna suggests, what the `tuning` table stores as JSON, what a checkpoint
records under meta["tuned"] and what `with_params` lays over the configured settings. Stage
`tune` writes the map of the best trial with `chosen = true`; train_base and train_divspa read it
back through `tuned(ctx)`, so each of them still runs alone (`divspa train_base`) after a tune.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import pyarrow.dataset as pads

from divspa.config import Config
from divspa.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from divspa.runtime import RunContext

TABLE = "tuning"
ARCHS = ["youtubednn", "fm", "deepfm", "autoint"]


def distributions(space: list[str], num_items: int) -> dict[str, optuna.distributions.BaseDistribution]:
    """Every setting a search over `space` may suggest, with its range.

    Ranges span what issue 16 measured to matter somewhere: 5 to 1,000 negatives, omega 10 to 40,
    lr 0.001 to 0.003; each is widened about threefold on both sides. Negatives are capped at the
    catalogue (drawing more items than there are only repeats them)."""
    from optuna.distributions import CategoricalDistribution as Cat
    from optuna.distributions import FloatDistribution as Float
    from optuna.distributions import IntDistribution as Int

    out: dict[str, optuna.distributions.BaseDistribution] = {}
    if "lr" in space:
        out["train.lr"] = Float(1e-4, 1e-2, log=True)
    if "weight_decay" in space:
        out["train.weight_decay"] = Float(1e-8, 1e-3, log=True)
    if "negatives" in space:
        low = min(20, num_items)
        out["train.num_negatives"] = Int(low, max(low, min(2000, num_items)), log=True)
        out["train.negative_sampler"] = Cat(["uniform", "popularity"])
        out["train.popularity_power"] = Float(0.25, 1.0)  # only with the popularity sampler
        out["train.in_batch_negatives"] = Cat([False, True])
        out["train.logq_correction"] = Cat([True, False])  # only where negatives are not uniform
    if "omega" in space:
        out["model.omega"] = Float(3.0, 40.0, log=True)
    if "arch" in space:
        out["model.arch"] = Cat(ARCHS)
    if "ssl" in space:
        out["model.ssl"] = Cat(["none", "rfm"])
        out["model.ssl_weight"] = Float(0.01, 1.0, log=True)  # only with rfm
        out["model.ssl_temperature"] = Float(0.05, 0.5, log=True)  # only with rfm
    return out


def suggest(trial: optuna.Trial, dists: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
    """One trial's settings; a setting that cannot matter under the others is not drawn (the popularity
    power under uniform negatives, logQ correction when every negative is uniform, RFM's weight and
    temperature without RFM)."""
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        if _matters(name, params):
            params[name] = _draw(trial, name, dist)
    return params


def _matters(name: str, params: dict[str, Any]) -> bool:
    """Whether setting `name` changes training, given the settings before it in `distributions`' order."""
    if name == "train.popularity_power":
        return params.get("train.negative_sampler") == "popularity"
    if name == "train.logq_correction":
        return params.get("train.negative_sampler") != "uniform" or bool(params.get("train.in_batch_negatives"))
    if name in ("model.ssl_weight", "model.ssl_temperature"):
        return params.get("model.ssl") == "rfm"
    return True


def _draw(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)


def configured(cfg: Config, dists: dict[str, Any]) -> dict[str, Any]:
    """The configured values of the searched settings: the search's first trial, so the chosen
    settings are never worse on validation than leaving them as they are."""
    params: dict[str, Any] = {}
    for name in dists:
        if _matters(name, params):
            section, key = name.split(".")
            params[name] = getattr(getattr(cfg, section), key)
    return params


def with_params(cfg: Config, params: dict[str, Any]) -> Config:
    """A copy of `cfg` with the trial's settings laid over it."""
    out = copy.deepcopy(cfg)
    for name, value in params.items():
        section, key = name.split(".")
        setattr(getattr(out, section), key, value)
    if out.model.arch == "autoint" and out.model.embedding_dim % out.model.attention_heads:
        raise ConfigError(f"tuned model.arch = autoint needs model.embedding_dim ({out.model.embedding_dim}) "
                          f"divisible by model.attention_heads ({out.model.attention_heads})")
    return out


def chosen(ctx: RunContext) -> dict[str, Any] | None:
    """The settings of this run's chosen trial, or None when stage tune has not finished."""
    if not ctx.warehouse.exists(TABLE):
        return None
    rows = ctx.warehouse.snapshot(TABLE).dataset().to_table(
        columns=["params"], filter=(pads.field("run_id") == ctx.run_id) & (pads.field("chosen") == True)  # noqa: E712
    ).to_pylist()
    return json.loads(rows[0]["params"]) if rows else None


def tuned(ctx: RunContext) -> tuple[Config, dict[str, Any]]:
    """The config a trainer of this run uses and the tuned settings in it ({} when tune is off)."""
    if ctx.cfg.tune.trials == 0:
        return ctx.cfg, {}
    params = chosen(ctx)
    if params is None:
        raise ConfigError(f"tune.trials = {ctx.cfg.tune.trials} but run {ctx.run_id} has no chosen trial in the "
                          "tuning table: run stage tune first (`divspa tune`), or set tune.trials=0")
    return with_params(ctx.cfg, params), params
