"""Stage `export`: user and item vectors of a checkpoint, computed on executors.

The checkpoint file is broadcast as bytes (executors need no shared filesystem); `mapInArrow`
encodes Arrow batches with the checkpoint's own vocabularies and runs the towers, one torch
thread per task. Users come from user_histories (their train history as of the cut), items
are the model's vocabulary, enumerated by `spark.range` so nothing is collected or parallelised
from the driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from divspa import storage
from divspa.models.checkpoint import ModelBundle, load_checkpoint
from divspa.models.trainer import user_vectors_for
from divspa.runtime import RunContext
from divspa.stages.train_base import BASE_VERSION, checkpoint_path

NAME = "export"
_VECTOR_SCHEMA = "{id} bigint, vector array<float>"
_CACHE: dict[str, ModelBundle] = {}  # per Python worker: checkpoint digest -> loaded model


def _bundle(bc: Broadcast, key: str) -> ModelBundle:
    if key not in _CACHE:
        torch.set_num_threads(1)  # one task per core: torch must not oversubscribe it
        _CACHE.clear()
        _CACHE[key] = load_checkpoint(bc.value)
    return _CACHE[key]


def _vector_batch(ids: np.ndarray, vectors: np.ndarray, id_name: str) -> pa.RecordBatch:
    flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, len(ids) * vectors.shape[1] + 1, vectors.shape[1], dtype=np.int32))
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.ListArray.from_arrays(offsets, flat)],
                                      names=[id_name, "vector"])


def _user_vectors(bc: Broadcast, key: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    bundle = _bundle(bc, key)
    for batch in batches:
        table = pa.Table.from_batches([batch])
        ids = table.column("user_id").to_numpy()
        yield _vector_batch(ids, user_vectors_for(bundle, table), "user_id")


def _item_vectors(bc: Broadcast, key: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    bundle = _bundle(bc, key)
    for batch in batches:
        idx = batch.column(0).to_numpy()
        with torch.no_grad():
            vectors = bundle.model.item_vectors(torch.from_numpy(idx.copy())).numpy()  # Arrow's view is read-only
        yield _vector_batch(bundle.vocab.item_id(idx), vectors, "item_id")


def export_vectors(ctx: RunContext, checkpoint: bytes, num_items: int) -> tuple[DataFrame, DataFrame]:
    """(user vectors, item vectors) DataFrames for a checkpoint; computed lazily on executors."""
    bc = ctx.spark.sparkContext.broadcast(checkpoint)
    key = hashlib.sha256(checkpoint).hexdigest()
    users = ctx.read("user_histories").select("user_id", "history", "user_features")
    wanted = ctx.cfg.export.partitions
    if wanted:
        users = users.repartition(wanted)
    user_df = users.mapInArrow(lambda it: _user_vectors(bc, key, it), _VECTOR_SCHEMA.format(id="user_id"))
    parts = wanted or max(1, min(ctx.spark.sparkContext.defaultParallelism, -(-num_items // 2048)))
    items = ctx.spark.range(1, num_items + 1, numPartitions=parts)
    item_df = items.mapInArrow(lambda it: _item_vectors(bc, key, it), _VECTOR_SCHEMA.format(id="item_id"))
    return user_df, item_df


def export_model(ctx: RunContext, stage: str, version: str) -> dict[str, Any]:
    path = checkpoint_path(ctx, version)
    if not storage.settings().is_file(path):
        raise FileNotFoundError(f"checkpoint {path} not found: run the training stage for {version} first")
    data = storage.settings().read_bytes(path)
    bundle = load_checkpoint(data)
    user_df, item_df = export_vectors(ctx, data, bundle.vocab.num_items)
    extra = [F.lit(version).alias("model_version"), F.lit(ctx.run_id).alias("run_id")]
    part = {"model_version": version}
    users = ctx.write(stage, "user_embeddings", user_df.select("*", *extra), partition=part)
    items = ctx.write(stage, "item_embeddings", item_df.select("*", *extra), partition=part)
    return {"model_version": version, "user_vectors": users.rows, "item_vectors": items.rows}


def run(ctx: RunContext) -> dict[str, Any]:
    return export_model(ctx, NAME, BASE_VERSION)
