"""Image + mask folders: the `DIR` data of `keras-medseg train/evaluate`.

Layout (file names are matched by their stem, the name without extension)::

    DIR/
      images/  case001.png  case002.png ...   (or .tif/.tiff, .npy, .nii/.nii.gz)
      masks/   case001.png  case002.png ...   (same stems; integer class ids, 0 = background)

* 2D images: PNG/TIFF/NumPy arrays `(H, W)` or `(H, W, C)`; 3D volumes: NumPy
  `(D, H, W)` / `(D, H, W, C)` or NIfTI (needs `nibabel`, extra `medical`).
  Give `spatial_dims=3` for volumes (a 3-axis array is read as `(D, H, W)`
  instead of `(H, W, C)`).
* Masks have the spatial shape of their image and hold class ids, read by
  the one mask rule of `keras_medseg.data.standardize_labels` over all the
  masks of the folder: 0/255 and 0/65535 binary masks become 0/1, an
  `ignore_value` becomes -1, non-contiguous ids become `0..K-1` (with a
  warning giving the mapping); 255 next to other ids, fractional or negative
  values are refused with the file and values named.
* All images share one shape (the arrays are stacked into one batch).

Every problem (no `images/` or `masks/` folder, an image without a mask or a
mask without an image, a file that cannot be read, a shape mismatch) raises
`FileNotFoundError`/`ValueError` naming the file.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from keras_medseg.data.scans import io
from keras_medseg.data.scans.io import IMAGE_EXTENSIONS, file_extension
from keras_medseg.data.labels import standardize_labels


def _stem(filename):
    return file_extension(filename, IMAGE_EXTENSIONS)


def read_array(path):
    """Read one data-folder file (PNG, TIFF, `.npy`, NIfTI) with `keras_medseg.data.scans.io.read_array`."""
    return io.read_array(path, extensions=IMAGE_EXTENSIONS)


def _list(folder):
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Data folder is missing `{os.path.basename(folder)}/`: expected {folder!r} "
            "(layout: DIR/images/<name>.<ext> + DIR/masks/<name>.<ext>)."
        )
    files = {}
    for f in sorted(os.listdir(folder)):
        stem, _ = _stem(f)
        if stem is None or f.startswith("."):
            continue
        if stem in files:
            raise ValueError(f"Two files with the same name stem {stem!r} in {folder!r}: "
                             f"{os.path.basename(files[stem])!r} and {f!r}")
        files[stem] = os.path.join(folder, f)
    return files


def load_folder(directory: str | os.PathLike, spatial_dims: int = 2, normalize: bool = True,
                ignore_value: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load `DIR/images` + `DIR/masks` into `(images, masks)` arrays.

    Args:
        directory: the data folder (see the module docstring for the layout).
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
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Data folder not found: {directory!r}")
    images = _list(os.path.join(directory, "images"))
    masks = _list(os.path.join(directory, "masks"))
    if not images:
        raise FileNotFoundError(
            f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {os.path.join(directory, 'images')!r}"
        )
    for stem, path in images.items():
        if stem not in masks:
            raise FileNotFoundError(
                f"Image {path!r} has no mask: expected {os.path.join(directory, 'masks', stem)}.<ext>"
            )
    for stem, path in masks.items():
        if stem not in images:
            raise ValueError(f"Mask {path!r} has no matching image in {os.path.join(directory, 'images')!r}")
    xs, ys, names, ref_shape = [], [], [], None
    for stem in sorted(images):
        x = read_array(images[stem]).astype(np.float32)
        y = read_array(masks[stem])
        if x.ndim == spatial_dims:
            x = x[..., None]
        if x.ndim != spatial_dims + 1:
            raise ValueError(
                f"Image {images[stem]!r} has shape {x.shape}; expected {spatial_dims} spatial axes "
                "plus an optional channel axis."
            )
        if y.ndim == spatial_dims + 1 and y.shape[-1] in (3, 4):  # RGB(A) mask saved by an editor
            y = y[..., 0]
        if y.shape != x.shape[:-1]:
            raise ValueError(
                f"Mask {masks[stem]!r} has shape {y.shape} but its image {images[stem]!r} has spatial "
                f"shape {x.shape[:-1]}."
            )
        if ref_shape is None:
            ref_shape = x.shape
        elif x.shape != ref_shape:
            raise ValueError(
                f"Image {images[stem]!r} has shape {x.shape}, different from the first image's {ref_shape}; "
                "all images in a folder must have one shape."
            )
        if normalize:
            x = (x - x.mean()) / (x.std() + 1e-6)
        xs.append(x)
        ys.append(y)
        names.append(stem)
    ys, values = standardize_labels(ys, ignore_value=ignore_value, names=[repr(masks[s]) for s in names])
    if values != list(range(len(values))):
        warnings.warn(f"Masks in {directory!r} hold the ids {values}; they are used as classes "
                      f"{list(range(len(values)))} in that order.", stacklevel=2)
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int32), names
