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


def test_wide_logs_have_the_fields_asked_zipf_values_and_informative_fields(spark):
    """synthetic.extra_*_fields / item_tags: the shape of the paper's Video features in small. Off
    (the default) the tokens are the three of each side as always."""
    from divspa.ingest.synthetic import synthetic_user_features, wide_values

    wide = SyntheticConfig(num_users=300, num_items=3000, users_per_block=64, extra_user_fields=4,
                           extra_item_fields=6, values_per_field=50, informative_share=0.5, item_tags=3)
    items = {r.id: r.features for r in synthetic_item_features(spark, wide, 3).collect()}
    users = {r.id: r.features for r in synthetic_user_features(spark, wide, 3).collect()}
    plain = {r.id: r.features for r in synthetic_item_features(spark, SyntheticConfig(num_items=3000), 3).collect()}
    assert {len(f) for f in plain.values()} == {3} and items[7][:3] == plain[7]  # the three as before
    assert {len(f) for f in users.values()} == {3 + 4}
    tags = [[t for t in f if t.startswith("tag=")] for f in items.values()]
    assert {len(f) - len(t) for f, t in zip(items.values(), tags, strict=True)} == {3 + 6}
    assert min(map(len, tags)) >= 1 and max(map(len, tags)) == 3  # a multi-valued field
    p = Params.of(wide, 3)
    ids = np.arange(3000)
    cluster = catalogue(p).item_cluster
    values = wide_values(p, "i", ids, cluster)
    assert values.shape == (3000, 6) and values.min() >= 0 and values.max() < 50
    counts = np.bincount(values[:, 5], minlength=50)
    assert counts[0] > 5 * np.median(counts)  # a noise field: Zipf, its head value far above the median

    def modes(f: int) -> int:
        """Distinct most-frequent values of field f over the clusters: one per cluster when the
        field follows the cluster, the Zipf head alone when it is noise."""
        big = [c for c in np.unique(cluster) if (cluster == c).sum() >= 30]
        return len({int(np.bincount(values[cluster == c, f]).argmax()) for c in big}), len(big)

    informative, noise = modes(0), modes(5)
    assert informative[0] >= 0.8 * informative[1] and noise[0] == 1, (informative, noise)
    assert np.array_equal(values, wide_values(p, "i", ids, cluster))  # a function of (seed, field, id)
