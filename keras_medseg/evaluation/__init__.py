"""Evaluation: FROC, slide-level prediction and plots.

`froc_curve` / `froc_score` (sensitivity vs. average false positives per
normal slide; the lecture's protocol), `lesion_froc` (CAMELYON16 lesion-level FROC of
probability maps: candidates by non-maximum suppression, false positives on every slide,
isolated tumour cells excluded), `slide_level` / `slide_roc_auc` (a slide is positive iff its
best patch is), `froc_report` (both as one dict), and the plots
`plot_froc`, `plot_heatmap`, `probability_map`.
"""

from keras_medseg.evaluation.detection import detection_froc  # noqa: F401
from keras_medseg.evaluation.froc import (  # noqa: F401
    DEFAULT_FP_RATES,
    FROCCurve,
    froc_curve,
    froc_score,
    sensitivity_at,
)
from keras_medseg.evaluation.lesion_froc import lesion_froc  # noqa: F401
from keras_medseg.evaluation.patch_store import evaluate_patch_store  # noqa: F401
from keras_medseg.evaluation.plots import plot_froc, plot_heatmap, probability_map  # noqa: F401
from keras_medseg.evaluation.slide import (  # noqa: F401
    SlidePrediction,
    froc_report,
    slide_level,
    slide_roc_auc,
    slide_scores,
)
from keras_medseg.evaluation.surface import segmentation_metrics, summarize_metrics  # noqa: F401

__all__ = [
    "DEFAULT_FP_RATES",
    "FROCCurve",
    "SlidePrediction",
    "detection_froc",
    "evaluate_patch_store",
    "froc_curve",
    "froc_report",
    "froc_score",
    "lesion_froc",
    "plot_froc",
    "plot_heatmap",
    "probability_map",
    "segmentation_metrics",
    "sensitivity_at",
    "slide_level",
    "slide_roc_auc",
    "slide_scores",
    "summarize_metrics",
]
