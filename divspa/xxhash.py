"""Spark's xxhash64 (`F.xxhash64`) in numpy, so Arrow passes draw the numbers Spark SQL would.

The augmentation's sampler is a pure function of hashed row keys; computing the hash in numpy on
whole batches lets it run outside Spark's window operators and still give the same table as
`F.xxhash64(seed, user_id, item_id, strategy, aug_item_id)` would. Mirrors
org.apache.spark.sql.catalyst.expressions.XXH64 (hashInt, hashLong, hashUnsafeBytes; seed 42);
tests/test_xxhash.py checks it against Spark on random keys.
"""

from __future__ import annotations

import numpy as np

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)
SPARK_SEED = 42


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * P2
    h = h ^ (h >> np.uint64(29))
    h = h * P3
    return h ^ (h >> np.uint64(32))


def _u64(x: np.ndarray | int) -> np.ndarray:
    return np.asarray(x).astype(np.int64).view(np.uint64) if np.ndim(x) else np.array(x, np.int64).view(np.uint64)


def hash_int(value: int, seed: np.ndarray) -> np.ndarray:
    """XXH64.hashInt of one int32 under each of `seed` (uint64)."""
    with np.errstate(over="ignore"):
        h = seed + P5 + np.uint64(4)
        h = h ^ (np.uint64(value & 0xFFFFFFFF) * P1)
        return _fmix(_rotl(h, 23) * P2 + P3)


def hash_long(values: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """XXH64.hashLong of each int64 of `values` under the matching (or one) uint64 seed."""
    with np.errstate(over="ignore"):
        h = seed + P5 + np.uint64(8)
        h = h ^ (_rotl(_u64(values) * P2, 31) * P1)
        return _fmix(_rotl(h, 27) * P1 + P4)


def hash_bytes(data: bytes, seed: np.ndarray) -> np.ndarray:
    """XXH64.hashUnsafeBytes of one short byte string (< 32 bytes) under each of `seed`."""
    if len(data) >= 32:
        raise ValueError("hash_bytes covers strings under 32 bytes (strategy names)")
    with np.errstate(over="ignore"):
        h = seed + P5 + np.uint64(len(data))
        at = 0
        while at + 8 <= len(data):
            word = np.uint64(int.from_bytes(data[at:at + 8], "little"))
            h = h ^ (_rotl(np.atleast_1d(word * P2), 31) * P1)
            h = _rotl(h, 27) * P1 + P4
            at += 8
        if at + 4 <= len(data):
            h = h ^ (np.uint64(int.from_bytes(data[at:at + 4], "little")) * P1)
            h = _rotl(h, 23) * P2 + P3
            at += 4
        for byte in data[at:]:
            h = h ^ (np.uint64(byte) * P5)
            h = _rotl(h, 11) * P1
        return _fmix(h)


def xxhash64(seed: int, *columns: np.ndarray | str) -> np.ndarray:
    """F.xxhash64(F.lit(seed), *columns) as int64: `seed` an int32 literal, each column an int64
    array or one string shared by every row."""
    n = max((len(c) for c in columns if not isinstance(c, str)), default=1)
    h = np.full(n, SPARK_SEED, np.uint64)
    h = hash_int(seed, h) if -2**31 <= seed < 2**31 else hash_long(np.array([seed]), h)
    for col in columns:
        h = hash_bytes(col.encode(), h) if isinstance(col, str) else hash_long(col, h)
    return h.view(np.int64)


def uniform(h: np.ndarray) -> np.ndarray:
    """(pmod(h, 2^53) + 0.5) / 2^53: the sampler's uniform number in (0, 1) from a hash."""
    return (np.mod(h, 2**53).astype(np.float64) + 0.5) / float(2**53)
