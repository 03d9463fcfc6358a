"""Slide-level prediction, its ROC-AUC, the FROC report and the plots."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_medseg.evaluation import (
    froc_report,
    plot_froc,
    plot_heatmap,
    probability_map,
    slide_level,
    slide_roc_auc,
)


def test_slide_level_is_max_patch_score():
    p = slide_level([0.1, 0.8, 0.3, 0.5], ["a", "a", "b", "c"], threshold=0.5)
    assert p.slide_ids.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(p.scores, [0.8, 0.3, 0.5])
    assert p.predictions.tolist() == [True, False, True]  # >= t


def test_slide_roc_auc_matches_sklearn(rng):
    slides = rng.integers(0, 20, 400)
    labels = (rng.random(400) < 0.05).astype(int)
    scores = rng.random(400) * 0.5 + 0.5 * labels
    # reference: slide label = any positive patch, slide score = max patch score
    ids = np.unique(slides)
    y = [labels[slides == s].max() for s in ids]
    s = [scores[slides == s].max() for s in ids]
    assert slide_roc_auc(scores, slides, labels) == pytest.approx(roc_auc_score(y, s))
    assert slide_roc_auc(scores, slides, dict(zip(ids.tolist(), y))) == pytest.approx(roc_auc_score(y, s))


def test_froc_report():
    scores = [0.9, 0.3, 0.4, 0.8, 0.7, 0.2, 0.5]
    labels = [1, 1, 1, 0, 0, 0, 0]
    tumors = [0, 0, 1, -1, -1, -1, -1]
    slides = ["A", "A", "A", "A", "N1", "N1", "N2"]
    r = froc_report(scores, tumors, slides, labels)
    assert r["froc"] == pytest.approx(5 / 6)
    assert r["num_slides"] == 3 and r["num_normal_slides"] == 2 and r["num_tumors"] == 2
    assert r["slide_roc_auc"] == pytest.approx(1.0)
    assert r["slide_accuracy"] == pytest.approx(1 / 3)  # N1 (0.7) and N2 (0.5) >= 0.5


def test_probability_map():
    m = probability_map([0.2, 0.9], [(0, 0), (0, 2)], patch_size=4, shape=(4, 8))
    np.testing.assert_allclose(m[:, :2], 0.2)
    np.testing.assert_allclose(m[:, 2:6], 0.9)  # overlap -> max
    assert np.isnan(m[:, 6:]).all()
    inner = probability_map([0.3], [(0, 0)], patch_size=4, inner_size=2, shape=(4, 4))
    assert np.isnan(inner[0, 0]) and inner[1, 1] == pytest.approx(0.3)
    mean = probability_map([0.2, 0.6], [(0, 0), (0, 2)], patch_size=4, reduce="mean")
    assert mean[0, 3] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="coords"):
        probability_map([0.2], [(0, 0, 0)], patch_size=4)


def test_plots_run():
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_froc([0, 0.5, 1.0], [0.2, 0.5, 1.0], label="model")
    assert ax.get_xlabel().startswith("average false positives")
    ax = plot_heatmap([0.2, 0.9], [(0, 0), (0, 4)], 4, image=np.zeros((8, 8, 3)))
    assert len(ax.images) == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="slide_ids"):
        slide_level([0.1, 0.2], ["a"])
    with pytest.raises(ValueError, match="threshold"):
        slide_level([0.1], ["a"], threshold=float("nan"))
    with pytest.raises(ValueError, match="positive and negative"):
        slide_roc_auc([0.1, 0.2], ["a", "b"], [0, 0])
    with pytest.raises(ValueError, match="no label"):
        slide_roc_auc([0.1, 0.2], ["a", "b"], {"a": 1})
