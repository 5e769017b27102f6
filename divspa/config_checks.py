"""What one setting implies for another, and the settings that were retired.

The loader (divspa.typed_config) checks each value on its own; these checks need two sections
at once (augment.k against retrieve.k, publish.k against eval.ks) or a key's history (a retired
option must fail with its reason, never be ignored: a user's YAML must not change meaning
silently).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from divspa.errors import ConfigError

if TYPE_CHECKING:  # the sections are divspa.config's, which runs these checks
    from divspa.config import Config

# Options retired on 2026-12-07 (issue 41): each was measured on ML-100K, the long-tail log and
# the demo log and gave accuracy and diversity above the base on none (docs/benchmarks/history.md keeps
# the measurements). A config naming one fails with this line rather than changing meaning.
_SAME = "the popularity discount (augment.popularity_debias) is the diversity lever that stays"
RETIRED: dict[str, str] = {
    "augment.u2i_skip": f"skipping the teacher's best u2i candidates widened no student; {_SAME}",
    "augment.dedup": f"one strategy per candidate changed neither axis; {_SAME}",
    "augment.calibrate": f"calibrating proposals to the click log widened no student (and switched tail_quota "
                         f"off); {_SAME}",
    "augment.tail_quota": f"the long-tail quota landed on the discount's frontier; {_SAME}",
    "augment.peer_clicks": "u2u2i takes each similar user's recent clicks (`all` was never measured and "
                           "collapses u2u2i into u2i on dense logs); remove the key",
    "augment.exclude": "candidates exclude the fitted train clicks (`train` biased the students' early "
                       "stopping); remove the key",
    "divspa.beta_u2i": "one beta per strategy widened no student; use divspa.beta",
    "divspa.beta_i2i": "one beta per strategy widened no student; use divspa.beta",
    "divspa.beta_u2u2i": "one beta per strategy widened no student; use divspa.beta",
    "divspa.augmented_item_grad_u2i": "a per-strategy item-side gradient widened no student; use "
                                      "divspa.augmented_item_grad",
    "divspa.augmented_item_grad_i2i": "a per-strategy item-side gradient widened no student; use "
                                      "divspa.augmented_item_grad",
    "divspa.augmented_item_grad_u2u2i": "a per-strategy item-side gradient widened no student; use "
                                        "divspa.augmented_item_grad",
    "divspa.distill": "distilling the teacher's softmax pulled the student back to the base; remove the key",
    "divspa.distill_temperature": "distilling the teacher's softmax pulled the student back to the base; "
                                  "remove the key",
    "divspa.student_epochs": "students stop early on validation (the teacher's epoch count was no more "
                             "accurate and narrower); remove the key",
}


def check_retired(raw: dict[str, Any], source: str) -> None:
    for key, why in RETIRED.items():
        section, _, name = key.partition(".")
        if isinstance(raw.get(section), dict) and name in raw[section]:
            raise ConfigError(f"{source}: {key} was retired (issue 41, 2026-12-07): {why}")


def check_run_id(run_id: str, source: str) -> None:
    # Run ids become partition values and directory names: keep them path- and SQL-safe.
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not run_id or set(run_id) - allowed:
        raise ConfigError(f"{source}: run.run_id {run_id!r} may only hold letters, digits, '-', '_' and '.'")


def check(cfg: Config, source: str) -> None:
    """The cross-field rules, each failing with one line that names both keys."""
    if cfg.augment.k > cfg.retrieve.k:
        raise ConfigError(f"{source}: augment.k = {cfg.augment.k} exceeds retrieve.k = {cfg.retrieve.k}: "
                          "the teacher can only keep candidates that retrieval found")
    if cfg.train.num_negatives == 0 and not cfg.train.in_batch_negatives:
        raise ConfigError(f"{source}: train.num_negatives = 0 leaves no negatives: set train.in_batch_negatives=true "
                          "(the batch's positives as negatives) or sample some")
    if cfg.augment.m > cfg.augment.k:
        raise ConfigError(f"{source}: augment.m = {cfg.augment.m} exceeds augment.k = {cfg.augment.k}")
    if cfg.model.arch == "autoint" and cfg.model.embedding_dim % cfg.model.attention_heads:
        raise ConfigError(f"{source}: model.embedding_dim = {cfg.model.embedding_dim} is not divisible by "
                          f"model.attention_heads = {cfg.model.attention_heads}")
    if cfg.publish.k not in cfg.eval.ks:
        raise ConfigError(f"{source}: publish.k = {cfg.publish.k} is not one of eval.ks = {cfg.eval.ks}: the gates "
                          "can only read a cut-off the evaluate stage computes")
    rows_range = cfg.publish.augmented_rows_range
    if rows_range is not None and (len(rows_range) != 2 or not 0 <= rows_range[0] <= rows_range[1]):
        raise ConfigError(f"{source}: publish.augmented_rows_range = {rows_range} must be [low, high] with "
                          "0 <= low <= high")
    if cfg.split.mode == "per_user" and cfg.split.cut_time:
        raise ConfigError(f"{source}: split.cut_time sets a global cut; it has no meaning with split.mode = per_user")
