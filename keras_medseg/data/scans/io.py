"""Reading image files: the one place where keras-medseg opens an image, volume or DICOM series.

* `read_image(path)` -> `ImageRecord`: the voxels **with their geometry**, for NIfTI (nibabel), DICOM series
  folders, NRRD and MetaImage (SimpleITK), and PNG/JPEG/TIFF/`.npy`/`.npz` with unit spacing; a list of
  files is one multi-modal case (`keras_medseg.data.scans.modalities`).
* `write_image(path, labels, reference)`: a label map with the reference's geometry (NIfTI, NRRD/MHA, or
  plain PNG/TIFF/`.npy`).
* `read_array(path)`: just the array, through the same reader; the data-folder loader
  (`keras_medseg.data.arrays`), `patches extract` and `explain` read with it.

Readers: NIfTI (`.nii`, `.nii.gz`) through nibabel; DICOM series (a folder of slices) through SimpleITK's GDCM
series reader after the slice checks of `keras_medseg.data.scans.dicom` (missing slices, uneven gaps, mixed pixel
spacing or orientation, tilted stacks are refused, or resampled from the true slice positions with
`resample_irregular=True`): slices sorted by position, rescale slope/intercept applied (CT in HU), spacing and
direction from the headers; single DICOM files (an X-ray, a mammogram, one slice: `.dcm` or the `DICM` marker)
through SimpleITK, 2D with their pixel spacing (`PixelSpacing`, else `ImagerPixelSpacing`) or, with
`spatial_dims=3`, a one-slice volume; NRRD (`.nrrd`, `.nhdr`) and MetaImage (`.mha`, `.mhd`) through
SimpleITK; PNG/JPEG/TIFF through scikit-image.

**NIfTI qform and sform.** The affine used is nibabel's (`get_best_affine()`,
the NIfTI-1 rule): the sform when `sform_code > 0`, else the qform. When both
are set and place the voxels more than 0.01 mm apart, reading warns, naming the
file, the distance and the codes (ITK-based tools use the qform when
`sform_code` is not 1); `write_image` gives label maps a qform and an sform
both equal to the affine used, and writes every file atomically
(`keras_medseg.utils.atomic_io`: the previous file or none after a kill, never
a truncated one; the mode follows the umask).

**Axis order.** `ImageRecord.array` holds the voxels in *voxel index order* `(i, j, k)` as stored in the file,
the order nibabel uses (for SimpleITK sources the array is transposed from SimpleITK's `(k, j, i)`), with any
channel/time axes after the spatial ones. `affine` maps a voxel index `(i, j, k, 1)` to RAS+ millimetres, the
NIfTI world convention: +x towards the patient's Right, +y Anterior, +z Superior. DICOM, NRRD and MHA store LPS+
geometry; it is converted here (x and y negated) so every record speaks RAS+. `spacing` is the voxel size in mm
along each array axis, `origin` the RAS+ position of voxel `(0, 0, 0)` and `direction` the 3x3 matrix of unit
column vectors, so `affine[:3, :3] == direction @ diag(spacing)` and `affine[:3, 3] == origin`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import numpy as np

from keras_medseg.data.scans import dicom
from keras_medseg.utils.atomic_io import atomic_path, remove_dead_temporaries

__all__ = [
    "SCAN_EXTENSIONS",
    "ImageRecord",
    "file_extension",
    "image_stem",
    "read_array",
    "read_image",
    "write_image",
]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
PLAIN_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".npz", ".jpg", ".jpeg")
DICOM_EXTENSIONS = (".dcm",)
# every file type `read_image` reads (plus DICOM series folders)
SCAN_EXTENSIONS = PLAIN_EXTENSIONS + NIFTI_EXTENSIONS + ITK_EXTENSIONS + DICOM_EXTENSIONS
_QFORM_SFORM_TOLERANCE_MM = 0.01
_LPS = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS flip (its own inverse)


@dataclasses.dataclass
class ImageRecord:
    """A voxel array with its geometry, as returned by `read_image`.

    Attributes:
        array: numpy array, spatial axes in voxel index order `(i, j, k)` as
            stored (2D files: `(H, W)` or `(H, W, C)`), channels last.
        spacing: tuple of float, mm per spatial array axis.
        origin: tuple of float, RAS+ mm of voxel `(0, 0, 0)` (3 values).
        direction: `(3, 3)` float array, unit axis directions in RAS+ (columns).
        affine: `(4, 4)` float array, voxel index -> RAS+ mm.
        header: the nibabel header for NIfTI sources (reused when writing),
            else None.
        path: the file or folder read.
        format: "nifti", "dicom", "itk", "png", "tiff" or "npy".
        spatial_dims: number of spatial axes of `array` (2 or 3).
        meta: extra information (DICOM series UID, number of slices, ...).
    """

    array: np.ndarray
    spacing: tuple
    origin: tuple
    direction: np.ndarray
    affine: np.ndarray
    header: Any = None
    path: str | None = None
    format: str = "npy"
    spatial_dims: int = 3
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def shape(self):
        """Spatial shape of the array."""
        return tuple(self.array.shape[: self.spatial_dims])


def image_stem(filename):
    """`(stem, extension)` of a file name with a known image extension, else `(None, None)`."""
    return file_extension(filename, SCAN_EXTENSIONS)


def file_extension(filename, extensions=SCAN_EXTENSIONS):
    """`(stem, extension)` of `filename` for the longest matching extension (case-insensitive), else `(None, None)`.

    Example: `file_extension("case1.nii.gz") == ("case1", ".nii.gz")`.
    """
    lower = filename.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext):
            return filename[: -len(ext)], ext
    return None, None


def _affine_from(spacing, origin, direction):
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(direction, dtype=float) @ np.diag(np.asarray(spacing, dtype=float))
    aff[:3, 3] = origin
    return aff


def _geometry_from_affine(affine):
    affine = np.asarray(affine, dtype=float)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = affine[:3, :3] / np.where(spacing > 0, spacing, 1.0)
    return tuple(float(s) for s in spacing), tuple(float(o) for o in affine[:3, 3]), direction


def _plain_record(array, path, fmt, spatial_dims):
    if spatial_dims is None:
        spatial_dims = 3 if fmt == "npy" and array.ndim == 3 else max(1, min(2, array.ndim))
    if array.ndim < spatial_dims:
        raise ValueError(
            f"Cannot read {path!r} as a {spatial_dims}D image: its array has shape {array.shape}."
        )
    spacing = (1.0,) * spatial_dims
    s3 = spacing + (1.0,) * (3 - spatial_dims)
    return ImageRecord(array=array, spacing=spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3),
                       affine=_affine_from(s3, (0.0, 0.0, 0.0), np.eye(3)), path=path, format=fmt,
                       spatial_dims=spatial_dims)


def _grid_distance(a, b, shape):
    """Largest distance (mm) between where two affines put the corner voxels of a grid of `shape`."""
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape[:3]], indexing="ij")).reshape(
        len(shape[:3]), -1)
    corners = np.vstack([corners, np.zeros((3 - len(shape[:3]), corners.shape[1])), np.ones(corners.shape[1])])
    return float(np.abs((np.asarray(a) - np.asarray(b)) @ corners)[:3].max())


def _read_nifti(path):
    import nibabel

    img = nibabel.load(path)
    array = np.asarray(img.dataobj)  # scaled voxel values (scl_slope / scl_inter applied)
    affine = np.asarray(img.affine, dtype=float)  # header.get_best_affine(): sform if sform_code > 0, else qform
    header = img.header
    meta = {}
    if isinstance(header, nibabel.Nifti1Header):
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        meta = {"qform_code": int(qcode), "sform_code": int(scode),
                "affine_from": "sform" if sform is not None else ("qform" if qform is not None else "zooms")}
        if qform is not None and sform is not None:
            gap = _grid_distance(qform, sform, array.shape)
            if gap > _QFORM_SFORM_TOLERANCE_MM:
                meta["qform_sform_distance_mm"] = gap
                warnings.warn(
                    f"NIfTI file {path!r}: its qform and sform disagree by up to {gap:.3g} mm (qform_code={qcode}, "
                    f"sform_code={scode}); using the sform, the NIfTI-1 rule that nibabel follows (ITK-based tools "
                    "may place this scan at the qform); label maps are written with both set to the sform.",
                    stacklevel=4)
    spacing, origin, direction = _geometry_from_affine(affine)
    d = max(1, min(3, array.ndim))
    return ImageRecord(array=array, spacing=spacing[:d], origin=origin, direction=direction, affine=affine,
                       header=header.copy(), path=path, format="nifti", spatial_dims=d, meta=meta)


def _record_from_sitk(image, path, fmt, meta=None):
    import SimpleITK as sitk

    dim = image.GetDimension()
    if dim not in (2, 3):
        raise ValueError(f"Cannot read {path!r}: it holds a {dim}D image; expected 2D or 3D.")
    arr = sitk.GetArrayFromImage(image)  # (k, j, i[, c])
    ncomp = image.GetNumberOfComponentsPerPixel()
    spatial_axes = list(range(dim))[::-1]
    arr = np.transpose(arr, spatial_axes + list(range(dim, arr.ndim))) if ncomp > 1 else arr.transpose(spatial_axes)
    spacing = tuple(float(s) for s in image.GetSpacing())
    direction_lps = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    origin_lps = np.asarray(image.GetOrigin(), dtype=float)
    if dim == 2:
        d3 = np.eye(3)
        d3[:2, :2] = direction_lps
        direction_lps, origin_lps = d3, np.append(origin_lps, 0.0)
    direction = _LPS @ direction_lps
    origin = tuple(float(v) for v in _LPS @ origin_lps)
    s3 = spacing + (1.0,) * (3 - dim)
    return ImageRecord(array=arr, spacing=spacing, origin=origin, direction=direction,
                       affine=_affine_from(s3, origin, direction), path=path, format=fmt,
                       spatial_dims=dim, meta=meta or {})


def _read_dicom_series(folder, resample_irregular=False):
    image, meta = dicom.read_series(folder, resample_irregular=resample_irregular)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        image = image[:, :, 0]
    return _record_from_sitk(image, folder, "dicom", meta)


def _read_dicom_file(path, spatial_dims):
    """One DICOM file: 2D with its pixel spacing, a one-slice volume with `spatial_dims=3`, or a multi-frame volume."""
    image, meta = dicom.read_file(path)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and spatial_dims != 3:
        image = image[:, :, 0]
    return _record_from_sitk(image, path, "dicom", meta)


def _read_file(path, ext, label, spatial_dims):
    """Decode one file into an `ImageRecord`; every decoding error names the file."""
    try:
        if ext in NIFTI_EXTENSIONS:
            try:
                import nibabel  # noqa: F401
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ValueError(
                    f"Reading NIfTI file {path!r} needs nibabel: pip install 'keras-medseg[medical]'"
                ) from exc
            return _read_nifti(path)
        if ext in ITK_EXTENSIONS:
            import SimpleITK as sitk

            return _record_from_sitk(sitk.ReadImage(path), path, "itk")
        if ext in DICOM_EXTENSIONS:
            return _read_dicom_file(path, spatial_dims)
        if ext == ".npy":
            return _plain_record(np.load(path, allow_pickle=False), path, "npy", spatial_dims)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return _plain_record(data[data.files[0]], path, "npy", spatial_dims)
        import skimage.io

        fmt = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}.get(ext, "image")
        return _plain_record(np.asarray(skimage.io.imread(path)), path, fmt, spatial_dims or 2)
    except ValueError as exc:
        if path in str(exc):
            raise
        raise ValueError(f"Cannot read {label}{path!r} (corrupt or not a {ext or 'known image'} file): {exc}") from exc
    except Exception as exc:  # decoder errors come in many types
        raise ValueError(f"Cannot read {label}{path!r} (corrupt or not a {ext or 'known image'} file): {exc}") from exc


def read_image(path, spatial_dims=None, resample_irregular=False, channels=False):
    """Read an image, volume or DICOM series with its geometry.

    Args:
        path: str, a file (`.nii`, `.nii.gz`, `.nrrd`, `.nhdr`, `.mha`,
            `.mhd`, `.png`, `.jpg`, `.tif`, `.tiff`, `.npy`, `.npz`, `.dcm`
            or any file with the DICOM marker) or a folder holding one DICOM
            series; or a list of such files, one per modality of one case
            (`keras_medseg.data.scans.modalities.stack_modalities`: stacked as
            channels, all on the first file's grid, else refused naming the file).
        spatial_dims: int or None (default). When 3, the record must be a
            3D volume (a single DICOM slice is a one-slice volume); when 2, a
            2D image. A 3-axis `.npy` is a volume unless `spatial_dims=2`.
        channels: bool (default False). With `spatial_dims=3`, a 4D NIfTI
            `(i, j, k, C)` (channels last; `(i, j, k, 1, C)` too) is refused
            unless True; a list `path` always allows channels.
        resample_irregular: bool (default False). A DICOM series with
            missing slices, uneven gaps, mixed pixel spacing or a tilted stack
            is refused unless True; then it is resampled onto a regular grid
            from the true slice positions (`keras_medseg.data.scans.dicom`).

    Returns:
        `ImageRecord` with `array` in voxel index order `(i, j, k)` and an
        `affine` from voxel index to RAS+ mm (see the module docstring).
        DICOM values are in HU when the series carries rescale tags.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: unknown extension, unreadable file, a folder with no or
            several DICOM series, an irregular DICOM series (see
            `resample_irregular`), or a record whose dimensionality differs
            from `spatial_dims` (all name the file).

    Warns:
        UserWarning: a NIfTI file whose qform and sform disagree (the sform is used; module docstring).

    Example:
    >>> rec = keras_medseg.data.read_image("ct.nii.gz")  # doctest: +SKIP
    >>> rec.array.shape, rec.spacing  # doctest: +SKIP
    ((512, 512, 87), (0.7, 0.7, 5.0))

    Reference: the geometry is nibabel's (NIfTI) and SimpleITK's (DICOM,
    NRRD, MHA); the LPS -> RAS conversion is checked against nibabel in the
    tests.
    """
    if spatial_dims not in (None, 2, 3):
        raise ValueError(f"`spatial_dims` must be None, 2 or 3. Received: spatial_dims={spatial_dims!r}")
    if isinstance(path, (list, tuple)):  # one file per modality, stacked as channels on the first file's grid
        from keras_medseg.data.scans.modalities import stack_modalities
        return stack_modalities([read_image(p, spatial_dims or 3, resample_irregular, True) for p in path])
    path = os.fspath(path)
    if os.path.isdir(path):
        try:
            record = _read_dicom_series(path, resample_irregular=resample_irregular)
        except Exception as exc:  # GDCM errors come as RuntimeError
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"Cannot read DICOM series in {path!r}: {exc}") from exc
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"File not found: {path!r}")
        _, ext = image_stem(os.path.basename(path))
        if ext is None and dicom.is_dicom_file(path):
            ext = ".dcm"
        if ext is None:
            raise ValueError(
                f"Unsupported file type {path!r}; expected one of {', '.join(SCAN_EXTENSIONS)} or a DICOM folder."
            )
        record = _read_file(path, ext, "", spatial_dims)
    if spatial_dims == 3 and channels and record.array.ndim == 5 and record.array.shape[3] == 1:
        record = dataclasses.replace(record, array=record.array[:, :, :, 0, :])  # a NIfTI vector (i, j, k, 1, C)
    if spatial_dims == 3:
        if record.spatial_dims != 3 or record.array.ndim != 3 + (channels and record.array.ndim == 4):
            raise ValueError(
                f"Expected a single 3D volume in {path!r}; it holds an array of shape {record.array.shape} "
                f"({record.array.ndim}D). Channels (modalities) last are read with channels=True; split time "
                "series into 3D volumes first."
            )
    elif spatial_dims == 2 and record.spatial_dims == 3:
        if record.array.shape[2:3] == (1,):
            record = dataclasses.replace(record, array=record.array[:, :, 0, ...], spatial_dims=2,
                                         spacing=record.spacing[:2])
        else:
            raise ValueError(f"Expected a 2D image in {path!r}; it holds an array of shape {record.array.shape}.")
    return record


def read_array(path: str | os.PathLike, what: str = "File", extensions: tuple | None = None,
               allow_nonfinite: bool = False) -> np.ndarray:
    """Read one image, mask or array file as a NumPy array (`read_image` without the geometry; NaN/Inf refused).

    Args:
        path: str or path-like; `.npy`, `.npz` (its first array), `.nii` /
            `.nii.gz` (scaled voxel values, through nibabel), `.nrrd`/`.mha`
            (SimpleITK, in voxel index order) or an image that scikit-image
            reads (PNG, JPEG, TIFF, ...).
        what: str, the word that starts the "not found" message and names the
            file in a decoding error, e.g. "image file" or "mask file"
            (default "File").
        extensions: tuple of accepted extensions (lower case, with the dot),
            or None to accept anything scikit-image can decode (default None).
        allow_nonfinite: bool, default False: a float array with NaN or Inf
            values raises `ValueError` naming the file and the counts.

    Returns:
        The array as stored (image dtype kept; `(H, W)`, `(H, W, C)` or a volume).

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: an extension outside `extensions`, a NIfTI file without
            nibabel installed, or a file that cannot be decoded (the message
            names the file).

    Example:

    >>> x = keras_medseg.data.scans.io.read_array("images/case1.png")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    _, ext = file_extension(os.path.basename(path), extensions or SCAN_EXTENSIONS)
    if extensions is not None and ext is None:
        raise ValueError(f"Unsupported file type {path!r}; expected one of {', '.join(extensions)}")
    label = "" if what == "File" else f"{what.replace(' file', '')} "
    array = _read_file(path, ext, label, None).array
    if not allow_nonfinite:
        from keras_medseg.utils.finite import check_finite

        check_finite(array, f"{what} {path!r}")
    return array


def _label_dtype(labels):
    lo, hi = int(labels.min()), int(labels.max())
    for dt in (np.uint8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return dt
    return np.int64


def write_image(path, labels, reference):
    """Write a label map (or image) with the geometry of `reference`.

    Args:
        path: str, output file: `.nii`/`.nii.gz` (nibabel; any reference,
            DICOM included), `.nrrd`/`.mha`/`.mhd` (SimpleITK), or
            `.png`/`.tif`/`.npy` (no geometry).
        labels: array with the spatial shape of `reference` (voxel index
            order, as `read_image` returns). Integer arrays are stored with the
            smallest integer type that holds them; float arrays as float32.
        reference: `ImageRecord` whose affine (and NIfTI header, when it has
            one) the output takes; a NIfTI output gets it as both its qform
            and its sform.

    The file is written to a temporary file next to `path` and moved into
    place (atomic; mode from the umask), except `.mhd`/`.nhdr`, whose header
    names a second data file.

    Returns:
        The path written.

    Raises:
        ValueError: `labels` does not have the reference's spatial shape, or
            the extension is unknown (both named).

    Example:
    >>> rec = keras_medseg.data.read_image("ct.nii.gz")  # doctest: +SKIP
    >>> keras_medseg.data.write_image("ct_seg.nii.gz", labels, rec)  # doctest: +SKIP
    """
    path = os.fspath(path)
    labels = np.asarray(labels)
    if not isinstance(reference, ImageRecord):
        raise TypeError(
            f"`reference` must be an ImageRecord from read_image. Received: reference={type(reference).__name__}"
        )
    if labels.shape[: reference.spatial_dims] != reference.shape:
        raise ValueError(
            f"`labels` must have the spatial shape of the reference {reference.path!r}. "
            f"Received: labels.shape={labels.shape}, reference shape={reference.shape}"
        )
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        labels = labels.astype(_label_dtype(labels))  # min and max only: no int64 copy of the whole map
    else:
        labels = labels.astype(np.float32)
    _, ext = image_stem(os.path.basename(path))
    if ext not in NIFTI_EXTENSIONS + ITK_EXTENSIONS + (".npy", ".png", ".tif", ".tiff"):
        raise ValueError(f"Unsupported output file type {path!r}; expected one of .nii, .nii.gz, "
                         f"{', '.join(ITK_EXTENSIONS)}, .npy, .png, .tif, .tiff.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext in (".mhd", ".nhdr"):  # a header and a data file that names it: written in place, not atomically
        _write(path, ext, labels, reference)
        return path
    remove_dead_temporaries(path)  # left by a killed writer of this file
    with atomic_path(path, estimate_bytes=labels.nbytes) as tmp:
        _write(tmp, ext, labels, reference)
    return path


def _write(path, ext, labels, reference):
    if ext in NIFTI_EXTENSIONS:
        import nibabel

        data = labels
        if reference.spatial_dims == 2:
            data = labels.reshape(labels.shape[:2] + (1,) + labels.shape[2:])
        if reference.header is not None and isinstance(reference.header, nibabel.Nifti1Header):
            header = reference.header.copy()
            header.set_data_dtype(data.dtype)
            img = nibabel.Nifti1Image(data, reference.affine, header=header)
            # Keep the reference's qform/sform codes; both forms get the affine it was read with (its sform
            # when it had one), so viewers that prefer either place the label map on the scan.
            img.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
            img.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
            img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
        else:
            img = nibabel.Nifti1Image(data, reference.affine)
            img.set_qform(reference.affine, code=1)  # scanner coordinates
            img.set_sform(reference.affine, code=1)
        nibabel.save(img, path)
    elif ext in ITK_EXTENSIONS:
        import SimpleITK as sitk

        d = reference.spatial_dims
        arr = labels.transpose(list(range(d))[::-1] + list(range(d, labels.ndim)))
        image = sitk.GetImageFromArray(arr, isVector=labels.ndim > d)
        direction = _LPS @ np.asarray(reference.direction)
        origin = _LPS @ np.asarray(reference.origin)
        image.SetSpacing([float(s) for s in reference.spacing])
        image.SetOrigin([float(v) for v in origin[:d]])
        image.SetDirection([float(v) for v in direction[:d, :d].ravel()])
        sitk.WriteImage(image, path, True)
    elif ext == ".npy":
        with open(path, "wb") as f:
            np.save(f, labels)
    else:
        import skimage.io

        skimage.io.imsave(path, labels, check_contrast=False)

