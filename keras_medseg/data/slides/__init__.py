"""Whole slides: slide reading, annotations, HDF5 patch store, patch extraction, streaming, sampling.

Modules: `slide` (tiled pyramid reading, `open_slide`), `annotations` (ASAP XML / GeoJSON polygons),
`extract` (patch grid, inner-square labels, tissue mask), `store` (the HDF5 `PatchStore`), `recovery`
(crash recovery of a store), `hdf5_check` (truncated-file check), `streaming` (tile-by-tile extraction
of a whole slide, merging stores), `sampling` (`ThreeStepSampler`, `PatchSequence`), `patch_augment`
(flips and colour perturbation), `stain` (Macenko / Reinhard stain normalisation), `cohort` (a cohort of
slides extracted on Dask into per-slide shards read as one store), `slide_base` / `tiff_slide` /
`openslide_slide` (the readers behind `open_slide`).

The workflow of the lecture "Convolutional networks - theory" (cancer detection in
whole-slide images):

1. `extract_patches(image, mask, size=512)` cuts a slide into square patches
   on a grid. A patch is positive iff its *inner square* (the centred square
   of side `inner_size`, default `size // 2`) intersects the annotation; the
   grid stride defaults to `inner_size`, so the inner squares tile the slide
   and every annotated pixel lies in the inner square of exactly one patch.
   Mostly-background patches can be dropped with `min_tissue`.
2. `PatchStore` keeps the patches of many slides in ONE HDF5 file (h5py):
   `patches (N, S, S, C)`, per-patch `label`, `slide` (index into
   `slide_names`), `tumor_id` (-1 = none) and `coords` (row, col of the top
   left corner). Datasets are chunked (one patch per chunk), compressed
   (gzip or lzf) and resizable, so the file can grow to millions of patches
   and be read patch by patch.
3. `ThreeStepSampler` is a `keras.utils.PyDataset` that draws every training
   patch in three steps: a random label, a random slide holding at least one
   patch of that label, a random patch of that label from that slide; then it
   applies random flips and colour perturbations (`augment_patches`).

Crash safety: the writer uses HDF5's single-writer / multiple-reader (SWMR)
mode, in which the file on disk is consistent at every instant, and commits
each `append` in two steps: the new rows are written and flushed first, then
the committed length (`num_committed`) is updated and flushed. Readers only
see committed rows. If a writer dies mid-append (even `SIGKILL`), every
previously committed patch stays readable; reopening the store for writing
detects the unclean shutdown and rebuilds the file from its committed rows
(atomic replace), dropping the half-written batch. A sidecar `<file>.lock`
(`fcntl.flock`) keeps two writers apart and tells a dead writer from a live one.

Reference: the lecture "Convolutional networks - theory" ("Cut into patches of size 512 px x 512 px", "Patch
positive iff the inner square intersects the annotation", "Training data three
step sampling", "random vertical and horizontal flips, random color
perturbations").
"""

from keras_medseg.data.slides.annotations import Annotations, read_annotations
from keras_medseg.data.slides.extract import PatchSet, extract_patches, iter_patches, tissue_mask
from keras_medseg.data.slides.patch_augment import augment_patches
from keras_medseg.data.slides.recovery import recover_patch_store
from keras_medseg.data.slides.sampling import PatchSequence, ThreeStepSampler, load_patch_dataset
from keras_medseg.data.slides.slide import open_slide
from keras_medseg.data.slides.slide_base import Slide
from keras_medseg.data.slides.stain import StainNormalizer
from keras_medseg.data.slides.store import FORMAT, FORMAT_VERSION, SLIDE_NAME_BYTES, PatchStore
from keras_medseg.data.slides.streaming import (
    PatchGrid,
    extract_slide,
    merge_stores,
    patch_grid,
    tissue_mask_from_thumbnail,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SLIDE_NAME_BYTES",
    "Annotations",
    "PatchGrid",
    "PatchSequence",
    "PatchSet",
    "PatchStore",
    "Slide",
    "StainNormalizer",
    "ThreeStepSampler",
    "augment_patches",
    "extract_patches",
    "extract_slide",
    "iter_patches",
    "load_patch_dataset",
    "merge_stores",
    "open_slide",
    "patch_grid",
    "read_annotations",
    "recover_patch_store",
    "tissue_mask",
    "tissue_mask_from_thumbnail",
]
