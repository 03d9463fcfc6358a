"""In-memory arrays of a data source: what `keras-medseg train/evaluate` fit and score without patch sampling.

* `load_folder(DIR)`: every case of an image folder (or a scan folder) stacked
  into `(images, masks)` arrays.
* `load_data(source)`: training and validation arrays (`SegmentationData`) of
  Q-tips, a folder (split by a seeded permutation) or given arrays.
* `load_evaluation_data(source)`: one set of arrays (`EvaluationData`): a
  fresh Q-tips set, every case of a folder, or given arrays.

The source is decided once by `keras_medseg.data.sources.resolve_source`; the
cases of a folder are listed by `keras_medseg.data.cases.find_cases` and their
masks read by the one mask rule (`keras_medseg.data.cases.mask_ids`, then
`standardize_labels` over all the masks of the folder: 0/255 and 0/65535
binary masks become 0/1, an `ignore_value` becomes -1, non-contiguous ids
become `0..K-1` with a warning giving the mapping; 255 next to other ids,
fractional or negative values are refused with the file and values named).

Folder layout (file names are matched by their stem, the name without extension)::

    DIR/
      images/  case001.png  case002.png ...   (or .tif/.tiff, .npy, .nii/.nii.gz, ...)
      masks/   case001.png  case002.png ...   (same stems; integer class ids, 0 = background)

2D images are PNG/TIFF/NumPy arrays `(H, W)` or `(H, W, C)`; 3D volumes NumPy
`(D, H, W)` / `(D, H, W, C)` or NIfTI (needs `nibabel`, extra `medical`).
Give `spatial_dims=3` for volumes (a 3-axis array is then read as `(D, H, W)`
instead of `(H, W, C)`). All images of a folder share one shape (they are
stacked into one batch).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Optional

import numpy as np

from keras_medseg.data.cases import find_cases, mask_ids, standardize_labels
from keras_medseg.data.scans import io
from keras_medseg.data.sources import (
    ArraySource,
    ImageFolderSource,
    ScanFolderSource,
    SyntheticSource,
    resolve_source,
)
from keras_medseg.data.synthetic.qtips import CLASS_NAMES as QTIPS_CLASS_NAME_TUPLE
from keras_medseg.data.synthetic.qtips import NUM_CLASSES as QTIPS_CLASSES
from keras_medseg.data.synthetic.qtips import qtips

__all__ = ["QTIPS_CLASS_NAMES", "EvaluationData", "SegmentationData", "load_data", "load_evaluation_data",
           "load_folder"]

QTIPS_CLASS_NAMES = list(QTIPS_CLASS_NAME_TUPLE)  # named by the rod's end markers


def _read(path):
    """One case file as an array: a DICOM series folder through `read_image`, a file through `read_array`."""
    if os.path.isdir(path):
        return np.asarray(io.read_image(path).array)
    return io.read_array(path)


def load_folder(directory: str | os.PathLike | ImageFolderSource | ScanFolderSource, spatial_dims: int = 2,
                normalize: bool = True, ignore_value: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load the cases of `DIR/images` + `DIR/masks` (or `DIR/labels`) into `(images, masks)` arrays.

    Args:
        directory: the data folder (see the module docstring for the layout),
            or its typed source (`ImageFolderSource` / `ScanFolderSource`).
        spatial_dims: 2 for images, 3 for volumes (default 2).
        normalize: scale each image to zero mean and unit standard deviation
            (default True).
        ignore_value: int or None (default); mask voxels with this value
            become -1 (`keras_medseg.data.IGNORE_INDEX`, left out of training
            losses and of the scores).

    Returns:
        `(images, masks, names)`: float32 `(N, *spatial, C)`, int32
        `(N, *spatial)` and the list of name stems, sorted.

    Raises:
        FileNotFoundError: missing folder or an image without its mask (named).
        ValueError: a mask without an image, a corrupt file, an image whose
            shape differs from the others or from its mask, a mask the mask
            rule refuses (named, with the values found).

    Example:

    >>> x, y, names = keras_medseg.data.load_folder("my_data")  # doctest: +SKIP
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3. Received: spatial_dims={spatial_dims!r}")
    source = resolve_source(directory, spatial_dims)  # a typed source is used as it is
    cases = find_cases(source)
    directory = source.path
    xs, ys, names, ref_shape = [], [], [], None
    for case in cases:
        image, mask = case["image"], case["label"]
        x = _read(image).astype(np.float32)
        if x.ndim == spatial_dims:
            x = x[..., None]
        if x.ndim != spatial_dims + 1:
            raise ValueError(
                f"Image {image!r} has shape {x.shape}; expected {spatial_dims} spatial axes "
                "plus an optional channel axis."
            )
        y = mask_ids(_read(mask), spatial_dims, name=repr(mask))
        if y.shape != x.shape[:-1]:
            raise ValueError(
                f"Mask {mask!r} has shape {y.shape} but its image {image!r} has spatial shape {x.shape[:-1]}."
            )
        if ref_shape is None:
            ref_shape = x.shape
        elif x.shape != ref_shape:
            raise ValueError(
                f"Image {image!r} has shape {x.shape}, different from the first image's {ref_shape}; "
                "all images in a folder must have one shape."
            )
        if normalize:
            x = (x - x.mean()) / (x.std() + 1e-6)
        xs.append(x)
        ys.append(y)
        names.append(case["name"])
    ys, values = standardize_labels(ys, ignore_value=ignore_value, names=[repr(c["label"]) for c in cases])
    if values != list(range(len(values))):
        warnings.warn(f"Masks in {directory!r} hold the ids {values}; they are used as classes "
                      f"{list(range(len(values)))} in that order.", stacklevel=2)
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int32), names


@dataclasses.dataclass
class SegmentationData:
    """Train/validation arrays plus what a model builder needs to know."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    class_names: Optional[list] = None
    source: str = "arrays"

    @property
    def spatial_dims(self):
        return self.x_train.ndim - 2

    @property
    def in_channels(self):
        return self.x_train.shape[-1]


@dataclasses.dataclass
class EvaluationData:
    """Evaluation arrays: every case of a folder, a fresh Q-tips set or given `(x, y)`."""

    x: np.ndarray
    y: np.ndarray
    num_classes: Optional[int] = None
    class_names: Optional[list] = None
    source: str = "arrays"


def _check_finite(d, source):
    """NaN/Inf in training, validation or evaluation arrays -> one ValueError naming them (once, at entry)."""
    from keras_medseg.utils.finite import check_finite

    for attr in ("x_train", "x_val", "x", "y_train", "y_val", "y"):
        if getattr(d, attr, None) is not None:
            check_finite(getattr(d, attr), f"`{attr}` of data {source!r}")
    return d


def _refuse(source, purpose):
    what = {"patch_store": ("an HDF5 patch store", "train patch classifiers with "
                            "`keras_medseg.training.train_patch_classifier`, score them with "
                            "`keras_medseg.evaluation.evaluate_patch_store`"),
            "cohort_folder": ("a folder of whole-slide images", "cut them into a patch store first "
                              "(`keras-medseg patches extract`)")}.get(source.kind, (source.kind, ""))
    return ValueError(f"`data` is {what[0]}, not {purpose} arrays; {what[1]}. Received: data={source!r}")


def load_data(data="qtips", n_train: int = 1024, n_val: int = 64, size: int = 64, seed: int = 0,
              spatial_dims: int = 2, val_fraction: float = 0.2) -> SegmentationData:
    """Training and validation arrays of a data source (`SegmentationData`).

    Args:
        data: a data argument or typed source (`keras_medseg.data.sources.resolve_source`):
            `"qtips"` (synthetic Q-tips), an image or scan folder, arrays
            `((x, y), (x_val, y_val))`, or a `SegmentationData` (returned as
            it is). Default "qtips".
        n_train, n_val: Q-tips training/validation sizes (default 1024 and
            64, as in the IMEXnet paper); the validation set uses seed `seed + 1`.
        size: Q-tips canvas size in pixels (default 64).
        seed: Q-tips seed / folder split seed (default 0).
        spatial_dims: 2 or 3, how the arrays of a folder given as a path are
            read (default 2); a typed source carries its own.
        val_fraction: share of a folder kept for validation (default 0.2, at
            least one case).

    Returns:
        `SegmentationData`.

    Raises:
        FileNotFoundError: a missing data folder (named).
        ValueError: a bad folder/file (named), NaN/Inf values, or a source
            without arrays (a patch store, a folder of slides).

    Example:

    >>> d = keras_medseg.data.load_data("qtips", n_train=8, n_val=4, size=16)
    >>> d.x_train.shape
    (8, 16, 16, 1)
    """
    if isinstance(data, SegmentationData):
        return data
    source = resolve_source(data, spatial_dims)
    if isinstance(source, ArraySource):
        if not source.has_validation:
            raise ValueError("`data` must be 'qtips', a folder path or ((x, y), (x_val, y_val)) for training. "
                             f"Received: arrays of {len(source.arrays)} items")
        (x, y), (xv, yv) = source.arrays
        x, xv = np.asarray(x), np.asarray(xv)
        # The one mask rule (0/255 -> 0/1, non-contiguous ids compacted, 255 next to other ids refused).
        (y, yv), values = standardize_labels([np.asarray(y), np.asarray(yv)], names=["y_train", "y_val"])
        out = SegmentationData(x.astype("float32"), y, xv.astype("float32"), yv, max(len(values), 2))
        return _check_finite(out, "arrays")
    if isinstance(source, SyntheticSource):
        x, y = qtips(n_train, size=size, seed=seed, normalize=True)
        xv, yv = qtips(n_val, size=size, seed=seed + 1, normalize=True)
        return _check_finite(SegmentationData(x, y, xv, yv, QTIPS_CLASSES, QTIPS_CLASS_NAMES, "qtips"), "qtips")
    if not isinstance(source, (ImageFolderSource, ScanFolderSource)) or getattr(source, "dataset_json", None):
        raise _refuse(source, "training") if not isinstance(source, ScanFolderSource) else ValueError(
            f"A dataset.json trains on patches: give a patch size (`--patch-size`, "
            f"`keras_medseg.training.train_volumes`). Received: data={source.dataset_json!r}")
    x, y, _ = load_folder(source, spatial_dims=source.spatial_dims)
    if len(x) < 2:
        raise ValueError(f"Data folder {source.path!r} needs at least 2 cases (train + validation); found {len(x)}.")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val_cases = max(1, int(round(val_fraction * len(x))))
    val, train = order[:n_val_cases], order[n_val_cases:]
    k = max(int(y.max()) + 1, 2)
    return _check_finite(SegmentationData(x[train], y[train], x[val], y[val], k, None, source.path), source.path)


def load_evaluation_data(data="qtips", n: int = 64, size: int = 64, seed: int = 1,
                         spatial_dims: int = 2) -> EvaluationData:
    """One set of evaluation arrays of a data source (`EvaluationData`).

    Args:
        data: a data argument or typed source: `"qtips"` (a fresh set of `n`
            images drawn with `seed`), an image or scan folder (every case),
            or arrays `(x, y)`. Default "qtips".
        n, size, seed: the Q-tips set (default 64 images of 64 px, seed 1).
        spatial_dims: 2 or 3, how the arrays of a folder given as a path are
            read (default 2); a typed source carries its own.

    Returns:
        `EvaluationData` (`num_classes` None for arrays: the caller decides).

    Raises:
        FileNotFoundError / ValueError: as `load_data`.

    Example:

    >>> e = keras_medseg.data.load_evaluation_data("qtips", n=3, size=16)
    >>> e.x.shape, e.num_classes
    ((3, 16, 16, 1), 4)
    """
    if isinstance(data, EvaluationData):
        return data
    source = resolve_source(data, spatial_dims)
    if isinstance(source, SyntheticSource):
        x, y = qtips(n, size=size, seed=seed, normalize=True)
        return _check_finite(EvaluationData(x, y, QTIPS_CLASSES, QTIPS_CLASS_NAMES, "qtips"), "qtips")
    if isinstance(source, ArraySource):
        if len(source.arrays) != 2:
            raise ValueError(f"`data` arrays must be (x, y) for evaluation. Received: {len(source.arrays)} items")
        x, y = (np.asarray(a) for a in source.arrays)
        y, _ = standardize_labels(y, names="y")
        return _check_finite(EvaluationData(x, y), "arrays")
    if not isinstance(source, (ImageFolderSource, ScanFolderSource)) or getattr(source, "dataset_json", None):
        raise _refuse(source, "evaluation") if not isinstance(source, ScanFolderSource) else ValueError(
            f"A dataset.json is scored scan by scan (`keras-medseg evaluate`, "
            f"`keras_medseg.predict.evaluate_scans`). Received: data={source.dataset_json!r}")
    x, y, _ = load_folder(source, spatial_dims=source.spatial_dims)
    return _check_finite(EvaluationData(x, y, max(int(y.max()) + 1, 2), None, source.path), source.path)
