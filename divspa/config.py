"""Typed configuration: the sections every job reads its settings from, and `load_config`.

Every stage reads its settings from one `Config`. The strict loader is divspa.typed_config
(unknown keys, wrong types, out-of-range values fail at start-up naming the key and the file);
the rules between sections and the retired keys are divspa.config_checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from divspa import storage
from divspa.config_checks import check, check_retired, check_run_id
from divspa.errors import ConfigError  # noqa: F401 (importable from here, as it always was)
from divspa.typed_config import apply_override, build, env_overrides, read_yaml
from divspa.typed_config import opt as _opt

# ----------------------------------------------------------------------------------------------
# Sections. Defaults are the embedded synthetic demo; conf/*.yaml override what they need.
# ----------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    output_dir: str = "divspa-output"  # holds warehouse/ (Delta tables) and runs/<run_id>/ (logs, configs)
    run_id: str | None = None  # default: today's UTC date, YYYY-MM-DD
    seed: int = _opt(42, ge=0)  # every random draw of a run (data order, negatives, samplers, tune)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # console and runs/<run_id>/*.log
    # Extra delta-rs / object_store options for URIs (e.g. aws_conditional_put: etag, or
    # AWS_S3_LOCKING_PROVIDER: dynamodb for embedded commits to S3). Endpoint and credentials
    # come from spark.conf's spark.hadoop.fs.s3a.* (or AWS_* variables), not from here.
    storage_options: dict[str, str] = _opt({})
    # Retention (divspa gc, and the end of every `divspa run` when set): keep the newest this many
    # runs' partitions in every table (the latest published run is always kept); None keeps all.
    keep_runs: int | None = _opt(None, ge=1)
    # Files no table version of the last this many hours needs are deleted by gc's vacuum (Delta's
    # default of 7 days: a trainer that pinned a version within it still finds its files).
    vacuum_retention_hours: int = _opt(168, ge=0)
    checkpoint_interval: int = _opt(10, ge=1)  # a Delta checkpoint every this many commits
    compact: bool = False  # gc also rewrites small files into larger ones (Delta OPTIMIZE)


@dataclass
class PublishConfig:
    """Quality gates: a run is published (what trainers read as "latest") only if all pass.

    A gate set to null is off. Figures come from the evaluate stage's metrics of this run and
    the runs table's record of the previous published run."""

    metric: Literal["hr", "ndcg"] = "hr"  # the headline metric max_divspa_drop and the base gate judge
    k: int = _opt(50, ge=1)  # at this K (one of eval.ks); the diversity gate counts the top-k lists
    # base model >= this x popularity (1.0: the teacher must beat recommending the most clicked)
    min_base_vs_popularity: float | None = _opt(1.0, ge=0)
    # final DivSPA student >= (1 - this) x base
    max_divspa_drop: float | None = _opt(0.05, ge=0, le=1)
    # final student's NDCG@k >= (1 - this) x base's, whatever `metric` is: a student can keep its
    # hits and push them down the list (Ciao, 2026-12-07: HR@50 -2.8 %, NDCG@50 -9.2 %).
    max_ndcg_drop: float | None = _opt(0.05, ge=0, le=1)
    # final student's distinct items in the test users' top-k lists, and their long-tail share,
    # each >= (1 - this) x base's. Where DivSPA's accuracy claim held (ML-100K dense and sparse,
    # the demo log) the student lost 0-13 % of distinct@100 and 0-12 % of long-tail share; where
    # it did harm it lost 53 % and 76 % (docs/RESULTS.md). 0.2 passes the first, stops the second.
    max_diversity_drop: float | None = _opt(0.2, ge=0, le=1)
    # augmented rows within [low, high] x the previous published run's (a broken join or a
    # half-read log changes it by far more than a day's growth)
    augmented_rows_range: list[float] | None = _opt([0.5, 2.0])


@dataclass
class SparkConfig:
    master: str = "local[*]"  # ignored under spark-submit, which sets the master itself
    app_name: str = "divspa"  # the Spark application name (ignored when a session exists)
    shuffle_partitions: int = _opt(8, ge=1)  # spark.sql.shuffle.partitions
    driver_memory: str = "4g"  # only effective when this process starts the JVM (local mode)
    ui: bool = False  # start the Spark web UI (local runs)
    conf: dict[str, str] = _opt({})  # any further spark.* settings, passed through verbatim
    # How Delta tables are written: native = delta-spark (jars from ./dev.sh setup, or the
    # submitter's --jars/--packages); embedded = Spark writes Parquet, delta-rs commits; auto =
    # native when the jars are there. Either way the tables are the same Delta tables.
    delta: Literal["auto", "native", "embedded"] = "auto"


@dataclass
class FilterConfig:
    column: str  # a column of the source log (not necessarily one divspa keeps)
    op: Literal["==", "!=", ">", ">=", "<", "<="]
    value: float | int | str  # compared with the column's value as Spark compares them


@dataclass
class FeatureSourceConfig:
    path: str  # a table or file (local path or URI)
    format: Literal["parquet", "csv", "delta"] = "parquet"
    id_col: str = "id"  # the user or item id, as in the log
    columns: list[str] = _opt([])  # each becomes categorical tokens "column=value"
    csv_delimiter: str = ","
    csv_header: bool = True  # the first line names the columns


@dataclass
class SourceConfig:
    format: Literal["synthetic", "movielens", "delta", "parquet", "csv"] = "synthetic"  # synthetic: generated (the demo)
    path: str | None = None  # movielens: directory with u.data; others: table/file path
    # The log's columns: integer user and item ids (others are quarantined) and the click's time.
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "event_time"
    # How event_time is encoded: a number of s/ms/us since the epoch, a Spark datetime pattern
    # (e.g. "yyyy-MM-dd HH:mm:ss"), or "timestamp" for native timestamp/date columns.
    time_unit: Literal["s", "ms", "us", "timestamp"] = "s"
    time_format: str | None = None  # when set, event_time strings are parsed with this pattern
    filters: list[FilterConfig] = _opt([])  # e.g. [{column: rating, op: ">=", value: 4}]
    csv_delimiter: str = ","
    csv_header: bool = True
    user_features: FeatureSourceConfig | None = None
    item_features: FeatureSourceConfig | None = None


@dataclass
class SyntheticConfig:
    num_users: int = _opt(5000, ge=1)
    num_items: int = _opt(1000, ge=2)
    mean_clicks_per_user: float = _opt(20.0, gt=0)  # clicks a user are drawn around this mean
    max_clicks_per_user: int = _opt(500, ge=1)
    num_clusters: int = _opt(20, ge=1)  # interest clusters the items fall into
    max_interests_per_user: int = _opt(3, ge=1)  # clusters a user clicks from (beyond explore_prob)
    popularity_exponent: float = _opt(0.9, ge=0)  # Zipf exponent of item popularity
    explore_prob: float = _opt(0.1, ge=0, le=1)  # share of clicks outside the user's interests
    days: int = _opt(60, ge=1)  # the log's clicks spread over this many days from start_date
    start_date: str = "2026-01-01"
    bad_row_fraction: float = _opt(0.0, ge=0, le=0.5)  # rows corrupted on purpose (demo of quarantine)
    users_per_block: int = _opt(1024, ge=1)  # unit of deterministic generation, independent of partitions
    # Wide feature logs (the paper's Video has 57 fields and 41.2M feature values): fields beyond
    # each side's three, every value of a field drawn Zipf-like from values_per_field; the first
    # informative_share of them depend on the user's main interest or the item's cluster, the rest
    # are noise; item_tags > 0 adds a multi-valued field "tag" with up to that many values an item.
    # All 0: the three fields of each side only, as the demo has always had them.
    extra_user_fields: int = _opt(0, ge=0)
    extra_item_fields: int = _opt(0, ge=0)
    values_per_field: int = _opt(1000, ge=1)
    value_exponent: float = _opt(1.1, ge=0)  # Zipf exponent of a field's value frequencies
    informative_share: float = _opt(0.5, ge=0, le=1)
    item_tags: int = _opt(0, ge=0)
    partitions: int = _opt(8, ge=1)  # Spark partitions of the generated log


@dataclass
class IngestConfig:
    max_bad_fraction: float = _opt(0.01, ge=0, le=1)  # job fails above this share of quarantined rows
    min_event_time: str = "1990-01-01"  # clicks before this are quarantined (a zero timestamp)
    max_event_time: str | None = None  # default: now + 1 day


@dataclass
class SplitConfig:
    # [paper: chronological train/test split] global: one time cut for everyone (what a scheduled
    # model faces; the paper's protocol).
    # per_user: each user's latest test_fraction of clicks (for small public datasets, where few
    # users are active after any global cut: ML-100K keeps 87 test users at a 10 % global cut).
    mode: Literal["global", "per_user"] = "global"
    test_fraction: float = _opt(0.1, gt=0, lt=1)  # global: cut at this upper quantile of event_time
    cut_time: str | None = None  # explicit global cut (ISO timestamp, UTC); overrides test_fraction
    # [beyond the paper: its sparse regime on a dense log] Thin each user's train clicks to at most this many, chosen at random (hashed, so the same
    # whatever the partitioning): the paper's logs are sparse (Video: 2.2 clicks a user), public
    # datasets dense. Test keeps the users and items the thinned train still has. 0 = keep all.
    max_train_clicks: int = _opt(0, ge=0)


# [paper: Table 1] youtubednn: the paper's backbone. fm / deepfm / autoint: its Table 1 competitors as two-tower
# models (divspa.models.archs); any of them can be the teacher and the student.
Arch = Literal["youtubednn", "fm", "deepfm", "autoint"]


@dataclass
class ModelConfig:
    """The two-tower base's shape (paper: embedding size 32 for all features)."""

    arch: Arch = "youtubednn"
    embedding_dim: int = _opt(32, ge=1)  # [paper: 32] size of every feature/id embedding
    output_dim: int = _opt(32, ge=1)  # [paper: the two towers' u and v] size of u and v
    hidden_dims: list[int] = _opt([64])  # [paper: YoutubeDNN's tower] the MLP's hidden layers
    history_len: int = _opt(20, ge=1)  # recent clicks averaged into the user tower
    max_user_tokens: int = _opt(16, ge=1)  # feature values kept per user (more are cut)
    max_item_tokens: int = _opt(16, ge=1)  # feature values kept per item
    omega: float = _opt(10.0, gt=0)  # [paper: ω, Eq. 1] inverse temperature of the logits omega * u.v
    attention_heads: int = _opt(2, ge=1)  # [paper: AutoInt, Table 1] autoint: heads per self-attention layer (divides embedding_dim)
    attention_layers: int = _opt(2, ge=1)  # [paper: AutoInt, Table 1] autoint: interacting layers
    # [paper: RFM, Table 1's best baseline (Yao et al. 2021)] rfm adds a self-supervised loss on
    # the item tower: each item's fields (id and feature tokens) split at random into two disjoint
    # halves, one masked in each of two views, and an in-batch InfoNCE asks each view to find its
    # twin (divspa/models/rfm.py). Works with every arch; none trains exactly as without it.
    ssl: Literal["none", "rfm"] = "none"
    ssl_weight: float = _opt(0.1, ge=0)  # [paper: RFM's α] the SSL loss's weight beside the main loss
    ssl_temperature: float = _opt(0.1, gt=0)  # [paper: RFM's τ] of the InfoNCE's logits
    ssl_mask_rate: float = _opt(0.5, gt=0, lt=1)  # [paper: RFM] share of an item's fields view 1 masks
    ssl_batch: int = _opt(256, ge=2)  # items in a step's SSL batch (catalogue)
    # [paper: RFM draws the SSL batch from the catalogue] catalogue: distinct items uniformly, so
    # tail items are seen; clicks: the main batch's positives.
    ssl_items: Literal["catalogue", "clicks"] = "catalogue"


@dataclass
class TrainConfig:
    lr: float = _opt(1e-3, gt=0)  # [paper: Adam, 0.001]
    weight_decay: float = _opt(0.0, ge=0)  # Adam's coupled L2; > 0 makes every embedding step dense
    batch_size: int = _opt(256, ge=1)  # [paper: 256] rows per optimiser step; with train.processes = N each rank takes 1/N
    epochs: int = _opt(20, ge=1)  # at most; early stopping on validation HR usually ends sooner
    # [paper: Eq. 1] n sampled negatives per batch, shared by its rows. 0 with in_batch_negatives: the
    # batch's own positives are the only negatives, as industrial YoutubeDNN trains. Without
    # logq_correction they rank popular items down: on sparse Ciao that base scattered over the
    # catalogue at near-random accuracy (BENCHMARKS, "The base's negatives on Ciao sparse").
    num_negatives: int = _opt(200, ge=0)
    # [beyond the paper: issue 16's pilot and issue 38's tuning] How the n negatives are drawn.
    negative_sampler: Literal["uniform", "popularity"] = "uniform"
    popularity_power: float = _opt(0.75, ge=0)  # [beyond the paper] popularity sampler draws items with p ~ count^power
    logq_correction: bool = True  # [beyond the paper] subtract log q(v) from logits of non-uniformly sampled negatives
    # [beyond the paper] Mixed negative sampling (Yang et al. 2020): the batch's own positives join the sampled
    # negatives. They are drawn by popularity, so they are hard negatives on long-tail catalogues;
    # logQ correction (if on) then uses the mixture's sampling probability.
    in_batch_negatives: bool = False
    val_fraction: float = _opt(0.05, ge=0, lt=1)  # latest share of train held out for early stopping
    max_val_examples: int = _opt(20000, ge=1)  # the validation slice is cut to this many rows
    val_k: int = _opt(50, ge=1)  # early stopping watches HR@val_k on the validation slice
    patience: int = _opt(3, ge=1)  # epochs without a better validation HR before training stops
    shuffle_buffer: int = _opt(65536, ge=1)  # rows shuffled together while streaming
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto: cuda when torch sees a GPU
    num_threads: int = _opt(0, ge=0)  # torch intra-op threads; 0 = torch's default
    log_every_s: float = _opt(10.0, gt=0)  # a progress line at most this often
    # Data parallelism (docs/CLUSTER.md): 1 trains in this process, as always; N > 1 runs N ranks
    # of DistributedDataParallel through Spark's TorchDistributor, each streaming its own share of
    # the examples. "local": the N processes run on the driver's machine; "cluster": as barrier
    # tasks on the executors.
    processes: int = _opt(1, ge=1)
    distributor: Literal["local", "cluster"] = "local"
    # Sparse embedding gradients with CatchUpAdam (divspa/models/catchup_adam.py): dense Adam's
    # updates, but a step costs the rows the batch looks up, not the item vocabulary. Ignored (the
    # tables stay dense, the updates the same) with weight_decay > 0, processes > 1 or false_negatives.
    sparse_embeddings: bool = True
    # Tables with fewer rows stay dense: there a dense Adam step is the cheaper of the two
    # (6.7 vs 9.0 ms a step at 10k items, 68.0 vs 14.3 ms at 100k: benchmarks/vocabulary.py).
    sparse_min_rows: int = _opt(32768, ge=0)
    # [paper: Table 3's UFNRec, Liu et al. 2023; divspa/models/ufn.py] False-negative reversal: once the
    # training loss levels off, each row's negatives that scored above its positive are drawn again
    # as its own; one that does so on more than ufn_reverse visits becomes a positive of the row,
    # and a moving average of the weights (the teacher, used for validation and kept at the end)
    # pulls the student's scores of reversed items towards its own. Base and students alike.
    false_negatives: bool = False
    ufn_reverse: int = _opt(5, ge=0)  # [paper: UFNRec's code, 5] visits as a hard negative before an item is reversed
    ufn_consistency: float = _opt(0.3, ge=0)  # [paper: UFNRec's lambda, 0.3] weight of the teacher's consistency loss
    ufn_ema_decay: float = _opt(0.999, gt=0, lt=1)  # [paper: UFNRec's code, 0.999] the teacher's moving-average decay
    # Reversal starts after at least ufn_min_epochs epochs, once an epoch lowers the training loss by
    # less than ufn_level_off of the first six epochs' drop [paper: UFNRec's code, 1/200 after 8
    # epochs of 201] or does not improve validation HR [beyond the paper: early-stopped training
    # ends before its loss levels off]; early stopping then waits until items can be reversed.
    ufn_min_epochs: int = _opt(2, ge=2)
    ufn_level_off: float = _opt(0.005, ge=0)
    # [beyond the paper: bounded memory] Hard negatives remembered per training row, and the rows'
    # hashed table's size cap (8 + 6 x width bytes a slot; a row whose slot another took starts afresh).
    ufn_width: int = _opt(8, ge=1)
    ufn_slots: int = _opt(1 << 24, ge=16)


# What stage `tune` may search: lr; weight_decay (off the search by default: any value > 0 makes
# every embedding step dense); negatives = how many, from which distribution (uniform or
# popularity^power), the batch's own positives among them, logQ correction; omega; arch; ssl = RFM
# on or off, and its weight and temperature when on.
TuneParam = Literal["lr", "weight_decay", "negatives", "omega", "arch", "ssl"]


@dataclass
class TuneConfig:
    """Stage `tune`: an Optuna TPE search over the base's training settings before train_base.

    The paper grid-searches its hyper-parameters; one set of defaults chosen on ML-100K left the
    teacher at popularity's level on Ciao (issue 38). Trials are scored on the validation slice
    of train (HR@train.val_k), never on test; the best trial's settings then train the base and
    the students, and are recorded in the `tuning` table, the checkpoints and the report."""

    trials: int = _opt(0, ge=0)  # [paper: "a grid search"; ours is Optuna's TPE] 0: no search, train_base uses train/model as configured
    timeout_s: float | None = _opt(None, gt=0)  # no new trial starts after this many seconds
    space: list[TuneParam] = _opt(["lr", "negatives", "omega"])
    max_epochs: int = _opt(10, ge=1)  # a trial's epoch cap (train.patience still stops it sooner)
    # A trial whose validation HR after this many epochs is below the median of earlier trials'
    # at the same epoch stops there (Optuna's median pruner; the first 3 trials are never pruned).
    prune_after: int = _opt(2, ge=1)


@dataclass
class ExportConfig:
    partitions: int = _opt(0, ge=0)  # Spark partitions for user/item vectors; 0 = from the input


@dataclass
class RetrieveConfig:
    # Which neighbour lists are built follows augment.strategies (u2u2i needs u2u).
    k: int = _opt(50, ge=1)  # [paper: k] neighbours kept per query for u2i and i2i
    k_users: int = _opt(20, ge=1)  # [paper: k_u] neighbours kept per user for u2u
    index: Literal["flat", "ivf", "hnsw"] = "flat"  # flat: exact; ivf, hnsw: approximate, recall checked
    ivf_nlist: int = _opt(0, ge=0)  # 0 = about 4 * sqrt(corpus size), or more lists: see ivf_list_size
    # Most vectors an IVF list holds on average (when ivf_nlist = 0): nlist = max(4 * sqrt(n),
    # n / ivf_list_size), so beyond n = 16 * ivf_list_size^2 (262k vectors) the lists stop growing
    # and a query's scan with them. Over 4,096 lists the coarse quantizer is an HNSW graph and
    # k-means two-level (divspa.retrieval.index.LARGE_IVF_LISTS).
    ivf_list_size: int = _opt(128, ge=1)
    # Lists an IVF query visits. 0: tuned per index, the smallest step (1, 2, ..., 8, 10, 12, 14, 16,
    # 20, ...: divspa.retrieval.index.nprobe_steps) whose recall@k on 500 of the list's own queries (u2i: hash-sampled users; i2i, u2u: the
    # corpus itself, minus each query) reaches min_recall + 0.01 (a fixed 16 gave i2i recall@50
    # 0.79 on 18,000 items: how many lists are needed depends on the vectors).
    ivf_nprobe: int = _opt(0, ge=0)
    # faiss's HNSW settings: links per node, and the candidate lists of building and of searching
    hnsw_m: int = _opt(32, ge=4)
    hnsw_ef_construction: int = _opt(128, ge=8)
    hnsw_ef_search: int = _opt(128, ge=8)
    broadcast_max_mb: float = _opt(512.0, gt=0)  # larger corpora are one memory-mapped index file instead
    shards: int = _opt(0, ge=0)  # force this many hash shards, each a mapped index (0: one index)
    query_batch: int = _opt(4096, ge=1)  # queries a task searches at a time (broadcast corpus): bounds its memory
    partitions: int = _opt(0, ge=0)  # query partitions; 0 = the input's
    # With an approximate index (ivf, hnsw): this many hash-sampled queries per list are searched
    # exactly too, and recall@k of the written lists goes to `metrics` (stage retrieve, metric
    # ann_recall); a warning below min_recall. 0 = no check. flat is exact and never checked.
    recall_sample: int = _opt(1000, ge=0)
    min_recall: float = _opt(0.95, ge=0, le=1)  # below it the stage warns; ivf_nprobe 0 tunes to it


@dataclass
class AugmentConfig:
    # [paper: u2i, i2i, u2u2i and their ablations] Ablations drop some; with none the student trains on Eq. 1 alone, i.e. it is the base model.
    strategies: list[Literal["u2i", "i2i", "u2u2i"]] = _opt(["u2i", "i2i", "u2u2i"])
    k: int = _opt(20, ge=1)  # [paper: k] candidates kept per strategy after the teacher's re-scoring
    m: int = _opt(3, ge=1)  # [paper: m = 3] sampled per strategy
    sampler: Literal["uniform", "importance", "beta"] = "importance"  # [paper: its three samplers] how the m are drawn from the k
    # [beyond the paper] Rank, draw and weigh candidates by s(u, v) * (n_max / n_v)^g, n_v the item's
    # fitted train clicks, instead of the teacher's s(u, v) alone (0 = the paper's rule). The
    # teacher's own favourites are what it saw most. On sparse ML-100K 0.25 kept the base's distinct
    # items at -1.5 % HR@50, 0.5 widened the long tail 22 % at -3.3 %; 0.1 kept HR there and cost
    # sparse Ciao 24 % of it (BENCHMARKS, "Sparse ML-100K with a tuned teacher"): not the default.
    popularity_debias: float = _opt(0.0, ge=0)
    # [beyond the paper: "teacher" is the paper's rule] What ranks, draws and weighs i2i and u2u2i
    # candidates. "teacher": s(u, v), the same for every strategy, so all three lean to what the
    # teacher already ranks high for u. "neighbour" (the default since 2026-12-01): each strategy's
    # own evidence: i2i by s(v+, v), u2u2i by the summed similarity to u of the similar users who
    # clicked the item (u2i is s(u, v) either way). Chosen on dense ML-100K, confirmed on the
    # long-tail and demo logs: at least as accurate as the paper's rule on all five logs measured,
    # narrowing the student less on four and as much on the demo's; neither rule widens the student
    # (BENCHMARKS, "`augment.rank_by: neighbour` is the default").
    rank_by: Literal["teacher", "neighbour"] = "neighbour"
    beta_alpha: float = _opt(0.5, gt=0)  # [paper: beta(α, α)] the beta sampler's α
    min_score: float = _opt(1e-6, gt=0)  # scores are floored here for sampling probabilities and weights
    long_tail_share: float = _opt(0.8, gt=0, lt=1)  # the least clicked items holding this share are long-tail
    partitions: int = _opt(0, ge=0)  # shuffle partitions of the augment job; 0 = spark.shuffle_partitions


@dataclass
class DivspaConfig:
    # [paper: β] Weight of the augmented positives' losses (Eq. 3) or vectors (Eq. 2). The paper
    # grid-searches it and does not give its value. On ML-100K's global cut (10 seeds) 0.05 and 0.1
    # were above the base in mean, 0.05 a little more; at 0.5 the teacher's picks outweigh the real
    # positive, -18 % distinct@100 (BENCHMARKS, "Quality on MovieLens-100K").
    beta: float = _opt(0.1, ge=0)
    # [paper: Eq. 3, its choice, or Eq. 2] On sparse ML-100K Eq. 2 gave the most accurate and the
    # narrowest student measured (HR@50 +12.8 %, distinct@100 -60 % against base; BENCHMARKS,
    # "The augmented loss's pull on item vectors").
    mixup: Literal["output", "representation"] = "output"
    # [beyond the paper] The share of the augmented positives' gradient that reaches their item
    # vectors (1 = the paper; 0 = they teach the user tower only; the loss value is the same). An
    # augmented item is handed to users who never clicked it; its vector is pulled toward that wider
    # audience, i.e. toward the average user, where it enters everyone's top-K. Measured on sparse
    # ML-100K (BENCHMARKS, "The augmented loss's pull on item vectors"): at 0 the long-tail share is
    # +41 % over base, but the accuracy gain is lost. Kept when its per-strategy variants were retired
    # (issue 41): the one lever beside the popularity discount that moved the long tail by 40 %.
    augmented_item_grad: float = _opt(1.0, ge=0, le=1)
    rounds: int = _opt(1, ge=1)  # [beyond the paper] rounds of self-distillation: each student teaches the next


@dataclass
class EvalConfig:
    ks: list[int] = _opt([50, 100, 200])  # [paper: HR and NDCG at 50, 100, 200]
    diversity_ks: list[int] = _opt([100, 500, 1000])  # distinct items in the union of top-K lists
    max_users: int | None = _opt(None, ge=1)  # evaluate on at most this many test users (hash-sampled)
    batch_size: int = _opt(512, ge=1)  # test users scored at a time


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    divspa: DivspaConfig = field(default_factory=DivspaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)

    @property
    def run_id(self) -> str:
        return self.run.run_id or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")

    # Locations are strings (local paths or URIs such as s3a://bucket/divspa), never pathlib.

    @property
    def output_dir(self) -> str:
        return storage.resolve(self.run.output_dir)

    @property
    def warehouse(self) -> str:
        return storage.join(self.output_dir, "warehouse")

    @property
    def run_dir(self) -> str:
        return storage.join(self.output_dir, "runs", self.run_id)

    @property
    def model_dir(self) -> str:
        return storage.join(self.output_dir, "models", self.run_id)


# ----------------------------------------------------------------------------------------------
# Loading (divspa.typed_config reads and checks values; divspa.config_checks what settings imply)
# ----------------------------------------------------------------------------------------------


ENV_PREFIX = "DIVSPA__"  # DIVSPA__RUN__OUTPUT_DIR=s3a://b/p is run.output_dir (after YAML, before --set)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load `path` (YAML; `${VAR}` expanded), then `DIVSPA__...` environment overrides, then
    `--set key.sub=value` overrides, validating everything."""
    source = "<defaults>" if path is None else str(path)
    raw = {} if path is None else read_yaml(path)
    for item in env_overrides(Config, ENV_PREFIX):
        apply_override(raw, item, Config, "environment")
    for item in overrides or []:
        apply_override(raw, item, Config)
    check_retired(raw, source)
    cfg = build(Config, raw, "", source)
    if cfg.run.run_id is not None:
        check_run_id(cfg.run.run_id, source)
    else:
        # Today's date, read once: a run that crosses midnight UTC keeps one run id (and so one
        # set of partitions and one model folder) for all its stages.
        cfg.run.run_id = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    check(cfg, source)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (what is logged and saved with every run)."""
    return dataclasses.asdict(cfg)


def redacted_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, secrets (spark.conf keys, storage options) masked."""
    data = config_to_dict(cfg)
    data["spark"]["conf"] = storage.redact(data["spark"]["conf"])
    data["run"]["storage_options"] = storage.redact(data["run"]["storage_options"])
    return data


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, secrets masked (what is logged and saved with every run)."""
    data = redacted_dict(cfg)
    data["run"]["run_id"] = cfg.run_id
    return yaml.safe_dump(data, sort_keys=False)
