"""Training: segmentation (`train`, `evaluate`), volumes, patch classifiers, recipes, callbacks.

Modules:

* `runner`: the one fit runner (`fit`): run folder, lock, backups, resume, log, best checkpoint; every
  entry point below fits through it.
* `segmentation`: fit / score segmentation models on arrays (`train`, `evaluate`).
* `volumes`: `train_volumes` on folders of volumes / `dataset.json` (lazy patches, augmentation, Dice + CE).
* `patch_classifier`: `train_patch_classifier` on an HDF5 patch store.
* `recipes`: optimizer, loss and callbacks of a zoo model (`vgg16_recipe`).
* `callbacks`: LR halving, ROC-AUC early stopping, GAN sample grids.
* `demo`: IMEXnet vs ResNet on Q-tips (`keras-medseg demo`).
* `checkpointing`: atomic best checkpoint, resumable CSV log, backups.
* `distribute`: several devices of one process (scopes) and several processes or hosts (`processes=`:
  jax.distributed, tf.distribute.MultiWorkerMirroredStrategy, torch.distributed; launcher, rank sharding).

The data argument of every entry point is decided by `keras_medseg.data.sources.resolve_source`
(once: a typed source passed in is used as it is); the arrays come from `keras_medseg.data.load_data`.
"""

from keras_medseg.training.patch_classifier import PatchTrainResult, train_patch_classifier
from keras_medseg.training.recipes import vgg16_recipe
from keras_medseg.training.segmentation import (
    TrainResult,
    build_for_data,
    class_balance_weights,
    evaluate,
    evaluate_model,
    train,
)
from keras_medseg.training.volumes import VolumeTrainResult, default_augmentation, train_volumes

__all__ = [
    "PatchTrainResult",
    "TrainResult",
    "VolumeTrainResult",
    "build_for_data",
    "class_balance_weights",
    "default_augmentation",
    "evaluate",
    "evaluate_model",
    "train",
    "train_patch_classifier",
    "train_volumes",
    "vgg16_recipe",
]
