"""Precision, recall, density and coverage (bench/metrics/prdc.py) against the authors' code (clovaai's `prdc`
package, compute_prdc) on the same features, and on sets whose answers are known."""

from __future__ import annotations

import numpy as np
import prdc as authors_code  # clovaai/generative-evaluation-prdc: a test dependency (pyproject.toml)
import pytest

from bench.core.errors import BenchError
from bench.metrics.prdc import nearest_neighbour_radii, prdc, prdc_metrics


def _features(seed, n, d=16, shift=0.0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


@pytest.mark.parametrize(("n_real", "n_fake", "k", "shift"), [(60, 45, 5, 0.3), (40, 70, 3, 1.0), (30, 30, 1, 0.0)])
def test_prdc_equals_the_authors_code_on_the_same_features(n_real, n_fake, k, shift):
    # Catches: a swapped pair (precision for recall, density for coverage), the sample itself counted as its own
    # nearest neighbour (radius 0), <= for <, density not divided by k, and blocks that drop or repeat rows.
    real, fake = _features(0, n_real), _features(1, n_fake, shift=shift)
    expected = authors_code.compute_prdc(real, fake, nearest_k=k)
    for block in (7, 1024):
        ours = prdc(real, fake, k, block=block)
        assert ours == pytest.approx({name: float(v) for name, v in expected.items()}, abs=1e-12), (block, ours)


def test_known_answers_identical_disjoint_and_collapsed_sets():
    # Identical sets: each ball holds its centre and k - 1 neighbours (no ties), so density is exactly 1 and the
    # rest are 1. Far-apart sets: nothing lies in anything's ball. A generator collapsed onto one reference sample:
    # its samples look real (precision 1, density above 1) but reach no variety (recall near 0; coverage only the
    # few reference balls that reach that one sample).
    real = _features(2, 50)
    assert prdc(real, real.copy(), 5) == pytest.approx({"precision": 1, "recall": 1, "density": 1, "coverage": 1})
    assert prdc(real, _features(3, 50, shift=100.0), 5) == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}
    collapsed = real[:1] + 1e-3 * _features(4, 50)
    out = prdc(real, collapsed, 5)
    assert out["precision"] == 1 and out["density"] > 1 and out["recall"] <= 0.05 and out["coverage"] <= 0.3


def test_radii_are_the_kth_neighbour_without_the_sample_itself():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert nearest_neighbour_radii(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert nearest_neighbour_radii(points, 2, block=1).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_entries_carry_k_counts_and_a_small_sample_note():
    entries = prdc_metrics(_features(5, 20), _features(6, 12), nearest_k=3, protocol={"feature_extractor": "x"})
    assert set(entries) == {"precision", "recall", "density", "coverage"}
    for entry in entries.values():
        p = entry.protocol
        assert entry.higher_is_better and entry.stderr is None
        assert (p["nearest_k"], p["n_reference"], p["n_generated"], p["feature_extractor"]) == (3, 20, 12, "x")
        assert p["below_minimum"] and "compare only at equal counts" in p["note"] and p["definition"]


def test_bad_input_names_the_setting():
    with pytest.raises(BenchError, match="eval.prdc.nearest_k=5"):
        prdc(_features(0, 5), _features(1, 20), 5)
    with pytest.raises(BenchError, match="eval.prdc.nearest_k must be at least 1"):
        prdc(_features(0, 20), _features(1, 20), 0)
    with pytest.raises(BenchError, match="dimensions"):
        prdc(_features(0, 20), _features(1, 20, d=8), 3)
