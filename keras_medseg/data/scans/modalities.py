"""Multi-modal scans: several files (one per MR sequence) read as one multi-channel volume.

A case of a brain-tumour data set has four MR sequences (T1, T1 with contrast,
T2, FLAIR) on one voxel grid. They come either as one 4D NIfTI file, channels
last after the three spatial axes (the Medical Segmentation Decathlon's
convention, its `dataset.json` naming the channels in `modality`), read by
`keras_medseg.data.read_image(path, channels=True)`, or as one file per
modality, named by a pattern:

* `{case}_{modality}`, the default pattern, with the modality names given in
  channel order, e.g. `("t1", "t1ce", "t2", "flair")` for `images/p1_t1.nii.gz`,
  `images/p1_t1ce.nii.gz`, ...; the label map is `labels/p1.nii.gz`;
* nnU-Net's channel numbering `case_0000.nii.gz`, `case_0001.nii.gz`, ...,
  recognised without being named (`detect_numbered`): channel `k` is the
  file ending in `_{k:04d}`.

`read_image([path, ...])` reads the files of one case in the given (channel)
order and `stack_modalities` stacks them on a new last axis; every modality must share the first
one's voxel grid: the same spatial shape, and an affine that puts every corner
voxel within 1 % of a voxel of the first file's (the rule
`keras_medseg.data.scans.geometry.check_same_grid` applies to a label map).
A file off that grid is refused in one line naming it, the first file and the
mismatch; resample it onto the first modality first (nearest neighbour for
label maps, linear for images).

`group_modalities(entries, modalities, pattern)` turns the `{stem: path}`
entries of an `images/` folder into `{case: (path per modality)}`; a case
missing a modality, or a file that matches no case and modality, is refused
in one line naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

__all__ = ["DEFAULT_PATTERN", "check_case_grids", "check_modalities", "detect_numbered", "group_modalities",
           "images_by_case", "stack_modalities"]

#: How a per-modality file is named when no pattern is given: `p1_t1.nii.gz` is modality "t1" of case "p1".
DEFAULT_PATTERN = "{case}_{modality}"
_NUMBERED = re.compile(r"^(?P<case>.+)_(?P<modality>\d{4})$")


def _pattern_regex(pattern, modalities):
    if not isinstance(pattern, str) or pattern.count("{case}") != 1 or pattern.count("{modality}") != 1:
        raise ValueError("`modality_pattern` must hold '{case}' and '{modality}' once each, e.g. '{case}_{modality}'. "
                         f"Received: modality_pattern={pattern!r}")
    names = "|".join(re.escape(m) for m in sorted(modalities, key=len, reverse=True))
    body = re.escape(pattern).replace(re.escape("{case}"), "(?P<case>.+?)").replace(
        re.escape("{modality}"), f"(?P<modality>{names})")
    return re.compile(f"^{body}$")


def check_modalities(modalities):
    """`modalities` as a tuple of distinct non-empty str (the channel order), or None.

    Raises:
        ValueError: an empty list, an empty or repeated name (named).
    """
    if modalities is None:
        return None
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",")]
    out = tuple(str(m) for m in modalities)
    if not out or any(not m for m in out) or len(set(out)) != len(out):
        raise ValueError("`modalities` must be distinct non-empty names in channel order, e.g. t1,t1ce,t2,flair. "
                         f"Received: modalities={modalities!r}")
    return out


def detect_numbered(stems):
    """nnU-Net's channel numbering: `("0000", "0001", ...)` when every stem ends in `_NNNN`, else None.

    Args:
        stems: iterable of file name stems (`case_0000`, `case_0001`, ...).

    Returns:
        tuple of the channel suffixes in order, or None (no stem, or one without the suffix).

    Raises:
        ValueError: the channel numbers do not run 0000, 0001, ... (e.g. a missing 0001), naming one case.
    """
    stems = list(stems)
    matches = [_NUMBERED.match(s) for s in stems]
    if not stems or not all(matches):
        return None
    found = sorted({m["modality"] for m in matches})
    expected = [f"{k:04d}" for k in range(len(found))]
    if found != expected:
        raise ValueError(f"Channel files are numbered {found}; expected {expected} without a gap (nnU-Net naming "
                         f"case_0000, case_0001, ...); e.g. {stems[0]!r}.")
    return tuple(found)


def group_modalities(entries, modalities, pattern=DEFAULT_PATTERN, folder="images"):
    """The files of each case, in modality (channel) order.

    Args:
        entries: `{stem: path}` of an images folder (`p1_t1` -> `images/p1_t1.nii.gz`).
        modalities: tuple of modality names in channel order (`("t1", "flair")`).
        pattern: how a file stem is made from a case and a modality (default `"{case}_{modality}"`).
        folder: how errors name the folder.

    Returns:
        `{case: (path, ...)}`, one path per modality, cases sorted by name.

    Raises:
        ValueError: a file that matches no case and modality of the pattern, a bad pattern (named).
        FileNotFoundError: a case without one of the modalities (the missing file named).
    """
    modalities = check_modalities(modalities)
    regex = _pattern_regex(pattern, modalities)
    cases = {}
    for stem, path in sorted(entries.items()):
        m = regex.match(stem)
        if m is None:
            raise ValueError(f"Image {path!r} in {folder!r} is not named {pattern!r} with a modality in "
                             f"{list(modalities)}; rename it or move it out of the folder.")
        cases.setdefault(m["case"], {})[m["modality"]] = path
    out = {}
    for case in sorted(cases):
        missing = [mod for mod in modalities if mod not in cases[case]]
        if missing:
            expected = pattern.format(case=case, modality=missing[0])
            raise FileNotFoundError(f"Case {case!r} has no {missing[0]!r} modality: expected {expected}.<ext> in "
                                    f"{folder!r} (modalities {list(modalities)}).")
        out[case] = tuple(cases[case][mod] for mod in modalities)
    return out


def _corner_gap(a, b, shape):
    """Largest distance (mm) between where two affines put the corner voxels of a grid of `shape`."""
    shape = tuple(shape)[:3]
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape], indexing="ij")).reshape(len(shape), -1)
    corners = np.vstack([corners, np.zeros((3 - len(shape), corners.shape[1])), np.ones(corners.shape[1])])
    return float(np.linalg.norm(((np.asarray(a) - np.asarray(b)) @ corners)[:3], axis=0).max())


def stack_modalities(records, tolerance=0.01):
    """One case's modalities, read one by one, stacked as channels: one `ImageRecord` `(*S, C)`.

    `keras_medseg.data.read_image([path, ...])` reads the files and calls this.

    Args:
        records: list of `ImageRecord`s (`read_image(path, channels=True)`), one per modality, in channel order.
        tolerance: the largest corner-voxel distance accepted between a modality's affine and the first's, as a
            fraction of the smallest voxel size (default 0.01).

    Returns:
        `ImageRecord` with the first record's geometry, `array` float32 `(*S, C)` (each record one channel; a
        record that itself has channels contributes all of them), `path` the first file and
        `meta["modality_paths"]` all of them.

    Raises:
        ValueError: no records; a record with another spatial shape or another affine than the first (one line
            naming its file, the first file and the mismatch).

    Example:

    >>> rec = keras_medseg.data.read_image(["p1_t1.nii.gz", "p1_flair.nii.gz"])  # doctest: +SKIP
    >>> rec.array.shape  # doctest: +SKIP
    (240, 240, 155, 2)
    """
    if not records:
        raise ValueError("`paths` must list at least one modality file. Received: paths=[]")
    first = records[0]
    for rec in records[1:]:
        if rec.spatial_dims != first.spatial_dims:
            raise ValueError(f"Modality file {rec.path!r} is {rec.spatial_dims}D but the case's first modality "
                             f"{first.path!r} is {first.spatial_dims}D.")
        _check_grid(first.path, first, rec.path, rec, tolerance)
    array = np.concatenate([_channels_last(r.array, first.spatial_dims) for r in records], axis=-1)
    meta = dict(first.meta, modality_paths=[r.path for r in records])
    return dataclasses.replace(first, array=array, meta=meta)


def _check_grid(first_path, first, path, other, tolerance=0.01):
    """Refuse `other` (shape, affine, spacing) off the grid of `first` in one line naming `path` and `first_path`."""
    if tuple(other.shape)[:3] != tuple(first.shape)[:3]:
        raise ValueError(f"Modality file {path!r} has shape {tuple(other.shape)[:3]} but the case's first modality "
                         f"{first_path!r} has {tuple(first.shape)[:3]}: every modality of a case must share one voxel "
                         "grid; resample it onto the first modality first.")
    gap, limit = _corner_gap(first.affine, other.affine, first.shape), tolerance * float(min(first.spacing))
    if gap > limit:
        raise ValueError(f"Modality file {path!r} does not share the voxel grid of the case's first modality "
                         f"{first_path!r}: its affine puts a corner voxel {gap:.3g} mm away (more than {limit:.3g} "
                         "mm); resample it onto the first modality first.")


def _nifti_grid(path):
    """`_Grid` of a NIfTI file from its header alone (no voxels read), or None for other formats."""
    if not os.fspath(path).lower().endswith((".nii", ".nii.gz")):
        return None
    import nibabel

    img = nibabel.load(path)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return _Grid(tuple(img.shape)[:3], np.asarray(img.affine, float), zooms)


@dataclasses.dataclass
class _Grid:
    shape: tuple
    affine: np.ndarray
    spacing: tuple


def check_case_grids(cases, tolerance=0.01):
    """Check, before training, that every NIfTI modality of every multi-file case lies on its first modality's grid.

    Reads only the NIfTI headers, so a data set with one bad file fails in one line naming it before any model
    is built, instead of in the middle of an epoch (other formats are checked when a case is read,
    `stack_modalities`).

    Args:
        cases: the case finder's `[{"name", "image", ...}]`; cases whose `image` is one file are skipped.
        tolerance: as for `stack_modalities`.

    Raises:
        ValueError: the first modality file off its case's grid (named, with the mismatch).
    """
    for case in cases:
        paths = case["image"]
        if not isinstance(paths, (list, tuple)) or len(paths) < 2:
            continue
        first = _nifti_grid(paths[0])
        for path in paths[1:]:
            other = _nifti_grid(path)
            if first is not None and other is not None:
                _check_grid(paths[0], first, path, other, tolerance)


def _channels_last(array, d):
    array = np.asarray(array, dtype=np.float32)
    return array[..., None] if array.ndim == d else array


def images_by_case(entries, label_stems=None, modalities=None, pattern=None, folder="images"):
    """`({case: path or (path per modality)}, modalities)`: the images of a folder grouped by case.

    The case finder's rule: with `modalities` given, every file is one modality of a case (`group_modalities`
    with `pattern`, default `"{case}_{modality}"`); without, when `label_stems` are given, no image stem is a
    label stem and every stem ends in nnU-Net's `_0000`, `_0001`, ... (`detect_numbered`), the files are
    grouped by that number; otherwise each file is one case (`modalities` None).

    Args:
        entries: `{stem: path}` of the folder.
        label_stems: the label maps' stems, or None (unlabelled scans: no numbering is guessed).
        modalities, pattern: see `group_modalities`.
        folder: how errors name the folder.

    Returns:
        `(cases, modalities)`: `modalities` the tuple of names in channel order, or None.
    """
    if modalities is None and label_stems is not None and not set(entries) & set(label_stems):
        modalities = detect_numbered(entries)
        pattern = DEFAULT_PATTERN
    if modalities is None:
        return dict(entries), None
    modalities = check_modalities(modalities)
    return group_modalities(entries, modalities, pattern or DEFAULT_PATTERN, folder), modalities
