"""DICOM: series folders checked slice by slice, irregular series resampled from the true slice positions, and
single DICOM files.

A DICOM series is a stack of 2D slices, each with its own position
(`ImagePositionPatient`), orientation (`ImageOrientationPatient`) and pixel
size (`PixelSpacing`). A volume is a regular grid, so reading a series as one
assumes that every slice has the same orientation and pixel size, that the
slices are stacked along their normal (no gantry tilt) and that they are
evenly spaced (no missing slice). SimpleITK's series reader (GDCM) only warns
on stderr when they are not, and puts the slices on a uniform grid anyway: a
slice after a gap is then written millimetres from where it was scanned.

`read_series(folder)` checks the headers first (pydicom, without pixel data)
and refuses a series that breaks one of these rules, in one line naming the
folder and what differs:

* **orientation**: the direction cosines of every slice agree within
  `ORIENTATION_TOLERANCE`; slices of two orientations in one series (a scout
  mixed into an axial series) are always refused: split the series.
* **pixel spacing / matrix size**: equal in every slice (relative 1e-4).
* **stacking**: consecutive slice positions move along the slice normal; an
  in-plane shift of more than the gap tolerance is a tilted stack (gantry
  tilt), reported with its angle.
* **gaps**: every gap between neighbouring slices (positions projected on the
  normal) equals the median gap within `GAP_TOLERANCE` (1 %, at least
  0.01 mm); a gap about twice the median is reported as a missing slice. Two
  slices at one position are always refused (duplicates or several
  acquisitions).

With `resample_irregular=True` a series that breaks only the last three rules
is resampled onto a regular grid from the *true* slice positions: every slice
is first sampled onto a common in-plane grid (axes: the slices' row and column
directions; pixel size: the most common one; origin: the first slice's;
bilinear, `scipy.ndimage.map_coordinates`), then each column of voxels is
interpolated linearly along the normal (`numpy.interp` over the slices'
positions) onto evenly spaced planes from the first slice to the last, with
the median gap. Voxels that no slice covers (the edges of a tilted stack) get
the series' minimum value. The record's `meta` says what was resampled.

`read_file(path)` reads one DICOM file (an X-ray, a mammogram, one CT or MR
slice, or a multi-frame file) with SimpleITK; the pixel size comes from
`PixelSpacing`, else `ImagerPixelSpacing` (projection radiographs).

Reference: the DICOM standard, PS3.3 C.7.6.2 (Image Plane Module: position,
orientation, pixel spacing) and C.8.11.4 / C.7.6.1 (Imager Pixel Spacing of
projection images); slice checks as in dcm2niix (C. Rorden, "dcm2niix: the
first step for neuroimaging data analysis", gantry tilt and missing slices).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import numpy as np

__all__ = ["GAP_TOLERANCE", "ORIENTATION_TOLERANCE", "SeriesGeometry", "check_series", "is_dicom_file",
           "read_file", "read_series", "series_files"]

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
GAP_TOLERANCE = (0.01, 0.01)  # (relative to the median gap, minimum in mm)
_SPACING_RTOL = 1e-4


def is_dicom_file(path):
    """Whether `path` is a DICOM file: the `DICM` marker after the 128-byte preamble, or a `.dcm` name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            if f.read(4) == b"DICM":
                return True
    except OSError:
        return False
    return path.lower().endswith(".dcm")


def series_files(folder):
    """`(series_uid, files)` of the one DICOM series in `folder`, files in GDCM's order (SimpleITK).

    Raises:
        ValueError: no series, or several (each named with its slice count).
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(folder)
    if not series:
        raise ValueError(f"No DICOM series found in folder {folder!r}.")
    if len(series) > 1:
        counts = {uid: len(reader.GetGDCMSeriesFileNames(folder, uid)) for uid in series}
        raise ValueError(
            f"DICOM folder {folder!r} holds {len(series)} series; expected one. Series UIDs and slice "
            f"counts: {counts}. Put each series in its own folder."
        )
    return series[0], list(reader.GetGDCMSeriesFileNames(folder, series[0]))


@dataclasses.dataclass
class SeriesGeometry:
    """The slice geometry of a series, read from its headers (LPS millimetres, as DICOM stores them).

    Attributes:
        files: the slice files, sorted along the normal.
        positions: `(n, 3)` `ImagePositionPatient` of each slice.
        row, col, normal: unit vectors: along a row (increasing column index), along a column, and their cross
            product.
        pixel_spacing: `(n, 2)` (column step, row step) in mm, i.e. along `row` and along `col`.
        sizes: `(n, 2)` (columns, rows).
        heights: `(n,)` positions projected on `normal`, relative to the first slice.
        problems: what breaks a regular grid, in words (empty when regular).
        fatal: the problems that resampling cannot fix (mixed orientation, duplicate positions).
    """

    files: list
    positions: np.ndarray
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    pixel_spacing: np.ndarray
    sizes: np.ndarray
    heights: np.ndarray
    problems: list
    fatal: list

    @property
    def regular(self):
        return not self.problems


def _floats(value, n, what, path):
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        out = []
    if len(out) != n:
        raise ValueError(f"DICOM file {path!r} has no valid {what} (expected {n} numbers). Received: {value!r}")
    return out


def _mm(x):
    return f"{x:.3g} mm"


def check_series(files, name="series"):
    """Read the slice headers of `files` (pydicom, no pixel data) and say how they break a regular grid.

    Args:
        files: list of DICOM file paths of one series.
        name: how messages name the series (its folder).

    Returns:
        `SeriesGeometry`, or None when the slices carry no position/orientation at all (nothing to check).

    Raises:
        ValueError: some slices have a position/orientation and others not, or a header value is malformed
            (the file is named).
    """
    import pydicom

    heads = [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=[
        "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"]) for f in files]
    has = ["ImagePositionPatient" in h and "ImageOrientationPatient" in h for h in heads]
    if not any(has):
        return None
    if not all(has):
        missing = [os.path.basename(f) for f, ok in zip(files, has) if not ok]
        raise ValueError(f"DICOM series {name!r}: {len(missing)} of {len(files)} slices have no position or "
                         f"orientation (e.g. {missing[0]!r}); cannot place them in space.")
    pos = np.array([_floats(h.ImagePositionPatient, 3, "ImagePositionPatient", f) for h, f in zip(heads, files)])
    iop = np.array([_floats(h.ImageOrientationPatient, 6, "ImageOrientationPatient", f)
                    for h, f in zip(heads, files)])
    spacing = np.array([_floats(h.PixelSpacing, 2, "PixelSpacing", f)[::-1] if "PixelSpacing" in h else [1.0, 1.0]
                        for h, f in zip(heads, files)])  # DICOM gives (row step, column step)
    sizes = np.array([(int(h.Columns), int(h.Rows)) for h in heads])
    problems, fatal = [], []
    bad = np.abs(iop - iop[0]).max(axis=1) > ORIENTATION_TOLERANCE
    if bad.any():
        k = int(np.argmax(bad))
        fatal.append(f"slice orientation differs: {os.path.basename(files[k])!r} has direction cosines "
                     f"{np.round(iop[k], 4).tolist()}, {os.path.basename(files[0])!r} "
                     f"{np.round(iop[0], 4).tolist()} ({int(bad.sum())} of {len(files)} slices differ); "
                     "split the series by orientation")
    row, col = iop[0, :3] / np.linalg.norm(iop[0, :3]), iop[0, 3:] / np.linalg.norm(iop[0, 3:])
    normal = np.cross(row, col)
    order = np.argsort(pos @ normal, kind="stable")
    files, pos, spacing, sizes = [files[i] for i in order], pos[order], spacing[order], sizes[order]
    heights = (pos - pos[0]) @ normal
    for what, values, fmt in (("pixel spacing", spacing, lambda v: f"{v[0]:g} x {v[1]:g} mm"),
                              ("matrix size", sizes, lambda v: f"{v[0]} x {v[1]}")):
        kinds = Counter(tuple(np.round(v, 6).tolist()) for v in values)
        if len(kinds) > 1 and not np.allclose(values, values[0], rtol=_SPACING_RTOL, atol=1e-6):
            common = kinds.most_common()
            odd = next(i for i, v in enumerate(values) if tuple(np.round(v, 6).tolist()) != common[0][0])
            problems.append(f"{what} differs between slices: {fmt(common[0][0])} in {common[0][1]}, "
                            + ", ".join(f"{fmt(v)} in {c}" for v, c in common[1:])
                            + f" (e.g. {os.path.basename(files[odd])!r})")
    if len(files) > 1 and not fatal:
        gaps = np.diff(heights)
        dup = np.flatnonzero(gaps <= 1e-6)
        if dup.size:
            k = int(dup[0])
            fatal.append(f"slices {os.path.basename(files[k])!r} and {os.path.basename(files[k + 1])!r} lie at the "
                         f"same position ({dup.size} duplicate positions): duplicates or several acquisitions")
        else:
            median = float(np.median(gaps))
            tol = max(GAP_TOLERANCE[0] * median, GAP_TOLERANCE[1])
            shift = np.diff(pos, axis=0) - gaps[:, None] * normal  # in-plane part of each step
            drift = np.linalg.norm(shift, axis=1)
            if drift.max() > tol:
                k = int(np.argmax(drift))
                angle = np.degrees(np.arctan2(drift[k], gaps[k]))
                problems.append(f"the slices are not stacked along their normal: each step shifts up to "
                                f"{_mm(drift.max())} in-plane, a tilt of {angle:.3g} degrees (gantry tilt)")
            off = np.flatnonzero(np.abs(gaps - median) > tol)
            if off.size:
                k = int(off[np.argmax(np.abs(gaps[off] - median))])
                missing = int(round(gaps[k] / median)) - 1
                where = (f"between {os.path.basename(files[k])!r} and {os.path.basename(files[k + 1])!r} "
                         f"({_mm(heights[k])} and {_mm(heights[k + 1])} along the normal)")
                if missing >= 1 and abs(gaps[k] - (missing + 1) * median) <= tol:
                    problems.append(f"{missing} missing slice{'s' if missing > 1 else ''}: a gap of {_mm(gaps[k])} "
                                    f"{where} where the median gap is {_mm(median)}"
                                    + (f" ({off.size} uneven gaps)" if off.size > 1 else ""))
                else:
                    problems.append(f"uneven slice gaps from {_mm(gaps.min())} to {_mm(gaps.max())} (median "
                                    f"{_mm(median)}; the worst {where})")
    return SeriesGeometry(files, pos, row, col, normal, spacing, sizes, heights, problems, fatal)


def _resample(geometry):
    """The slices of an irregular series on a regular grid (see the module docstring): `(sitk.Image, meta)`."""
    import SimpleITK as sitk
    from scipy.ndimage import map_coordinates

    g = geometry
    kinds = Counter(tuple(np.round(v, 6).tolist()) for v in g.pixel_spacing)
    target = np.array(min(kinds, key=lambda v: (-kinds[v], v)))  # most common pixel size, then the smallest
    ref = next(i for i, v in enumerate(g.pixel_spacing) if np.allclose(v, target, rtol=_SPACING_RTOL))
    ncol, nrow = (int(round(g.sizes[ref][0] * g.pixel_spacing[ref][0] / target[0])),
                  int(round(g.sizes[ref][1] * g.pixel_spacing[ref][1] / target[1])))
    # the grid's corner: the reference slice's corner, moved along the normal onto the first slice's plane
    origin = g.positions[ref] - ((g.positions[ref] - g.positions[0]) @ g.normal) * g.normal
    ii, jj = np.meshgrid(np.arange(ncol) * target[0], np.arange(nrow) * target[1], indexing="ij")
    slices, low = [], np.inf
    for k, f in enumerate(g.files):
        arr = sitk.GetArrayFromImage(sitk.ReadImage(f)).astype(np.float32)  # (1, rows, cols), rescaled
        arr = arr.reshape(arr.shape[-2:]).T  # (column i, row j)
        low = min(low, float(arr.min()))
        d = origin - g.positions[k]  # the grid's corner seen from this slice's corner
        u = (ii + d @ g.row) / g.pixel_spacing[k][0]
        v = (jj + d @ g.col) / g.pixel_spacing[k][1]
        slices.append(map_coordinates(arr, [u, v], order=1, mode="constant", cval=np.nan))
    stack = np.stack(slices, axis=-1)  # (i, j, slice)
    stack = np.where(np.isnan(stack), low, stack)
    gaps = np.diff(g.heights)
    n = int(round(g.heights[-1] / float(np.median(gaps)))) + 1
    dz = float(g.heights[-1]) / (n - 1)
    z = np.arange(n) * dz
    flat = stack.reshape(-1, stack.shape[-1])
    # linear interpolation along the normal, every voxel column at once
    upper = np.clip(np.searchsorted(g.heights, z, side="right"), 1, len(g.heights) - 1)
    w = ((z - g.heights[upper - 1]) / (g.heights[upper] - g.heights[upper - 1])).astype(np.float32)
    volume = (flat[:, upper - 1] * (1 - w) + flat[:, upper] * w).reshape(ncol, nrow, n)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)))
    image.SetSpacing([float(target[0]), float(target[1]), dz])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in np.stack([g.row, g.col, g.normal], axis=1).ravel()])
    meta = {"resampled": "; ".join(g.problems), "num_slices": len(g.files), "slice_heights_mm": g.heights.tolist()}
    return image, meta


def read_series(folder, resample_irregular=False):
    """Read the one DICOM series in `folder`: `(SimpleITK image, meta)` on a regular grid, or a one-line refusal.

    Args:
        folder: str, a folder holding one series.
        resample_irregular: bool (default False). A series with missing slices, uneven gaps, mixed pixel
            spacing or matrix size, or a tilted stack is refused unless True; then it is resampled onto a
            regular grid from the true slice positions (module docstring).

    Returns:
        `(image, meta)`: a 3D (or, for one slice, 2D-shaped 3D) SimpleITK image in HU when the series has
        rescale tags, and `{"series_uid", "num_slices", "files", ...}`.

    Raises:
        ValueError: no or several series, slices of several orientations or at one position (always), an
            irregular series without `resample_irregular` (naming the folder and what differs).
    """
    import SimpleITK as sitk

    uid, files = series_files(folder)
    geometry = check_series(files, folder) if len(files) > 1 else None
    if geometry is not None and geometry.fatal:
        raise ValueError(f"DICOM series {folder!r} cannot be read as one volume: {'; '.join(geometry.fatal)}.")
    meta = {"series_uid": uid, "num_slices": len(files), "files": list(files)}
    if geometry is not None and geometry.problems:
        if not resample_irregular:
            raise ValueError(
                f"DICOM series {folder!r} is not a regular grid: {'; '.join(geometry.problems)}. Pass "
                "resample_irregular=True (--resample-irregular) to resample it onto a regular grid from the true "
                "slice positions, or fix the series.")
        image, extra = _resample(geometry)
        meta.update(extra, files=list(geometry.files))
        return image, meta
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute(), meta  # applies RescaleSlope / RescaleIntercept


def read_file(path):
    """Read one DICOM file with SimpleITK: `(image, meta)`; projection images take `ImagerPixelSpacing`.

    Raises:
        ValueError: a file without pixel data (a structure set, a plan, a report), naming it.
    """
    import pydicom
    import SimpleITK as sitk

    head = pydicom.dcmread(path, stop_before_pixels=True)
    if "Rows" not in head or "Columns" not in head:
        raise ValueError(f"DICOM file {path!r} holds no image (modality {head.get('Modality', '?')}, "
                         f"SOP class {getattr(head.get('SOPClassUID'), 'name', '?')}).")
    image = sitk.ReadImage(path)
    meta = {"modality": str(head.get("Modality", "")), "frames": int(head.get("NumberOfFrames", 1) or 1)}
    if "PixelSpacing" not in head and "ImagerPixelSpacing" in head:
        rows_step, cols_step = _floats(head.ImagerPixelSpacing, 2, "ImagerPixelSpacing", path)
        image.SetSpacing([cols_step, rows_step] + list(image.GetSpacing()[2:]))
        meta["spacing_from"] = "ImagerPixelSpacing"
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and "SliceThickness" in head:
        thickness = float(head.SliceThickness or 0)
        if thickness > 0:
            image.SetSpacing(list(image.GetSpacing()[:2]) + [thickness])
    return image, meta
