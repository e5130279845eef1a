"""The one split routine: a seeded, stable assignment of a class's items to train / val / test.

Used per species for the sprites (items are whole animations, counts are given) and per class for a user's
flat zip (items are files, counts come from fractions), so both splits behave the same way.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def seeded_split(items: Iterable[str], key: str, val: int, test: int) -> dict[str, str]:
    """Shuffle ``items`` with ``random.Random(key)`` and take ``test``, then ``val``, the rest is train.

    At least one item always stays in train; test is filled before val. So a class with one item is train-only,
    and one with two has train and test but no val. The order of ``items`` does not matter.
    """
    order = sorted(items)
    random.Random(key).shuffle(order)
    n_test = min(test, max(0, len(order) - 1))
    n_val = min(val, max(0, len(order) - 1 - n_test))
    splits = {s: "test" for s in order[:n_test]}
    splits.update({s: "val" for s in order[n_test : n_test + n_val]})
    splits.update({s: "train" for s in order[n_test + n_val :]})
    return splits


def fraction_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """``(val, test)`` counts for ``n`` items: the rounded fractions, at least one each, train never empty."""
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    while n - n_test - n_val < 1:  # shrink the larger held-out split
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:
            raise ValueError(f"need at least 3 items to split, got {n}")
    return n_val, n_test


def fraction_split(items: list[str], key: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Seeded split giving each split at least one item (needs >= 3 items)."""
    val, test = fraction_counts(len(items), val_fraction, test_fraction)
    return seeded_split(items, key, val, test)
