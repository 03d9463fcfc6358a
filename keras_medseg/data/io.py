"""Reading image and array files: the one place where keras-medseg opens an image file.

`read_array(path)` reads PNG, JPEG, TIFF (scikit-image), NumPy `.npy`/`.npz`
and NIfTI (nibabel) files into NumPy arrays, with one error line that names
the file when it is missing, of an unknown type or cannot be decoded. The
data-folder loader (`keras_medseg.data.folder`), the `patches extract` and
the `explain` commands all read through it.

`is_patch_store(path)` tells whether a `--data` value names an HDF5 patch
store (`keras_medseg.data.wsi.PatchStore`) by its extension.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "file_extension", "is_patch_store", "read_array"]

# the file types of a data folder (`keras_medseg.data.folder`)
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")
_KNOWN = IMAGE_EXTENSIONS + (".npz", ".jpg", ".jpeg")


def file_extension(filename, extensions=_KNOWN):
    """`(stem, extension)` of `filename` for the longest matching extension (case-insensitive), else `(None, None)`.

    Example:

    >>> file_extension("case1.nii.gz")
    ('case1', '.nii.gz')
    """
    lower = filename.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext):
            return filename[: -len(ext)], ext
    return None, None


def is_patch_store(data):
    """Whether a `--data` value names an HDF5 patch store (by its `.h5` / `.hdf5` extension)."""
    return isinstance(data, (str, os.PathLike)) and os.fspath(data).lower().endswith((".h5", ".hdf5"))


def read_array(path: str | os.PathLike, what: str = "File", extensions: tuple | None = None) -> np.ndarray:
    """Read one image, mask or array file as a NumPy array.

    Args:
        path: str or path-like; `.npy`, `.npz` (its first array), `.nii` /
            `.nii.gz` (scaled voxel values, through nibabel) or an image that
            scikit-image reads (PNG, JPEG, TIFF, ...).
        what: str, the word that starts the "not found" message and names the
            file in a decoding error, e.g. "image file" or "mask file"
            (default "File").
        extensions: tuple of accepted extensions (lower case, with the dot),
            or None to accept anything scikit-image can decode (default None).

    Returns:
        The array as stored (image dtype kept; `(H, W)`, `(H, W, C)` or a volume).

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: an extension outside `extensions`, a NIfTI file without
            nibabel installed, or a file that cannot be decoded (the message
            names the file).

    Example:

    >>> x = keras_medseg.data.io.read_array("images/case1.png")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    _, ext = file_extension(os.path.basename(path), extensions or _KNOWN)
    if extensions is not None and ext is None:
        raise ValueError(f"Unsupported file type {path!r}; expected one of {', '.join(extensions)}")
    label = "" if what == "File" else f"{what.replace(' file', '')} "
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return data[data.files[0]]
        if ext in (".nii", ".nii.gz"):
            try:
                import nibabel
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ValueError(
                    f"Reading NIfTI file {path!r} needs nibabel: pip install 'keras-medseg[medical]'"
                ) from exc
            return np.asarray(nibabel.load(path).dataobj)
        import skimage.io

        return np.asarray(skimage.io.imread(path))
    except ValueError as exc:
        if path in str(exc):
            raise
        raise ValueError(f"Cannot read {label}{path!r} (corrupt or not a {ext or 'known image'} file): {exc}") from exc
    except Exception as exc:  # decoder errors come in many types
        raise ValueError(f"Cannot read {label}{path!r} (corrupt or not a {ext or 'known image'} file): {exc}") from exc
