"""divspa.xxhash against Spark's own xxhash64 on random keys."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from divspa.xxhash import uniform, xxhash64


@pytest.mark.parametrize("seed", [0, 42, -7, 2**40])
def test_xxhash64_is_sparks(spark, seed):
    rng = np.random.default_rng(seed & 0xFFFF)
    n = 500
    u, i = rng.integers(-2**62, 2**62, n), rng.integers(0, 10**7, n)
    rows = [(int(a), int(b)) for a, b in zip(u, i, strict=True)]
    df = spark.createDataFrame(rows, "u bigint, i bigint")
    for text in ("u2i", "u2u2i", "twelve bytes", "sixteen bytes ok", "a string of 31 bytes, no longer"):
        h = F.xxhash64(F.lit(seed), "u", F.lit(text), "i")
        u01 = (F.pmod(h, F.lit(2**53)).cast("double") + F.lit(0.5)) / F.lit(float(2**53))
        got = df.select(h.alias("h"), u01.alias("r")).collect()
        mine = xxhash64(seed, u, text, i)
        assert np.array_equal(np.array([r.h for r in got]), mine), text
        assert np.array_equal(np.array([r.r for r in got]), uniform(mine)), text


def test_long_strings_are_refused():
    with pytest.raises(ValueError, match="under 32 bytes"):
        xxhash64(1, np.arange(3), "x" * 32)
