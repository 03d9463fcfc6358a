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
from typing import Optional

import numpy as np

from keras_medseg.data.cases import find_cases, mask_ids, standardize_labels, warn_compacted
from keras_medseg.data.scans import io
from keras_medseg.data.scans.geometry import check_same_grid
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


_GEOMETRY_FORMATS = ("nifti", "dicom", "itk")


def _read(path, resample_irregular=False):
    """One case file as an `ImageRecord` (`read_image`; NaN/Inf refused, naming the file)."""
    from keras_medseg.utils.finite import check_finite

    record = io.read_image(path, resample_irregular=resample_irregular)
    check_finite(record.array, f"File {os.fspath(path)!r}")
    return record


def load_folder(directory: str | os.PathLike | ImageFolderSource | ScanFolderSource, spatial_dims: int = 2,
                normalize: bool = True, ignore_value: int | None = None, label_values: list | None = None,
                resample_irregular: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
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
        label_values: list of int or None (default): the mask value of each
            class (e.g. the values a model was trained with,
            `load_preprocessing(model)["label_values"]`); None decides them
            from the masks of the folder.
        resample_irregular: bool (default False): resample irregular DICOM
            series from their true slice positions instead of refusing them.

    Returns:
        `(images, masks, names)`: float32 `(N, *spatial, C)`, int32
        `(N, *spatial)` and the list of name stems, sorted.

    Raises:
        FileNotFoundError: missing folder or an image without its mask (named).
        ValueError: a mask without an image, a corrupt file, an image whose
            shape differs from the others or from its mask, a mask of a volume
            off its image's grid (`check_same_grid`), a mask the mask rule
            refuses (named, with the values found).

    Example:

    >>> x, y, names = keras_medseg.data.load_folder("my_data")  # doctest: +SKIP
    """
    return _load_folder(directory, spatial_dims, normalize, ignore_value, label_values, resample_irregular)[:3]


def _load_folder(directory, spatial_dims=2, normalize=True, ignore_value=None, label_values=None,
                 resample_irregular=False):
    """`load_folder`, also returning the mask value of each class."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3. Received: spatial_dims={spatial_dims!r}")
    source = resolve_source(directory, spatial_dims)  # a typed source is used as it is
    cases = find_cases(source)
    directory = source.path
    xs, ys, names, ref_shape = [], [], [], None
    for case in cases:
        image, mask = case["image"], case["label"]
        x_rec, y_rec = _read(image, resample_irregular), _read(mask, resample_irregular)
        if x_rec.format in _GEOMETRY_FORMATS and y_rec.format in _GEOMETRY_FORMATS:
            check_same_grid(x_rec, y_rec)  # volumes: the label map lies on its image's grid
        x = np.asarray(x_rec.array).astype(np.float32)
        if x.ndim == spatial_dims:
            x = x[..., None]
        if x.ndim != spatial_dims + 1:
            raise ValueError(
                f"Image {image!r} has shape {x.shape}; expected {spatial_dims} spatial axes "
                "plus an optional channel axis."
            )
        y = mask_ids(y_rec.array, spatial_dims, name=repr(mask))
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
    ys, values = standardize_labels(ys, ignore_value=ignore_value, label_values=label_values,
                                    names=[repr(c["label"]) for c in cases])
    if label_values is None:
        warn_compacted(values, repr(directory))
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int32), names, values


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
    label_values: Optional[list] = None  # the mask value of each class (the one mask rule)

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
              spatial_dims: int = 2, val_fraction: float = 0.2, ignore_value: int | None = None,
              resample_irregular: bool = False) -> SegmentationData:
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
        ignore_value: mask value that becomes -1 (ignored by the losses and
            the scores) in folders and arrays (default None).
        resample_irregular: see `load_folder` (default False).

    Masks of folders and arrays follow the one mask rule
    (`keras_medseg.data.cases.standardize_labels`); `label_values` of the
    result says which mask value each class is.

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
        (y, yv), values = standardize_labels([np.asarray(y), np.asarray(yv)], ignore_value=ignore_value,
                                             names=["y_train", "y_val"])
        warn_compacted(values, "the arrays")
        out = SegmentationData(x.astype("float32"), y, xv.astype("float32"), yv, max(len(values), 2),
                               label_values=values)
        return _check_finite(out, "arrays")
    if isinstance(source, SyntheticSource):
        x, y = qtips(n_train, size=size, seed=seed, normalize=True)
        xv, yv = qtips(n_val, size=size, seed=seed + 1, normalize=True)
        return _check_finite(SegmentationData(x, y, xv, yv, QTIPS_CLASSES, QTIPS_CLASS_NAMES, "qtips"), "qtips")
    if not isinstance(source, (ImageFolderSource, ScanFolderSource)) or getattr(source, "dataset_json", None):
        raise _refuse(source, "training") if not isinstance(source, ScanFolderSource) else ValueError(
            f"A dataset.json trains on patches: give a patch size (`--patch-size`, "
            f"`keras_medseg.training.train_volumes`). Received: data={source.dataset_json!r}")
    x, y, _, values = _load_folder(source, spatial_dims=source.spatial_dims, ignore_value=ignore_value,
                                   resample_irregular=resample_irregular)
    if len(x) < 2:
        raise ValueError(f"Data folder {source.path!r} needs at least 2 cases (train + validation); found {len(x)}.")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val_cases = max(1, int(round(val_fraction * len(x))))
    val, train = order[:n_val_cases], order[n_val_cases:]
    k = max(len(values), 2)
    return _check_finite(SegmentationData(x[train], y[train], x[val], y[val], k, None, source.path,
                                          label_values=values), source.path)


def load_evaluation_data(data="qtips", n: int = 64, size: int = 64, seed: int = 1, spatial_dims: int = 2,
                         ignore_value: int | None = None, label_values: list | None = None,
                         resample_irregular: bool = False) -> EvaluationData:
    """One set of evaluation arrays of a data source (`EvaluationData`).

    Args:
        data: a data argument or typed source: `"qtips"` (a fresh set of `n`
            images drawn with `seed`), an image or scan folder (every case),
            or arrays `(x, y)`. Default "qtips".
        n, size, seed: the Q-tips set (default 64 images of 64 px, seed 1).
        spatial_dims: 2 or 3, how the arrays of a folder given as a path are
            read (default 2); a typed source carries its own.
        ignore_value: mask value that becomes -1 (left out of the scores; default None).
        label_values: the mask value of each class, e.g. the ones a model was
            trained with (its spec's `label_values`); None (default) decides
            them from the masks by the one mask rule.
        resample_irregular: see `load_folder` (default False).

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
        y, values = standardize_labels(y, ignore_value=ignore_value, label_values=label_values, names="y")
        if label_values is None:
            warn_compacted(values, "the arrays")
        return _check_finite(EvaluationData(x, y, None if label_values is None else max(len(label_values), 2)),
                             "arrays")
    if not isinstance(source, (ImageFolderSource, ScanFolderSource)) or getattr(source, "dataset_json", None):
        raise _refuse(source, "evaluation") if not isinstance(source, ScanFolderSource) else ValueError(
            f"A dataset.json is scored scan by scan (`keras-medseg evaluate`, "
            f"`keras_medseg.predict.evaluate_scans`). Received: data={source.dataset_json!r}")
    x, y, _, values = _load_folder(source, spatial_dims=source.spatial_dims, ignore_value=ignore_value,
                                   label_values=label_values, resample_irregular=resample_irregular)
    return _check_finite(EvaluationData(x, y, max(len(values), 2), None, source.path), source.path)
