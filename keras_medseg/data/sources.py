"""What a data argument is: the one place that decides, returning a typed source.

`resolve_source(data)` turns what a user passes as `--data` (or as `data=` in
Python) into one of these frozen dataclasses, and everything below it takes the
typed source instead of re-reading the string:

=========================  ==========================================================================
`SyntheticSource`          a synthetic set by name: `"qtips"` (any case)
`ArraySource`              arrays in memory: `(x, y)` or `((x, y), (x_val, y_val))`
`ImageFolderSource`        `DIR/images/` + `DIR/masks/` (or `DIR/labels/`) of 2D images or arrays
                           (PNG, TIFF, JPEG, `.npy`, `.npz`), files matched by name
`ScanFolderSource`         scans with geometry: `DIR/images/` holding NIfTI, NRRD, MHA or DICOM series
                           folders (+ `masks/` or `labels/`), or a Medical Segmentation Decathlon
                           `dataset.json` (the file, or a folder that holds one)
`PatchStoreSource`         an HDF5 patch store, `*.h5` / `*.hdf5` (`keras-medseg patches extract`)
`CohortFolderSource`       a folder of whole-slide images (`.svs`, `.ndpi`, pyramidal `.tif`, ...)
=========================  ==========================================================================

The decision, in order: arrays; a name of a synthetic set; a path ending in
`.h5`/`.hdf5` (a patch store, which need not exist yet: it is opened later);
a path ending in `.json` (a `dataset.json`); a folder with a `dataset.json`; a
folder with `images/` (scans when `images/` holds a volume format or a DICOM
series folder, images otherwise); a folder of whole-slide files. Anything else
is refused in one line naming the path and the layouts.

The cases inside a folder source (which image goes with which label map) are
listed by `keras_medseg.data.cases.find_cases`; this module only looks at
names and folder entries, never at file contents.

Example:

>>> keras_medseg.data.sources.resolve_source("qtips")
SyntheticSource(name='qtips')
>>> keras_medseg.data.sources.resolve_source("patches.h5")
PatchStoreSource(path='patches.h5')
"""

from __future__ import annotations

import dataclasses
import os
from typing import Union

from keras_medseg.data.scans.io import image_stem
from keras_medseg.data.slides.slide import SLIDE_EXTENSIONS

__all__ = [
    "ANNOTATION_EXTENSIONS",
    "PATCH_STORE_EXTENSIONS",
    "SYNTHETIC_SETS",
    "VOLUME_EXTENSIONS",
    "ArraySource",
    "CohortFolderSource",
    "DataSource",
    "ImageFolderSource",
    "PatchStoreSource",
    "ScanFolderSource",
    "SyntheticSource",
    "find_slides",
    "is_dicom_folder",
    "resolve_source",
]

#: Names of the synthetic sets a data argument may give.
SYNTHETIC_SETS = ("qtips",)
#: File extensions of an HDF5 patch store.
PATCH_STORE_EXTENSIONS = (".h5", ".hdf5")
#: File formats that carry a scan's geometry (a folder whose `images/` holds one is a scan folder).
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """A synthetic data set by name (`"qtips"`), generated when it is loaded."""

    name: str
    kind = "synthetic"


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """Arrays in memory: `(x, y)` (one set) or `((x, y), (x_val, y_val))` (training and validation)."""

    arrays: tuple
    kind = "arrays"

    @property
    def has_validation(self):
        """Whether the arrays come as `((x, y), (x_val, y_val))`."""
        return len(self.arrays) == 2 and all(isinstance(a, (tuple, list)) and len(a) == 2 for a in self.arrays)


@dataclasses.dataclass(frozen=True)
class ImageFolderSource:
    """`DIR/images/` + `DIR/masks/` (or `DIR/labels/`) of images or arrays, matched by file name.

    `spatial_dims` says how an array is read: 2 (a 3-axis array is `(H, W, C)`) or 3 (`(D, H, W)`).
    """

    path: str
    spatial_dims: int = 2
    kind = "image_folder"


@dataclasses.dataclass(frozen=True)
class ScanFolderSource:
    """Scans with geometry: `DIR/images/` (+ `masks/` or `labels/`), or a `dataset.json` (then `dataset_json`).

    `modalities` (names in channel order, e.g. `("t1", "flair")`) says that each case of `images/` is one file
    per modality named by `modality_pattern` (default `"{case}_{modality}"`;
    `keras_medseg.data.scans.modalities`); None: one file per case (nnU-Net's `case_0000`, `case_0001`, ...
    numbering is recognised by the case finder).
    """

    path: str
    dataset_json: Union[str, None] = None
    spatial_dims: int = 3
    modalities: Union[tuple, None] = None
    modality_pattern: Union[str, None] = None
    kind = "scan_folder"


@dataclasses.dataclass(frozen=True)
class PatchStoreSource:
    """An HDF5 patch store (`keras_medseg.data.slides.PatchStore`)."""

    path: str
    kind = "patch_store"


@dataclasses.dataclass(frozen=True)
class CohortFolderSource:
    """A folder of whole-slide images (`slides`: their file names, sorted)."""

    path: str
    slides: tuple = ()
    kind = "cohort_folder"


DataSource = Union[SyntheticSource, ArraySource, ImageFolderSource, ScanFolderSource, PatchStoreSource,
                   CohortFolderSource]
_SOURCES = (SyntheticSource, ArraySource, ImageFolderSource, ScanFolderSource, PatchStoreSource, CohortFolderSource)
_LAYOUTS = ("'qtips', an image folder DIR/images/ + DIR/masks/ (or labels/), a scan folder (NIfTI, NRRD, MHA or "
            "DICOM series in DIR/images/), a dataset.json, an HDF5 patch store FILE.h5 or a folder of whole-slide "
            "images")


def is_dicom_folder(path):
    """Whether folder `path` holds one DICOM series: `.dcm` files, or only files without an image extension."""
    path = os.fspath(path)
    try:
        files = [f for f in os.listdir(path) if not f.startswith(".")]
    except OSError:
        return False
    if not files:
        return False
    if any(f.lower().endswith(".dcm") for f in files):
        return True
    return all(os.path.isfile(os.path.join(path, f)) and image_stem(f)[0] is None for f in files)


def _holds_volumes(images_dir):
    for f in sorted(os.listdir(images_dir)):
        if f.startswith("."):
            continue
        full = os.path.join(images_dir, f)
        _, ext = image_stem(f)
        if ext in VOLUME_EXTENSIONS or (os.path.isdir(full) and is_dicom_folder(full)):
            return True
    return False


def _slide_files(folder):
    names = []
    for f in sorted(os.listdir(folder)):
        if not f.startswith(".") and f.lower().endswith(SLIDE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)):
            names.append(f)
    return tuple(names)


def _check_spatial_dims(spatial_dims):
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"`spatial_dims` must be 2 or 3. Received: spatial_dims={spatial_dims!r}")


def resolve_source(data, spatial_dims: int | None = None, modalities=None, modality_pattern=None) -> DataSource:
    """Decide what a data argument is and return its typed source (the module docstring gives the order).

    Args:
        data: a typed source (returned as it is), arrays `(x, y)` /
            `((x, y), (x_val, y_val))`, a synthetic set name (`"qtips"`), or a
            path (str or path-like): `FILE.h5`, `dataset.json`, or a folder.
        spatial_dims: 2 or 3, or None (default): how the arrays of a folder are
            read; None means 2 for image folders and 3 for scan folders.
        modalities, modality_pattern: per-modality files of a scan folder
            (`ScanFolderSource`); refused for other sources.

    Returns:
        One of `SyntheticSource`, `ArraySource`, `ImageFolderSource`,
        `ScanFolderSource`, `PatchStoreSource`, `CohortFolderSource`.

    Raises:
        FileNotFoundError: a path (other than a patch store) that does not exist.
        ValueError: a bad `spatial_dims`, a file or folder that is none of
            the layouts, or a value of another type (each named).

    Example:

    >>> src = keras_medseg.data.sources.resolve_source("my_data", spatial_dims=2)  # doctest: +SKIP
    >>> src  # doctest: +SKIP
    ImageFolderSource(path='my_data', spatial_dims=2)
    """
    if spatial_dims is not None:
        _check_spatial_dims(spatial_dims)
    if modalities is not None or modality_pattern is not None:
        from keras_medseg.data.scans.modalities import DEFAULT_PATTERN, check_modalities

        src = resolve_source(data, spatial_dims)
        if not isinstance(src, ScanFolderSource) or src.dataset_json:
            raise ValueError("Per-modality files (--modalities) need a scan folder DIR/images/ + DIR/labels/ "
                             f"(a dataset.json lists 4D images instead). Received: data={data!r}")
        if modalities is None:
            raise ValueError(f"`modality_pattern` needs `modalities`. Received: modality_pattern={modality_pattern!r}")
        return dataclasses.replace(src, modalities=check_modalities(modalities),
                                   modality_pattern=modality_pattern or DEFAULT_PATTERN)
    if isinstance(data, _SOURCES):
        return data
    if isinstance(data, (tuple, list)):
        return ArraySource(tuple(data))
    if isinstance(data, str) and data.lower() in SYNTHETIC_SETS:
        return SyntheticSource(data.lower())
    if not isinstance(data, (str, os.PathLike)):
        raise ValueError(f"`data` must be a path, a synthetic set name ({', '.join(SYNTHETIC_SETS)}) or arrays "
                         f"((x, y) or ((x, y), (x_val, y_val))). Received: data={data!r}")
    path = os.fspath(data)
    lower = path.lower()
    if lower.endswith(PATCH_STORE_EXTENSIONS):
        return PatchStoreSource(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Data source not found. Received: data={path!r} (expected {_LAYOUTS})")
    if os.path.isfile(path):
        if lower.endswith(".json"):
            return ScanFolderSource(os.path.dirname(os.path.abspath(path)), path, spatial_dims or 3)
        raise ValueError(f"`data` is a single file, not a data set: expected {_LAYOUTS}. Received: data={path!r}")
    if os.path.isfile(os.path.join(path, "dataset.json")):
        return ScanFolderSource(path, os.path.join(path, "dataset.json"), spatial_dims or 3)
    images = os.path.join(path, "images")
    if os.path.isdir(images):
        if _holds_volumes(images):
            return ScanFolderSource(path, None, spatial_dims or 3)
        return ImageFolderSource(path, spatial_dims or 2)
    slides = _slide_files(path)
    if slides:
        return CohortFolderSource(path, slides)
    raise ValueError(f"`data` folder {path!r} holds no data set: expected {_LAYOUTS} (a data folder needs an "
                     f"images/ subfolder). Received: data={path!r}")


#: Annotation files of a slide `<stem>.<ext>`, in the order `find_slides` looks for them.
ANNOTATION_EXTENSIONS = (".xml", ".geojson", ".json")


def find_slides(source, annotations=None):
    """The `[{"name", "slide", "annotations"}]` slides of a cohort, each with its annotation file or None.

    Args:
        source: a folder of whole-slide files (or its `CohortFolderSource`),
            or a list of slide paths.
        annotations: folder of the annotation files `<slide stem>.xml`,
            `.geojson` or `.json`; default the slides' own folder. A slide
            without one is a normal (tumour-free) slide.

    Returns:
        list of dicts sorted by name (the slide file name without its extension).

    Raises:
        FileNotFoundError: a slide or the `annotations` folder does not exist.
        ValueError: no slides, two slides with one name, or two annotation
            files for one slide (named).

    Example:

    >>> keras_medseg.data.sources.find_slides("cohort/")  # doctest: +SKIP
    [{'name': 'normal_001', 'slide': 'cohort/normal_001.tif', 'annotations': None}, ...]
    """
    if isinstance(source, (list, tuple)):
        slides = [os.fspath(p) for p in source]
        folder = None
    else:
        src = resolve_source(source)
        if not isinstance(src, CohortFolderSource):
            raise ValueError(f"`source` must be a folder of whole-slide images (.tif, .svs, .ndpi, .mrxs, ...). "
                             f"Received: source={source!r} (a {src.kind.replace('_', ' ')})")
        folder = src.path
        slides = [os.path.join(folder, f) for f in src.slides]
    if not slides:
        raise ValueError(f"No slides found. Received: source={source!r}")
    ann_dir = os.fspath(annotations) if annotations is not None else folder
    if ann_dir is not None and not os.path.isdir(ann_dir):
        raise FileNotFoundError(f"Annotation folder not found. Received: annotations={ann_dir!r}")
    out = {}
    for path in slides:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Slide file not found: {path!r}")
        name = os.path.splitext(os.path.basename(path))[0]
        if name in out:
            raise ValueError(f"Two slides are named {name!r}: {out[name]['slide']!r} and {path!r}; rename one.")
        where = ann_dir if ann_dir is not None else os.path.dirname(os.path.abspath(path))
        found = [os.path.join(where, name + ext) for ext in ANNOTATION_EXTENSIONS
                 if os.path.isfile(os.path.join(where, name + ext))]
        if len(found) > 1:
            raise ValueError(f"Slide {path!r} has {len(found)} annotation files {found}; keep one.")
        out[name] = {"name": name, "slide": path, "annotations": found[0] if found else None}
    return [out[k] for k in sorted(out)]
