"""benchmarks/_common.py helpers shared by the benchmark scripts."""

import os
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from _common import dice  # noqa: E402


def test_dice_matches_sklearn_f1(rng):
    from sklearn.metrics import f1_score

    for _ in range(5):
        t = rng.random((4, 9, 7)) < 0.3
        p = rng.random((4, 9, 7)) < 0.4
        assert dice(t, p) == pytest.approx(f1_score(t.ravel(), p.ravel()))
    assert dice(np.zeros(5), np.zeros(5)) == 1.0
    assert dice(np.ones(5), np.zeros(5)) == 0.0
    with pytest.raises(ValueError, match="same size"):
        dice(np.ones(5), np.ones(6))
