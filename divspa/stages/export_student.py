"""Stage `export_student`: the final DivSPA student's vectors and i2i lists, the run's product.

The paper's online tests serve DivSPA's user vectors in place of the base model's recall and
DivSPA's item vectors for i2i recall (§4). A serving team takes them from the same tables the
teacher's went to, told apart by `model_version` (`divspa-<rounds>`): `user_embeddings`,
`item_embeddings`, and `neighbours` with strategy i2i (each train-positive item's top
retrieve.k items by the student's cosine, the item itself excluded).
"""

from __future__ import annotations

from typing import Any

from divspa.runtime import RunContext
from divspa.stages.export import export_model
from divspa.stages.retrieve import retrieve
from divspa.stages.train_divspa import final_version

NAME = "export_student"


def run(ctx: RunContext) -> dict[str, Any]:
    version = final_version(ctx)
    vectors = export_model(ctx, NAME, version)
    lists = retrieve(ctx, NAME, version, strategies={"i2i"})
    return {**vectors, "i2i_rows": lists.get("i2i_rows", 0)}
