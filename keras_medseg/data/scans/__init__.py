"""Scans: medical image files with their geometry, resampling, intensity presets, lazy patch datasets.

Modules: `io` (NIfTI, NRRD/MHA, DICOM series, PNG/TIFF/NumPy with their affine: `read_image`,
`write_image`), `geometry` (reorientation and resampling between a scan's voxel grid and the
model's), `target_spacing` (one training voxel size from a data set's headers, `--spacing median`),
`ct_normalization` (nnU-Net's CT intensity mapping from a data set's foreground, `--intensity ct`),
`preprocess` (intensity presets and the preprocessing spec saved with a model) and
`volume_dataset` (`VolumeDataset`: positive/negative patches sampled lazily from the cases).
"""

# Nothing is re-exported here (the modules import each other and `keras_medseg.data.cases`): import the modules
# themselves, or the public names from `keras_medseg.data`.
__all__: list[str] = []
