"""Prediction with a saved model: whole scans and whole slides (beside `training/`, which makes the models).

Modules:

* `scans`: whole scans in, label maps out (`predict_scan`, `predict_files`): each scan brought to the
  model's training frame (spacing, orientation, intensity preset saved with the model), predicted window
  by window, brought back to its own voxel grid; `evaluate_scans` scores a folder of scans per case in mm.
  `keras-medseg predict` and `keras-medseg evaluate` on scan folders.
* `slides`: whole slides in, probability heatmaps and slide scores out (`predict_slide`,
  `predict_slide_to_dir`), lesion-level FROC over predicted slides (`froc_from_predictions`).
  `keras-medseg slide predict` and `keras-medseg evaluate --froc --predictions`.
* `cohort`: a folder of slides (`predict_cohort`, in process or one Dask task per slide): heatmaps, tumour
  masks on the heatmap grid, `scores.csv`, FROC under the lecture's and the CAMELYON16 protocol.
  `keras-medseg slide predict MODEL FOLDER` and `keras-medseg evaluate --froc --protocol camelyon16`.
"""

from keras_medseg.predict.scan_evaluation import ScanEvaluation, evaluate_scans, format_summary
from keras_medseg.predict.scans import predict_files, predict_scan
from keras_medseg.predict.slides import (
    SlideHeatmap,
    froc_from_predictions,
    predict_slide,
    predict_slide_to_dir,
    write_slide_prediction,
)

__all__ = [
    "ScanEvaluation",
    "SlideHeatmap",
    "evaluate_scans",
    "format_summary",
    "froc_from_predictions",
    "predict_files",
    "predict_scan",
    "predict_slide",
    "predict_slide_to_dir",
    "write_slide_prediction",
]
