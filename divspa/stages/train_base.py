"""Stage `train_base`: train the base model (model.arch; YoutubeDNN by default), the teacher, on train_examples (Eq. 1).

The vocabularies are catalogue-sized (items and feature values, never users): Spark computes
them and the driver holds them, as the model's embedding tables must anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch
from pyspark.sql import functions as F

from divspa import storage
from divspa.config import Config
from divspa.models.checkpoint import ModelBundle, build_model
from divspa.models.distributed import TrainJob, train
from divspa.models.encoding import Vocab
from divspa.models.trainer import TrainReport
from divspa.runtime import RunContext
from divspa.tuning import tuned

log = logging.getLogger(__name__)
NAME = "train_base"
BASE_VERSION = "base"


def checkpoint_path(ctx: RunContext, version: str) -> str:
    return storage.join(ctx.cfg.model_dir, f"{version}.pt")


@dataclass
class BaseInputs:
    """What every fresh model of this run is built from: the vocabularies, each item's feature
    tokens and its train clicks. Read once by Spark, then any number of models (stage tune's
    trials) are initialised from it."""

    vocab: Vocab
    item_tokens: torch.Tensor  # [num_items + 1, model.max_item_tokens]
    item_counts: torch.Tensor  # [num_items]


def sorted_strings(table: pa.Table) -> pa.Array:
    """The one column's values in code-point order (UTF-8's byte order), kept in Arrow: a large
    vocabulary as Python strings would be several GB of objects."""
    column = table.column(0).combine_chunks()
    return column.take(pc.array_sort_indices(column))


def base_inputs(ctx: RunContext) -> BaseInputs:
    """Vocabularies from this run's train split and features."""
    examples = ctx.read("train_examples")
    counts = examples.groupBy("item_id").agg(F.count(F.lit(1)).alias("n")).orderBy("item_id")
    count_table = counts.toArrow()
    item_ids = count_table.column("item_id").to_numpy()
    user_tokens = sorted_strings(examples.select(F.explode("user_features").alias("t")).distinct().toArrow())
    feats = ctx.read("item_features").select("item_id", "features")
    item_tokens = sorted_strings(feats.select(F.explode("features").alias("t")).distinct().toArrow())
    vocab = Vocab(item_ids, user_tokens, item_tokens)
    width = ctx.cfg.model.max_item_tokens
    token_rows = feats.join(counts.select("item_id"), "item_id", "left_semi").toArrow()
    item_tokens_matrix = torch.zeros((vocab.num_items + 1, width), dtype=torch.int64)
    if token_rows.num_rows:
        idx = torch.from_numpy(vocab.item_index(token_rows.column("item_id").to_numpy()))
        item_tokens_matrix[idx] = vocab.item_token_lists(token_rows.column("features"), width)
    log.info("vocabularies: %d items, %d user feature values, %d item feature values", vocab.num_items,
             len(user_tokens), len(item_tokens))
    return BaseInputs(vocab, item_tokens_matrix, torch.tensor(count_table.column("n").to_numpy(), dtype=torch.int64))


def new_bundle(inputs: BaseInputs, cfg: Config, version: str, run_id: str) -> ModelBundle:
    """A freshly initialised model of `cfg.model`'s shape (seeded by run.seed)."""
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, inputs.vocab, inputs.item_tokens)
    return ModelBundle(model, inputs.vocab, cfg.model, inputs.item_counts, {"model_version": version, "run_id": run_id})


def build_bundle(ctx: RunContext, version: str, cfg: Config | None = None) -> ModelBundle:
    """A freshly initialised model with vocabularies from this run's train split and features."""
    return new_bundle(base_inputs(ctx), cfg or ctx.cfg, version, ctx.run_id)


def train_report_rows(version: str, report: TrainReport, val_k: int,
                      false_negatives: bool = False) -> list[tuple[str, str, int | None, float]]:
    reversal = [(version, "reversal_after", None, float(report.reversal_after))] if false_negatives else []
    return reversal + [
        (version, "val_hr", val_k, report.best_val_hr),
        (version, "best_epoch", None, float(report.best_epoch)),
        (version, "epochs_run", None, float(report.epochs_run)),
        (version, "train_loss", None, report.train_loss[report.best_epoch - 1]),
        (version, "examples_per_s", None, report.examples_per_s),
        (version, "train_wall_s", None, report.wall_s),
    ]


def run(ctx: RunContext) -> dict[str, Any]:
    cfg, params = tuned(ctx)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    bundle = build_bundle(ctx, BASE_VERSION, cfg)
    if params:
        bundle.meta["tuned"] = params
    path = checkpoint_path(ctx, BASE_VERSION)
    job = TrainJob(cfg, "base", ctx.warehouse.snapshot("train_examples"), ctx.run_id, where=None, epochs=None,
                   checkpoint=path)
    report = train(job, bundle)
    ctx.write_metrics(NAME, train_report_rows(BASE_VERSION, report, cfg.train.val_k, cfg.train.false_negatives))
    return {"checkpoint": str(path), "best_epoch": report.best_epoch, "val_hr": round(report.best_val_hr, 4),
            "examples_per_s": round(report.examples_per_s)}


def artifacts(ctx: RunContext) -> list[str]:
    """The stage is done only when its checkpoint exists too."""
    return [checkpoint_path(ctx, BASE_VERSION)]
