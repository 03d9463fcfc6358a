"""FROC curve and score against hand-computed cases and a brute-force reference."""

import numpy as np
import pytest

from keras_medseg.evaluation import froc_curve, froc_score, sensitivity_at


def _brute_force(scores, tumor_ids, slide_ids, normal, t):
    """Direct transcription of the definitions, one threshold at a time."""
    fp = sum(1 for s, sl in zip(scores, slide_ids) if sl in normal and s >= t)
    tumors = {(sl, tid) for sl, tid in zip(slide_ids, tumor_ids) if tid >= 0}
    hit = {
        (sl, tid)
        for s, sl, tid in zip(scores, slide_ids, tumor_ids)
        if tid >= 0 and s >= t
    }
    return fp / len(set(normal)), len(hit) / len(tumors)


def test_hand_computed_case():
    # slide A: tumour 0 (patches 0.9, 0.3), tumour 1 (0.4), a normal patch 0.8 (not an FP:
    # FPs are counted on normal slides only); slides N1, N2 normal.
    scores = [0.9, 0.3, 0.4, 0.8, 0.7, 0.2, 0.5]
    tumors = [0, 0, 1, -1, -1, -1, -1]
    slides = ["A", "A", "A", "A", "N1", "N1", "N2"]
    c = froc_curve(scores, tumors, slides, ["N1", "N2"])
    np.testing.assert_allclose(c.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2])
    np.testing.assert_allclose(c.avg_fp, [0, 0, 0, 0.5, 1.0, 1.0, 1.0, 1.5])
    np.testing.assert_allclose(c.sensitivity, [0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0])
    # step: at rate 0.25 -> best sens with FP <= 0.25 = 0.5; 0.5 -> 0.5; 1 -> 1.0; 2, 4, 8 -> 1.0
    score, sens = froc_score(scores, tumors, slides, ["N1", "N2"], return_sensitivities=True)
    np.testing.assert_allclose(sens, [0.5, 0.5, 1, 1, 1, 1])
    assert score == pytest.approx(5 / 6)
    # linear: levels (0, .5), (0.5, .5), (1, 1), (1.5, 1) -> at 0.25: 0.5, at 0.5: 0.5
    lin = froc_score(scores, tumors, slides, ["N1", "N2"], fp_rates=(0.25, 0.75), interpolation="linear")
    assert lin == pytest.approx((0.5 + 0.75) / 2)


def test_tumour_ids_are_per_slide_and_normal_slide_without_patches_counts():
    # tumour id 0 on slides A and B are two tumours; N2 has no patches but counts.
    c = froc_curve([0.9, 0.1, 0.6], [0, 0, -1], ["A", "B", "N1"], ["N1", "N2"], thresholds=[0.5])
    assert c.sensitivity.tolist() == [0.5]
    assert c.avg_fp.tolist() == [0.5]


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 300
    slides = rng.integers(0, 12, n)
    normal = list(range(6))  # slides 0..5 normal
    tumors = np.where(slides >= 6, rng.integers(-1, 4, n), -1)
    tumors[np.argmax(slides >= 6)] = 0  # at least one tumour
    scores = np.round(rng.random(n), 2)  # ties on purpose
    c = froc_curve(scores, tumors, slides, normal)
    for t, fp, se in zip(c.thresholds, c.avg_fp, c.sensitivity):
        ref_fp, ref_se = _brute_force(scores, tumors, slides, normal, t)
        assert fp == pytest.approx(ref_fp)
        assert se == pytest.approx(ref_se)
    assert np.all(np.diff(c.avg_fp) >= 0) and np.all(np.diff(c.sensitivity) >= 0)
    # step definition by brute force over the thresholds.
    rates = (0.25, 0.5, 1, 2, 4, 8)
    ref = [max([se for fp, se in zip(c.avg_fp, c.sensitivity) if fp <= r], default=0.0) for r in rates]
    score = froc_score(scores, tumors, slides, normal, rates)
    assert score == pytest.approx(np.mean(ref))


def test_sensitivity_at_handles_ties_and_clamping():
    sens = sensitivity_at([0, 0, 1, 1, 3], [0, 0.2, 0.4, 0.6, 0.8], fp_rates=(0, 0.5, 2, 10), interpolation="linear")
    np.testing.assert_allclose(sens, [0.2, 0.4, 0.7, 0.8])
    sens = sensitivity_at([0, 0, 1, 1, 3], [0, 0.2, 0.4, 0.6, 0.8], fp_rates=(0, 0.5, 2, 10))
    np.testing.assert_allclose(sens, [0.2, 0.2, 0.6, 0.8])


def test_bad_inputs():
    with pytest.raises(ValueError, match="normal_slide_ids"):
        froc_curve([0.5], [0], ["A"], [])
    with pytest.raises(ValueError, match="tumor_ids"):
        froc_curve([0.5, 0.2], [0], ["A", "A"], ["B"])
    with pytest.raises(ValueError, match="finite"):
        froc_curve([np.nan], [0], ["A"], ["B"])
    with pytest.raises(ValueError, match="No tumour"):
        froc_curve([0.5], [-1], ["A"], ["A"])
    with pytest.raises(ValueError, match="Normal slides must not contain tumour"):
        froc_curve([0.5, 0.1], [0, -1], ["A", "B"], ["A"])
    with pytest.raises(TypeError, match="tumor_ids"):
        froc_curve([0.5], [0.5], ["A"], ["B"])
    with pytest.raises(ValueError, match="interpolation"):
        froc_score([0.5], [0], ["A"], ["B"], interpolation="cubic")
    with pytest.raises(ValueError, match="fp_rates"):
        froc_score([0.5], [0], ["A"], ["B"], fp_rates=(-1,))
