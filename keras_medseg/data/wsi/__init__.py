"""Whole-slide-image patches: HDF5 patch store, patch extraction, three-step sampler, augmentation.

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

# Re-exports: every name importable from the former single module `data/wsi.py`.
# ruff: noqa: F401
from keras_medseg.data.wsi.augment import (
    _RGB_TO_YIQ,
    _YIQ_TO_RGB,
    _colour_matrices,
    augment_patches,
)
from keras_medseg.data.wsi.extract import (
    PatchSet,
    _check_extract_args,
    _grid,
    _patch_set,
    _tumor_labels,
    extract_patches,
    iter_patches,
    tissue_mask,
)
from keras_medseg.data.wsi.recovery import (
    _corrupt,
    _unclean,
    fcntl,
    recover_patch_store,
)
from keras_medseg.data.wsi.sampling import (
    PatchSequence,
    ThreeStepSampler,
    _StoreDataset,
    load_patch_dataset,
)
from keras_medseg.data.wsi.store import (
    _META,
    FORMAT,
    FORMAT_VERSION,
    SLIDE_NAME_BYTES,
    PatchStore,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SLIDE_NAME_BYTES",
    "PatchSequence",
    "PatchSet",
    "PatchStore",
    "ThreeStepSampler",
    "augment_patches",
    "extract_patches",
    "iter_patches",
    "load_patch_dataset",
    "recover_patch_store",
    "tissue_mask",
]
