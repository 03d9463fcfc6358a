"""Data: what a data argument is, the cases it holds, and the readers, datasets and generators behind them.

`from keras_medseg import data`; `data.qtips(n, seed=0)`.

What a data argument is, decided once: `sources.resolve_source` (a typed source). The cases of a
folder and the one mask rule: `cases` (`find_cases`, `mask_ids`, `standardize_labels`). Arrays of a
source for fitting and scoring in memory: `arrays` (`load_data`, `load_evaluation_data`, `load_folder`);
seeded batches of arrays, split by rank for training over several processes: `batches` (`ArrayBatches`).
Label maps to overlapping region masks for sigmoid (multi-label) heads and back: `regions`
(`regions_from_labels`, `merge_regions`, `BRATS_REGIONS`).

Sub-packages, by what they hold:

* `scans/`: medical image files with their geometry (`io`, `geometry`), intensity presets and the
  preprocessing spec (`preprocess`), the lazy patch dataset of volumes (`volume_dataset`).
* `slides/`: whole slides (`slide`, `annotations`), the HDF5 patch store and its extraction,
  streaming and sampling.
* `synthetic/`: data sets made on the fly (Q-tips, blobs, boxes, translation pairs).
* `augment/`: augmentation layers (keras.ops, 2D and 3D).
"""

from keras_medseg.data.arrays import EvaluationData, SegmentationData, load_data, load_evaluation_data, load_folder
from keras_medseg.data.batches import ArrayBatches
from keras_medseg.data.cases import IGNORE_INDEX, find_cases, find_scans, mask_ids, standardize_labels
from keras_medseg.data.regions import BRATS_REGIONS, merge_regions, regions_from_labels
from keras_medseg.data.scans.io import ImageRecord, read_array, read_image, write_image
from keras_medseg.data.scans.preprocess import load_preprocessing, save_preprocessing
from keras_medseg.data.scans.volume_dataset import VolumeDataset
from keras_medseg.data.slides import (
    PatchSequence,
    PatchSet,
    PatchStore,
    ThreeStepSampler,
    augment_patches,
    extract_patches,
    extract_slide,
    load_patch_dataset,
    merge_stores,
    open_slide,
    patch_grid,
    read_annotations,
    recover_patch_store,
    tissue_mask,
)
from keras_medseg.data.sources import resolve_source
from keras_medseg.data.synthetic import (
    QtipsDataset,
    normalize_qtips,
    qtips,
    qtips_dataset,
    synthetic_blobs,
    synthetic_boxes,
)

__all__ = [
    "BRATS_REGIONS",
    "IGNORE_INDEX",
    "ArrayBatches",
    "EvaluationData",
    "ImageRecord",
    "PatchSequence",
    "PatchSet",
    "PatchStore",
    "QtipsDataset",
    "SegmentationData",
    "ThreeStepSampler",
    "VolumeDataset",
    "augment_patches",
    "extract_patches",
    "extract_slide",
    "find_cases",
    "find_scans",
    "load_data",
    "load_evaluation_data",
    "load_folder",
    "load_patch_dataset",
    "load_preprocessing",
    "mask_ids",
    "merge_regions",
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
    "regions_from_labels",
    "resolve_source",
    "save_preprocessing",
    "standardize_labels",
    "synthetic_blobs",
    "synthetic_boxes",
    "tissue_mask",
    "write_image",
]
