"""Scans: medical image files with their geometry, resampling, intensity presets, lazy patch datasets.

Modules: `io` (NIfTI, NRRD/MHA, DICOM series, PNG/TIFF/NumPy with their affine: `read_image`,
`write_image`), `geometry` (reorientation and resampling between a scan's voxel grid and the
model's), `preprocess` (intensity presets and the preprocessing spec saved with a model) and
`volume_dataset` (`VolumeDataset`: positive/negative patches sampled lazily from the cases).
"""

from keras_medseg.data.scans.io import ImageRecord, read_array, read_image, write_image
from keras_medseg.data.scans.preprocess import load_preprocessing, save_preprocessing
from keras_medseg.data.scans.volume_dataset import VolumeDataset

__all__ = ["ImageRecord", "VolumeDataset", "load_preprocessing", "read_array", "read_image", "save_preprocessing",
           "write_image"]
