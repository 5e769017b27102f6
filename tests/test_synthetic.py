"""The synthetic generator: deterministic, partition-independent, with the intended structure."""

from __future__ import annotations

import numpy as np

from divspa.config import SyntheticConfig
from divspa.ingest.synthetic import (
    Params,
    catalogue,
    generate_block,
    synthetic_clicks,
    synthetic_item_features,
)


def rows(df):
    return sorted(tuple(r) for r in df.collect())


def test_same_rows_whatever_the_partitioning(spark):
    a = SyntheticConfig(num_users=700, num_items=150, users_per_block=64, partitions=1)
    b = SyntheticConfig(num_users=700, num_items=150, users_per_block=64, partitions=5)
    assert rows(synthetic_clicks(spark, a, 7)) == rows(synthetic_clicks(spark, b, 7))
    assert rows(synthetic_item_features(spark, a, 7)) == rows(synthetic_item_features(spark, b, 7))
    assert rows(synthetic_clicks(spark, a, 7)) != rows(synthetic_clicks(spark, a, 8))


def test_structure_popularity_and_interests():
    p = Params.of(SyntheticConfig(num_users=4000, num_items=2000, mean_clicks_per_user=30, users_per_block=4000), 1)
    b = generate_block(p, 0)
    counts = np.bincount(b.item, minlength=p.num_items)
    top = np.sort(counts)[::-1]
    # Heavy head, long tail: the top 5% of items take far more than 5% of clicks.
    assert top[: p.num_items // 20].sum() > 0.3 * counts.sum()
    # Users concentrate on a few clusters: most of a user's clicks fall in their top 3 clusters.
    cat = catalogue(p)
    share = []
    for u in range(200):
        clusters = cat.item_cluster[b.item[b.user == u]]
        if len(clusters) >= 10:
            share.append(np.sort(np.bincount(clusters))[::-1][:3].sum() / len(clusters))
    assert np.median(share) > 0.7
    start = p.start_us
    assert b.time_us.min() >= start and b.time_us.max() <= start + p.days * 86400 * 1_000_000
