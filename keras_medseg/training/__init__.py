"""Training: segmentation (`train`, `evaluate`, `resolve_data`), patch classifiers, recipes, callbacks.

Modules:

* `segmentation`: fit / score segmentation models (`train`, `evaluate`,
  `resolve_data`, the one interpreter of a `--data` value).
* `patch_classifier`: `train_patch_classifier` on an HDF5 patch store.
* `recipes`: optimizer, loss and callbacks of a zoo model (`vgg16_recipe`).
* `callbacks`: LR halving, ROC-AUC early stopping, GAN sample grids.
* `checkpointing`: atomic best checkpoint, resumable CSV log, backups.
* `distribute`: multi-device training scopes.

Every name of the former `keras_medseg.training` module is exported here.
"""

from keras_medseg.training.patch_classifier import (
                                                PatchTrainResult,
                                                train_patch_classifier,
)
from keras_medseg.training.recipes import vgg16_recipe
from keras_medseg.training.segmentation import (
                                                QTIPS_CLASS_NAMES,
                                                EvaluationData,
                                                PatchStoreData,
                                                SegmentationData,
                                                TrainResult,
                                                build_for_data,
                                                class_balance_weights,
                                                evaluate,
                                                evaluate_model,
                                                format_table,
                                                load_data,
                                                resolve_data,
                                                train,
)

__all__ = [
                                                "QTIPS_CLASS_NAMES",
                                                "EvaluationData",
                                                "PatchStoreData",
                                                "PatchTrainResult",
                                                "SegmentationData",
                                                "TrainResult",
                                                "build_for_data",
                                                "class_balance_weights",
                                                "evaluate",
                                                "evaluate_model",
                                                "format_table",
                                                "load_data",
                                                "resolve_data",
                                                "train",
                                                "train_patch_classifier",
                                                "vgg16_recipe",
]
