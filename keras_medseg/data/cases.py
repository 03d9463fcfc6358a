"""Cases: the one case finder of a data folder and the one rule for the values in a mask.

**Case finder.** `find_cases(source)` lists the `{"name", "image", "label"}`
cases of a data source (see `keras_medseg.data.sources`):

* a folder `DIR/images/` + `DIR/masks/` (or `DIR/labels/`; both at once is
  refused as ambiguous). An entry of `images/` is an image file of a type
  `keras_medseg.data.read_image` reads (PNG, TIFF, JPEG, `.npy`, `.npz`,
  NIfTI, NRRD, MHA) or a DICOM series folder; its label map is the entry of
  `masks/` with the same name stem. An image without a label map raises
  `FileNotFoundError`, a label map without an image or two files with one stem
  raise `ValueError`, each naming the file. Cases are sorted by name. Multi-modal cases (one file per modality,
  nnU-Net's `case_0000`, `case_0001`, ... or the source's `modalities`) are grouped by
  `keras_medseg.data.scans.modalities.images_by_case`: `image` is then a tuple of files in channel order.
* a Medical Segmentation Decathlon `dataset.json` (or a folder holding one):
  its `training` list of `{"image", "label"}` pairs, in file order; or an
  nnU-Net v2 raw data set's (`file_ending`, `channel_names`, no `training`
  list): `imagesTr/<case>_0000<file_ending>`, ... and
  `labelsTr/<case><file_ending>` beside it, grouped as a data folder's, or its
  `dataset` table of `{"images": [...], "label": ...}` when it has one.
* a list of `(image_path, label_path)` pairs.

The slides of a whole-slide cohort folder are listed by
`keras_medseg.data.sources.find_slides`, beside the cohort source.

`find_scans(path)` lists unlabelled scans (a file, a DICOM series folder, or a
folder of them) for prediction, with the same entry rule.

**Mask rule.** A mask's voxel values become class ids in two steps:

* `mask_ids(mask, spatial_dims)`, per mask: an array with `spatial_dims` axes
  is used as it is. One with an extra last axis of 3 or 4 channels is an RGB(A)
  drawing from an image editor: when its alpha channel varies, transparent
  pixels (alpha 0) are background and every distinct colour of the drawn
  pixels is one id, 1, 2, ... in sorted (R, G, B) order; otherwise (RGB, or a
  constant alpha) a grey drawing (R = G = B everywhere) holds its grey value,
  and a coloured one has black as 0 and every other colour as one id, 1, 2,
  ... in sorted (R, G, B) order. So a white, red or green stroke on black is
  foreground alike, and a grey 0/255 mask saved as RGB reads as 0/255.
* `standardize_labels(masks)`, over the masks of a whole data set, by this rule:

  1. Values must be finite integers (a float mask with fractions, e.g. a soft
     or resampled-with-interpolation mask, is refused).
  2. Voxels equal to `ignore_value` (when given) become `IGNORE_INDEX` (-1);
     -1 itself always means "ignore", so standardising twice changes nothing.
  3. Binary masks saved by image editors, decided per mask: a mask whose
     values are only `{0, 255}` or only `{0, 65535}` has 255/65535 as its
     foreground, value 1 (unless that value is the `ignore_value` or is listed
     in `label_values`), so 0/1 and 0/255 masks can be mixed in one folder.
  4. 255 or 65535 found *together with* other non-zero ids, and no
     `ignore_value`, is ambiguous (often an ignore border around a 0/1 mask):
     refused, asking for `ignore_value=255` or an explicit `label_values`.
  5. The class ids are the sorted distinct values found in all the masks given
     (0, the background, always included), or `label_values` when given:
     class `i` is the voxel value `label_values[i]`. Contiguous ids
     `0..K-1` are therefore kept as they are; non-contiguous ids such as
     `{0, 1, 2, 4}` become `0, 1, 2, 3` (and `label_values` says which was which).
  6. More than `max_classes` (default 64) distinct values, negative values other
     than the ignore value, or a value not in the given `label_values` is
     refused.

  Every error names the mask (file name or `names[i]`) and the values found, so
  no mask can silently become a 256-class (or 65536-class) model.
"""

import os
import warnings

import numpy as np

from keras_medseg.data import dataset_json
from keras_medseg.data.scans.io import SCAN_EXTENSIONS, image_stem, read_image
from keras_medseg.data.scans.modalities import images_by_case
from keras_medseg.data.sources import (
    ImageFolderSource,
    ScanFolderSource,
    is_dicom_folder,
    resolve_source,
)

__all__ = ["IGNORE_INDEX", "dataset_label_values", "find_cases", "find_scans", "mask_ids", "standardize_labels",
           "warn_compacted"]

IGNORE_INDEX = -1
_EDITOR_MAX = (255, 65535)


def _values_str(values, limit=12):
    values = [int(v) if float(v).is_integer() else float(v) for v in values]
    head = ", ".join(str(v) for v in values[:limit])
    return f"[{head}{', ...' if len(values) > limit else ''}] ({len(values)} distinct)"


def _distinct(mask):
    """`np.unique(mask)`; a histogram instead of a sort for integer masks of a small range (whole volumes)."""
    if np.issubdtype(mask.dtype, np.integer) and mask.size:
        lo, hi = int(mask.min()), int(mask.max())
        if 0 <= lo and hi < 1 << 16:
            return np.flatnonzero(np.bincount(mask.ravel())).astype(mask.dtype)
        if hi - lo < 1 << 16:
            return (np.flatnonzero(np.bincount(mask.ravel().astype(np.int64) - lo)) + lo).astype(mask.dtype)
    return np.unique(mask)


def _unique(mask, name):
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise ValueError(f"Mask {name} must hold numeric class ids. Received dtype {mask.dtype}.")
    values = _distinct(mask)
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"Mask {name} holds NaN/inf values; found values {_values_str(values)}.")
        if not np.all(np.equal(np.mod(values, 1), 0)):
            frac = values[np.mod(values, 1) != 0]
            raise ValueError(
                f"Mask {name} must hold integer class ids; found fractional values {_values_str(frac)} "
                "(a soft mask, or one resampled with interpolation instead of nearest neighbour?)."
            )
    return mask, values.astype(np.int64)


def standardize_labels(masks, ignore_value=None, label_values=None, names=None, max_classes=64):
    """Map masks to class ids `0..K-1` (ignore voxels to -1) by the module's one rule.

    Args:
        masks: one array (a single mask, or a stacked `(N, *S)` batch that is
            the whole dataset) or a list of arrays (one per case, any shapes).
        ignore_value: int or None (default); voxels with this value become
            `IGNORE_INDEX` (-1), left out of losses and metrics.
        label_values: list of int or None (default). The voxel value of each
            class, class `i` = `label_values[i]`; give it when masks are
            standardised one case at a time so every case maps alike (the
            value returned for the whole dataset, or saved with the model).
        names: str or list of str naming the masks in errors (file names).
            Default "mask" / "mask[i]".
        max_classes: int, most distinct ids accepted (default 64), or None for no limit.

    Returns:
        `(labels, label_values)`: int32 array(s) of the input's structure
        (array in, array out; list in, list out) with ids in `0..K-1` or -1,
        and the list of the K original voxel values.

    Raises:
        ValueError: fractional/NaN values, negative ids, too many distinct
            values, 255/65535 next to other ids without `ignore_value`, a
            value outside `label_values` (each names the mask and the values
            found).

    Example:
    >>> import numpy as np
    >>> from keras_medseg.data import standardize_labels
    >>> y, values = standardize_labels(np.array([[0, 255], [255, 0]]))
    >>> values
    [0, 1]
    >>> y.tolist()
    [[0, 1], [1, 0]]
    """
    if label_values is not None:
        label_values = [int(v) for v in label_values]
    single = not isinstance(masks, (list, tuple))
    mask_list = [masks] if single else list(masks)
    if names is None:
        names = ["mask"] if single else [f"mask[{i}]" for i in range(len(mask_list))]
    elif isinstance(names, str):
        names = [names] * len(mask_list)
    if len(names) != len(mask_list):
        raise ValueError(f"`names` must name every mask. Received: {len(names)} names for {len(mask_list)} masks")
    if not mask_list:
        raise ValueError("`masks` is empty.")
    arrays, found = [], {}
    for mask, name in zip(mask_list, names):
        mask, values = _unique(mask, name)
        values = values[values != IGNORE_INDEX]
        if ignore_value is not None:
            values = values[values != ignore_value]
        neg = values[values < 0]
        if neg.size:
            raise ValueError(
                f"Mask {name} has negative class ids {_values_str(neg)}; found values {_values_str(values)}. "
                "Pass ignore_value=<v> (--ignore-value <v>) if one of them marks voxels to ignore."
            )
        for big in _EDITOR_MAX:
            if (big in values and set(values.tolist()) <= {0, big} and ignore_value != big
                    and (label_values is None or big not in label_values)):
                mask = np.where(mask == big, 1, mask)
                values = np.unique(np.where(values == big, 1, values))
        for v in values.tolist():
            found.setdefault(v, name)
        arrays.append(mask)
    values = sorted(found)
    if label_values is not None:
        if len(set(label_values)) != len(label_values):
            raise ValueError(f"`label_values` must be distinct. Received: label_values={label_values}")
        extra = [v for v in values if v not in label_values]
        if extra:
            raise ValueError(
                f"Mask {found[extra[0]]} holds ids {_values_str(extra)} that are not in "
                f"label_values={label_values}; found values {_values_str(values)}."
            )
    else:
        for big in _EDITOR_MAX:
            others = [v for v in values if v not in (0, big)]
            if big in values and others:
                raise ValueError(
                    f"Mask {found[big]} holds {big} next to other class ids: found values {_values_str(values)}. "
                    f"{big} is often an 'ignore' border; pass ignore_value={big} (--ignore-value {big}), or "
                    f"label_values={sorted(set([0] + values))} to make it a class."
                )
        if max_classes is not None and len(values) > max_classes:
            raise ValueError(
                f"Masks hold {len(values)} distinct values, more than max_classes={max_classes} (e.g. mask "
                f"{found[values[-1]]}): found values {_values_str(values)}. Is this an image or a soft mask "
                "instead of a label map?"
            )
        label_values = sorted(set([0] + values))
    lut_index = {v: i for i, v in enumerate(label_values)}
    out = []
    for mask in arrays:
        y = np.full(mask.shape, IGNORE_INDEX, dtype=np.int32)
        m = mask.astype(np.int64, copy=False)
        keep = m != IGNORE_INDEX
        if ignore_value is not None:
            keep &= m != ignore_value
        if label_values == list(range(len(label_values))):
            y[keep] = m[keep]
        else:
            ids = np.asarray(label_values)
            order = np.argsort(ids)
            pos = np.searchsorted(ids[order], m[keep])
            y[keep] = np.asarray([lut_index[int(v)] for v in ids[order]], dtype=np.int32)[pos]
        out.append(y)
    return (out[0] if single else out), label_values


def warn_compacted(label_values, where):
    """Warn, in one line, when non-contiguous mask values (`{0, 1, 4}`) are used as classes `0..K-1`."""
    if list(label_values) != list(range(len(label_values))):
        warnings.warn(f"Masks in {where} hold the ids {list(label_values)}; they are used as classes "
                      f"{list(range(len(label_values)))} in that order (label maps written by predict use the "
                      "original values).", stacklevel=3)


def dataset_label_values(label_paths, ignore_value=None, label_values=None, spatial_dims=None, max_classes=64):
    """The class values of a whole data set's label maps by the one mask rule, reading each file once.

    Volume training cannot hold every label map in memory, so the rule is applied to the distinct values of
    each map (the rule depends on nothing else): the result is what `standardize_labels` over all the maps
    at once would return, and every case is then standardised with it, so all cases map alike.

    Args:
        label_paths: list of label-map files or DICOM folders.
        ignore_value, label_values, max_classes: as for `standardize_labels`.
        spatial_dims: 2, 3 or None: how the files are read (`read_image`); an RGB(A) drawing is collapsed by
            `mask_ids` when 2.

    Returns:
        list of int, the voxel value of each class.

    Raises:
        ValueError: a label map the rule refuses (fractional, negative, 255 next to other ids without
            `ignore_value`, too many values, a value outside `label_values`), naming the file.

    Example:

    >>> keras_medseg.data.cases.dataset_label_values(["labels/p1.nii.gz", "labels/p2.nii.gz"])  # doctest: +SKIP
    [0, 1, 2]
    """
    uniques = []
    for path in label_paths:
        array = read_image(path, spatial_dims=spatial_dims).array
        if spatial_dims == 2:
            array = mask_ids(array, 2, name=repr(path))
        uniques.append(np.unique(array))
    _, values = standardize_labels(uniques, ignore_value=ignore_value, label_values=label_values,
                                   names=[repr(os.fspath(p)) for p in label_paths], max_classes=max_classes)
    return values


# -- the mask rule, step 1: one mask array -> ids per voxel ------------------------------------------------------


def _colour_ids(colours, background_black):
    """Ids of `(P, 3)` colours: 0 for black when `background_black`, else 1, 2, ... in sorted (R, G, B) order."""
    table, inverse = np.unique(colours, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if background_black and not table[0].any():  # np.unique sorts, so black comes first
        return inverse.astype(np.int64)
    return inverse.astype(np.int64) + 1


def mask_ids(mask, spatial_dims=2, name="mask"):
    """The ids a mask holds per voxel, with RGB(A) drawings collapsed by the mask rule (module docstring).

    Args:
        mask: array `(*S)` of ids, or an RGB(A) drawing `(*S, 3)` / `(*S, 4)`
            (`S` has `spatial_dims` axes).
        spatial_dims: 2 (default) or 3: the number of spatial axes of `S`.
        name: how errors name the mask (e.g. its file name).

    Returns:
        The array `(*S)`: `mask` itself when it has no channel axis (any
        numeric dtype, for `standardize_labels` to check), else int64 ids.

    Raises:
        ValueError: an array with neither `spatial_dims` axes nor one more
            axis of 3 or 4 channels (named).

    Example:

    >>> drawing = np.zeros((4, 4, 3), np.uint8); drawing[1:3, 1:3] = (0, 200, 0)  # a green square on black
    >>> keras_medseg.data.cases.mask_ids(drawing).sum()
    4
    """
    mask = np.asarray(mask)
    if mask.ndim == spatial_dims:
        return mask
    if mask.ndim != spatial_dims + 1 or mask.shape[-1] not in (3, 4):
        raise ValueError(f"Mask {name} must have {spatial_dims} spatial axes, or one more axis of 3 (RGB) or 4 "
                         f"(RGBA) channels for an editor's drawing. Received: shape {mask.shape}")
    rgb = mask[..., :3].reshape(-1, 3)
    ids = np.zeros(rgb.shape[0], np.int64)
    alpha = mask[..., 3].reshape(-1) if mask.shape[-1] == 4 else None
    if alpha is not None and alpha.min() != alpha.max():  # transparency marks what was drawn
        drawn = alpha > 0
        if drawn.any():
            ids[drawn] = _colour_ids(rgb[drawn], background_black=False)
    elif (rgb == rgb[:, :1]).all():  # grey drawing: the grey value is the id
        return mask[..., 0]
    else:
        ids = _colour_ids(rgb, background_black=True)
    return ids.reshape(mask.shape[:-1])


# -- the case finder -------------------------------------------------------------------------------------------


def _entries(folder, role):
    """`{stem: path}` of the image files and DICOM series folders in `folder` (two entries with one stem refused)."""
    found = {}
    for f in sorted(os.listdir(folder)):
        if f.startswith("."):
            continue
        full = os.path.join(folder, f)
        stem, _ = image_stem(f)
        if stem is None:
            if not (os.path.isdir(full) and is_dicom_folder(full)):
                continue
            stem = f
        if stem in found:
            raise ValueError(f"Two {role} files with the same name stem {stem!r} in {folder!r}: "
                             f"{os.path.basename(found[stem])!r} and {f!r}")
        found[stem] = full
    return found


def find_scans(path, modalities=None, modality_pattern=None):
    """The unlabelled scans under `path`: `[(name, path)]`, sorted by name.

    A file with a known image extension is one scan; a folder is one DICOM
    series when it holds `.dcm` files (or only files without an image
    extension); otherwise every image file and every DICOM series sub-folder
    in it is a scan, or, with `modalities` (names in channel order), the
    files of a folder are grouped into cases by `modality_pattern`
    (`keras_medseg.data.scans.modalities.group_modalities`; `path` a tuple of
    files, one per modality).

    Raises:
        FileNotFoundError: `path` does not exist or holds no scans (named).

    Example:

    >>> keras_medseg.data.cases.find_scans("scans/")  # doctest: +SKIP
    [('case01', 'scans/case01.nii.gz'), ('series7', 'scans/series7')]
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        stem, _ = image_stem(os.path.basename(path))
        return [(stem or os.path.basename(path), path)]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Input not found: {path!r}")
    if is_dicom_folder(path):
        return [(os.path.basename(os.path.normpath(path)), path)]
    scans = sorted(images_by_case(_entries(path, "scan"), None, modalities, modality_pattern, path)[0].items())
    if not scans:
        raise FileNotFoundError(
            f"No scans in {path!r}: expected image files ({', '.join(SCAN_EXTENSIONS)}) or DICOM series folders."
        )
    return scans


def _from_json(json_path):
    """The cases of a dataset.json (`keras_medseg.data.dataset_json`): its listed cases, or nnU-Net's
    imagesTr/ + labelsTr/ read as a data folder's."""
    meta = dataset_json.read(json_path)
    if dataset_json.layout(meta, json_path) != "nnunet":
        return dataset_json.listed_cases(meta, json_path)
    images_dir, labels_dir = dataset_json.nnunet_folders(meta, json_path)
    cases = _from_folder(os.path.dirname(images_dir), images_dir=images_dir, labels_dir=labels_dir)
    dataset_json.check_channels(meta, cases, json_path)
    return cases


def _label_folder(path):
    """The label-map folder of a data folder: `path/masks` or `path/labels` (both, or neither, refused).

    Raises:
        FileNotFoundError: neither folder exists (named).
        ValueError: both exist.
    """
    found = [os.path.join(path, sub) for sub in ("masks", "labels") if os.path.isdir(os.path.join(path, sub))]
    if len(found) == 2:
        raise ValueError(f"Data folder {path!r} has both masks/ and labels/; keep the label maps in one of them.")
    if not found:
        raise FileNotFoundError(
            f"Data folder is missing `masks/` (or `labels/`): expected {os.path.join(path, 'masks')!r} "
            "(layout: DIR/images/<name>.<ext> + DIR/masks/<name>.<ext>)."
        )
    return found[0]


def _from_folder(path, modalities=None, pattern=None, images_dir=None, labels_dir=None):
    images_dir = images_dir or os.path.join(path, "images")
    labels_dir = labels_dir or _label_folder(path)
    images = _entries(images_dir, "image")
    if not images:
        raise FileNotFoundError(f"No image files ({', '.join(SCAN_EXTENSIONS)}) or DICOM series in {images_dir!r}")
    labels = _entries(labels_dir, "label")
    images, modalities = images_by_case(images, labels, modalities, pattern, images_dir)  # per-modality files
    for stem, image in images.items():
        if stem not in labels:
            raise FileNotFoundError(
                f"Image {image!r} has no mask: expected {os.path.join(labels_dir, stem)}.<ext>")
    for stem, label in labels.items():
        if stem not in images:
            raise ValueError(f"Mask {label!r} has no matching image in {images_dir!r}")
    extra = {"modalities": list(modalities)} if modalities else {}
    return [{"name": s, "image": images[s], "label": labels[s], **extra} for s in sorted(images)]


def find_cases(source):
    """The `[{"name", "image", "label"}]` cases of a data source (the rules are in the module docstring).

    Args:
        source: a data argument or typed source (`keras_medseg.data.sources.resolve_source`
            decides what it is): a folder with `images/` and `masks/` (or
            `labels/`), a `dataset.json` or a folder holding one; or a list
            of `(image_path, label_path)` pairs.

    Returns:
        list of dicts, sorted by name for folders, in file order for `dataset.json`.

    Raises:
        FileNotFoundError: `source`, a listed file, the label folder or a
            label map of an image does not exist (named).
        ValueError: a source that holds no cases (patch store, slides,
            synthetic), no cases, a label map without its image, two files
            with one name stem (named).

    Example:

    >>> cases = keras_medseg.data.find_cases("Task09_Spleen/dataset.json")  # doctest: +SKIP
    >>> cases[0]["name"], cases[0]["label"]  # doctest: +SKIP
    ('spleen_10', '.../labelsTr/spleen_10.nii.gz')
    """
    if isinstance(source, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[1], (str, os.PathLike)) and all(
                isinstance(f, (str, os.PathLike)) for f in (p[0] if isinstance(p[0], (list, tuple)) else [p[0]]))
            for p in source):  # (image, label) pairs; an image may be a tuple of modality files
        cases = [{"name": image_stem(os.path.basename(str(lab if isinstance(i, (list, tuple)) else i)))[0]
                  or os.path.basename(str(i)), "label": os.fspath(lab),
                  "image": tuple(map(os.fspath, i)) if isinstance(i, (list, tuple)) else os.fspath(i)}
                 for i, lab in source]
    else:
        src = resolve_source(source)
        if isinstance(src, ScanFolderSource) and src.dataset_json:
            cases = _from_json(src.dataset_json)
        elif isinstance(src, (ScanFolderSource, ImageFolderSource)):
            cases = _from_folder(src.path, getattr(src, "modalities", None), getattr(src, "modality_pattern", None))
        else:
            raise ValueError(f"A {src.kind.replace('_', ' ')} holds no image/label cases; expected a data folder "
                             f"(images/ + masks/ or labels/) or a dataset.json. Received: source={source!r}")
    if not cases:
        raise ValueError(f"No cases found. Received: source={source!r}")
    for case in cases:
        for key in ("image", "label"):
            for f in case[key] if isinstance(case[key], tuple) else [case[key]]:
                if not os.path.exists(f):
                    raise FileNotFoundError(f"Case {case['name']!r}: {key} file not found: {f!r}")
    return cases
