"""Deterministic seeds that depend only on (base seed, video, purpose).

Seeds never depend on the order in which videos are processed, so a resumed or
partial run produces byte-identical output to an uninterrupted one.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(base_seed: int, *parts: object) -> int:
    """A 31-bit seed from ``base_seed`` and any labels (video name, purpose, index)."""
    text = "\x1f".join([str(int(base_seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little") & 0x7FFFFFFF


def rng(base_seed: int, *parts: object) -> np.random.Generator:
    """A numpy Generator seeded with ``derive_seed(base_seed, *parts)``."""
    return np.random.default_rng(derive_seed(base_seed, *parts))
