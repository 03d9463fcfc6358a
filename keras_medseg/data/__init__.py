"""Data: synthetic Q-tips, image/mask folders and (from other modules) WSI patches and medical IO.

`from keras_medseg import data`; `data.qtips(n, seed=0)`.
"""

from keras_medseg.data.qtips import QtipsDataset, normalize_qtips, qtips, qtips_dataset
from keras_medseg.data.folder import load_folder

# -- add new data modules below, one import line each --
from keras_medseg.data.synthetic_boxes import synthetic_boxes
from keras_medseg.data.synthetic_blobs import synthetic_blobs
from keras_medseg.data.wsi import PatchSequence, PatchSet, PatchStore, ThreeStepSampler, augment_patches, extract_patches, load_patch_dataset, recover_patch_store, tissue_mask  # noqa: E501
from keras_medseg.data import translation  # noqa: F401

__all__ = [
    "PatchSequence",
    "PatchSet",
    "PatchStore",
    "QtipsDataset",
    "ThreeStepSampler",
    "augment_patches",
    "extract_patches",
    "load_folder",
    "load_patch_dataset",
    "normalize_qtips",
    "qtips",
    "qtips_dataset",
    "recover_patch_store",
    "synthetic_blobs",
    "synthetic_boxes",
    "tissue_mask",
    "translation",
]
