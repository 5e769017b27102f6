"""Stage `train_divspa`: the student, trained with the mix-up loss on train clicks + augmented positives.

Each round joins the teacher's augmented positives onto the training examples (divspa_examples,
streamed to PyTorch through the reader) and trains a fresh student. With `divspa.rounds: N`
the student of round r is the teacher of round r + 1: its vectors are exported, neighbours
retrieved and positives augmented again before the next student trains.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from divspa.models.distributed import TrainJob, train
from divspa.runtime import RunContext
from divspa.stages.augment import augment
from divspa.stages.export import export_model
from divspa.stages.prepare import in_example_order
from divspa.stages.retrieve import retrieve
from divspa.stages.train_base import BASE_VERSION, build_bundle, checkpoint_path, train_report_rows
from divspa.tuning import tuned

log = logging.getLogger(__name__)
NAME = "train_divspa"


def student_version(round_: int) -> str:
    return f"divspa-{round_}"


def final_version(ctx: RunContext) -> str:
    return student_version(ctx.cfg.divspa.rounds)


def divspa_examples(ctx: RunContext, teacher: str) -> DataFrame:
    """train_examples with each positive's augmented positives as aligned arrays.

    Only the strategies in augment.strategies are used: each strategy is sampled independently,
    so dropping one here is exactly the ablation "w/o <strategy>", with no need to re-augment.
    """
    strategies = list(ctx.cfg.augment.strategies)
    aug = ctx.read("augmented_positives").where(F.col("model_version") == teacher)
    aug = aug.where(F.col("strategy").isin(strategies)) if strategies else aug.limit(0)
    per_pair = aug.groupBy("user_id", "item_id").agg(
        F.sort_array(F.collect_list(F.struct("strategy", "rank", "aug_item_id", "weight"))).alias("_a"))
    examples = ctx.read("train_examples").join(per_pair, ["user_id", "item_id"], "left")
    empty = F.array()
    # train_examples' layout and order: students reproduce, and with no strategy the student is base.
    return in_example_order(examples, ctx.cfg.spark.shuffle_partitions).select(
        "user_id", "item_id", "history", "user_features", "is_val",
        F.coalesce(F.transform("_a", lambda a: a["aug_item_id"]), empty.cast("array<bigint>")).alias("aug_items"),
        F.coalesce(F.transform("_a", lambda a: a["weight"]), empty.cast("array<float>")).alias("aug_weights"),
        F.coalesce(F.transform("_a", lambda a: a["strategy"]), empty.cast("array<string>")).alias("aug_strategies"),
        F.lit(teacher).alias("teacher"), F.lit(ctx.run_id).alias("run_id"),
    )


def train_student(ctx: RunContext, label: str, teacher: str, version: str) -> dict[str, Any]:
    cfg, params = tuned(ctx)  # students train as the tuned teacher did
    ctx.write(label, "divspa_examples", divspa_examples(ctx, teacher), partition={"teacher": teacher})
    bundle = build_bundle(ctx, version, cfg)
    if params:
        bundle.meta["tuned"] = params
    bundle.meta.update({"teacher": teacher, "beta": cfg.divspa.beta, "mixup": cfg.divspa.mixup,
                        "augmented_item_grad": cfg.divspa.augmented_item_grad,
                        "strategies": list(cfg.augment.strategies), "sampler": cfg.augment.sampler})
    job = TrainJob(cfg, "divspa", ctx.warehouse.snapshot("divspa_examples"), ctx.run_id, where={"teacher": teacher},
                   epochs=None, checkpoint=checkpoint_path(ctx, version))
    report = train(job, bundle)
    ctx.write_metrics(label, train_report_rows(version, report, cfg.train.val_k, cfg.train.false_negatives))
    return {"version": version, "teacher": teacher, "best_epoch": report.best_epoch,
            "val_hr": round(report.best_val_hr, 4), "examples_per_s": round(report.examples_per_s)}


def run(ctx: RunContext) -> dict[str, Any]:
    teacher = BASE_VERSION
    info: dict[str, Any] = {}
    for r in range(1, ctx.cfg.divspa.rounds + 1):
        if r > 1:  # the previous student becomes the teacher: export, retrieve and augment again
            export_model(ctx, f"round{r}.export", teacher)
            retrieve(ctx, f"round{r}.retrieve", teacher)
            augment(ctx, f"round{r}.augment", teacher)
        out = train_student(ctx, f"round{r}.train", teacher, student_version(r))
        log.info("round %d: %s", r, out)
        info[f"round{r}"] = out
        teacher = out["version"]
    # The stage's own marker: the final student's figures under the stage's name.
    ctx.write_metrics(NAME, [(teacher, "rounds", None, float(ctx.cfg.divspa.rounds))])
    return {"final": teacher, **{k: v["val_hr"] for k, v in info.items()}}


def artifacts(ctx: RunContext) -> list[str]:
    """The stage is done only when the final student's checkpoint exists too."""
    return [checkpoint_path(ctx, final_version(ctx))]
