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
from keras_medseg.data.io import ImageRecord, read_array, read_image, write_image  # noqa: F401
from keras_medseg.data.preprocess import load_preprocessing, save_preprocessing  # noqa: F401
from keras_medseg.data.labels import IGNORE_INDEX, standardize_labels  # noqa: F401
from keras_medseg.data.slide import open_slide  # noqa: F401
from keras_medseg.data.annotations import read_annotations  # noqa: F401
from keras_medseg.data.wsi import extract_slide, merge_stores, patch_grid  # noqa: F401
from keras_medseg.data.volume_dataset import VolumeDataset, find_cases  # noqa: F401

__all__ = [
    "IGNORE_INDEX",
    "ImageRecord",
    "PatchSequence",
    "PatchSet",
    "PatchStore",
    "QtipsDataset",
    "ThreeStepSampler",
    "VolumeDataset",
    "augment_patches",
    "extract_patches",
    "extract_slide",
    "find_cases",
    "load_folder",
    "load_patch_dataset",
    "load_preprocessing",
    "merge_stores",
    "normalize_qtips",
    "open_slide",
    "patch_grid",
    "qtips",
    "qtips_dataset",
    "read_array",
    "read_image",
    "read_annotations",
    "recover_patch_store",
    "save_preprocessing",
    "standardize_labels",
    "synthetic_blobs",
    "synthetic_boxes",
    "tissue_mask",
    "translation",
    "write_image",
]
