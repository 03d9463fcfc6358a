"""Geometry of scans: reorient to a canonical frame and back, resample to a spacing and back.

Arrays are in voxel index order `(i, j, k)` with a 4x4 `affine` from voxel
index to RAS+ mm (see `keras_medseg.data.read_image`). Reorientation is exact
(nibabel's orientation algebra); resampling uses scipy.ndimage and is checked
against SimpleITK in the tests. `to_model_space` / `from_model_space` chain
both for one scan and undo them onto the exact original grid. The public names
are re-exported by `keras_medseg.data.scans.preprocess`.
"""

import dataclasses

import numpy as np

__all__ = [
    "SpaceChange",
    "check_same_grid",
    "from_model_space",
    "reorient",
    "resample",
    "resample_to_grid",
    "to_model_space",
    "undo_reorient",
]

# ---------------------------------------------------------------- one grid for an image and its labels


def check_same_grid(image, labels, tolerance=0.01):
    """Refuse a label map that does not lie voxel for voxel on its image's grid (one line naming both files).

    The rule `evaluate`, volume training and the folder loader share: the spatial shapes are equal, and the
    two affines put every corner voxel of the grid at the same place within `tolerance` voxels (1 % of the
    smallest voxel size by default). A label map shifted by millimetres, resampled onto another grid, or
    stored with its axes swapped (even with an affine that says so: the voxels then pair differently) is
    refused; resample it onto the image first (nearest neighbour), e.g. with
    `keras_medseg.data.scans.geometry.resample_to_grid(labels, label_affine, image_shape, image_affine, order=0)`.

    Args:
        image, labels: `ImageRecord`s (`keras_medseg.data.read_image`) with `shape`, `affine`, `spacing`, `path`.
        tolerance: float, the largest corner distance accepted, as a fraction of the smallest voxel size
            (default 0.01).

    Raises:
        ValueError: different spatial shapes, or a corner distance over the tolerance (in mm, named).

    Example:

    >>> img = keras_medseg.data.read_image("images/p1.nii.gz")  # doctest: +SKIP
    >>> lab = keras_medseg.data.read_image("labels/p1.nii.gz")  # doctest: +SKIP
    >>> keras_medseg.data.scans.geometry.check_same_grid(img, lab)  # doctest: +SKIP
    """
    if tuple(image.shape) != tuple(labels.shape):
        raise ValueError(f"Label map {labels.path!r} has shape {tuple(labels.shape)} but its image {image.path!r} "
                         f"has {tuple(image.shape)}; resample the label map onto the image first.")
    shape = tuple(image.shape)[:3]
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape], indexing="ij")).reshape(len(shape), -1)
    corners = np.vstack([corners, np.zeros((3 - len(shape), corners.shape[1])), np.ones(corners.shape[1])])
    gap = float(np.linalg.norm(((np.asarray(image.affine) - np.asarray(labels.affine)) @ corners)[:3], axis=0).max())
    limit = tolerance * float(min(image.spacing))
    if gap > limit:
        raise ValueError(
            f"Label map {labels.path!r} does not lie on its image's grid {image.path!r}: a corner voxel is "
            f"{gap:.3g} mm from the image's (more than {limit:.3g} mm; shifted, resampled or with swapped axes). "
            "Resample the label map onto the image first (nearest neighbour).")


# ---------------------------------------------------------------- orientation


def _inverse_ornt(ornt):
    inv = np.zeros_like(ornt)
    for i, (axis, flip) in enumerate(ornt):
        inv[int(axis)] = (i, flip)
    return inv


def reorient(array, affine, orientation="RAS"):
    """Permute and flip the first three axes so the array runs along `orientation`.

    Exact (no interpolation). Trailing axes (channels) are left alone.

    Args:
        array: array `(i, j, k, ...)` in voxel index order.
        affine: `(4, 4)` voxel -> RAS+ mm.
        orientation: str, 3-letter axis code of the target frame (default
            "RAS": axis 0 runs to the Right, 1 Anterior, 2 Superior).

    Returns:
        `(array, affine, ornt)`: the reoriented array (a view when possible),
        its affine, and the nibabel orientation transform that
        `undo_reorient` inverts.

    Raises:
        ValueError: `array` has fewer than 3 axes, or a bad `orientation`.

    Example:
    >>> ras, ras_affine, ornt = keras_medseg.data.scans.geometry.reorient(rec.array, rec.affine)  # doctest: +SKIP

    Reference: nibabel.orientations (io_orientation, ornt_transform).
    """
    from nibabel import orientations as nio

    array = np.asarray(array)
    if array.ndim < 3:
        raise ValueError(f"`array` must have 3 spatial axes to reorient. Received: array.shape={array.shape}")
    try:
        target = nio.axcodes2ornt(tuple(str(orientation).upper()))
    except Exception as exc:
        raise ValueError(
            f"`orientation` must be a 3-letter code such as 'RAS'. Received: orientation={orientation!r}"
        ) from exc
    start = nio.io_orientation(np.asarray(affine, dtype=float))
    ornt = nio.ornt_transform(start, target)
    out = nio.apply_orientation(array, ornt)
    new_affine = np.asarray(affine, dtype=float) @ nio.inv_ornt_aff(ornt, array.shape[:3])
    return out, new_affine, ornt


def undo_reorient(array, ornt):
    """Bring an array produced on a `reorient`-ed grid back to the original axis order.

    Args:
        array: array on the reoriented grid (channels may follow).
        ornt: the transform returned by `reorient`.

    Returns:
        The array in the original voxel index order (exact inverse).
    """
    from nibabel import orientations as nio

    return nio.apply_orientation(np.asarray(array), _inverse_ornt(np.asarray(ornt)))


# ---------------------------------------------------------------- resampling


def resample_to_grid(array, affine, shape, target_affine, order=1, mode="nearest", cval=0.0):
    """Sample `array` (on `affine`) at the voxel centres of another grid.

    Each output voxel `m` takes the value at the world point
    `target_affine @ m`, i.e. at input index `inv(affine) @ target_affine @ m`
    (spline interpolation of the given `order`: 0 nearest, 1 linear, 3 cubic).

    Args:
        array: `(*S)` or `(*S, C)` array, spatial axes first (as many as the
            affine's, 3 for volumes or 2 for images with a 3x3 affine).
        affine: `(d+1, d+1)` voxel -> world of `array`.
        shape: spatial shape of the output grid.
        target_affine: `(d+1, d+1)` voxel -> world of the output grid.
        order: int, 0 for label maps, 1 (default) or 3 for images.
        mode: scipy.ndimage boundary mode (default "nearest": points just
            outside the input take the edge value).
        cval: fill value for `mode="constant"`.

    Returns:
        array `(*shape[, C])`; float32 for `order > 0`, the input dtype for
        `order == 0`.

    Reference: scipy.ndimage.affine_transform; checked against SimpleITK's
    ResampleImageFilter in the tests.
    """
    from scipy import ndimage

    array = np.asarray(array)
    affine = np.asarray(affine, dtype=float)
    d = affine.shape[0] - 1
    if array.ndim not in (d, d + 1):
        raise ValueError(
            f"`array` must have {d} spatial axes (+ optional channels). Received: array.shape={array.shape}"
        )
    if order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"`order` must be an int in 0..5. Received: order={order!r}")
    shape = tuple(int(s) for s in shape)
    m = np.linalg.inv(affine) @ np.asarray(target_affine, dtype=float)
    matrix, offset = m[:d, :d], m[:d, d]
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-12):
        matrix = np.diag(matrix).copy()  # axis-aligned: scipy's faster separable path
    out_dtype = array.dtype if order == 0 else np.float32
    src = array if order == 0 or array.dtype in (np.float32, np.float64) else array.astype(np.float32)

    def one(channel):
        return ndimage.affine_transform(
            channel, matrix, offset=offset, output_shape=shape, order=order, mode=mode, cval=cval, output=out_dtype
        )

    if array.ndim == d:
        return one(src)
    return np.stack([one(src[..., c]) for c in range(array.shape[-1])], axis=-1)


def resample(array, affine, spacing, order=1, shape=None):
    """Resample to voxel size `spacing` (mm), keeping the first voxel centre and the axis directions.

    Args:
        array: `(*S)` or `(*S, C)`, spatial axes first.
        affine: `(d+1, d+1)` voxel -> world of `array`.
        spacing: sequence of float, target mm per spatial axis.
        order: 0 for labels (nearest), 1 (default, linear) or 3 for images.
        shape: output spatial shape; default `round(S * old / new)`, at least 1.

    Returns:
        `(array, affine)` on the new grid (a new array: a copy, float32 for
        `order > 0`, when the grid already has that spacing and shape).
        `resample_to_grid(out, new_affine, S, affine, order)` goes back to
        the exact original grid.

    Raises:
        ValueError: `spacing` does not have one positive value per spatial axis.

    Example:
    >>> from keras_medseg.data.scans.geometry import resample
    >>> iso, iso_affine = resample(rec.array, rec.affine, (1.0, 1.0, 1.0))  # doctest: +SKIP
    """
    affine = np.asarray(affine, dtype=float)
    d = affine.shape[0] - 1
    spacing = np.asarray([float(s) for s in spacing])
    if spacing.shape != (d,) or np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"`spacing` must hold {d} positive mm values. Received: spacing={tuple(spacing.tolist())}")
    old = np.sqrt((affine[:d, :d] ** 2).sum(axis=0))
    scale = spacing / old
    in_shape = np.asarray(np.shape(array)[:d])
    if shape is None:
        shape = tuple(int(max(1, round(n / s))) for n, s in zip(in_shape, scale))
    new_affine = affine.copy()
    new_affine[:d, :d] = affine[:d, :d] @ np.diag(scale)
    if tuple(shape) == tuple(int(n) for n in in_shape) and np.allclose(new_affine, affine):
        # Already on the target grid (the tolerance `from_model_space` uses): a copy, no interpolation pass
        # (identical for order 0 and 1; order >= 2 skips a spline round trip that changes values by ~1e-7).
        array = np.asarray(array)
        return (array.copy() if order == 0 else array.astype(np.float32)), new_affine
    return resample_to_grid(array, affine, shape, new_affine, order=order), new_affine


# ---------------------------------------------------------------- model space


@dataclasses.dataclass
class SpaceChange:
    """What `to_model_space` did to a scan, so `from_model_space` can undo it exactly."""

    original_shape: tuple
    original_affine: np.ndarray
    ornt: object
    reoriented_shape: tuple
    reoriented_affine: np.ndarray
    model_shape: tuple
    model_affine: np.ndarray


def _spatial_affine(affine, d):
    affine = np.asarray(affine, dtype=float)
    if d == 3:
        return affine
    keep = [0, 1, 3]
    return affine[np.ix_(keep, keep)]


def to_model_space(array, affine, spacing=None, orientation=None, order=1, spatial_dims=3):
    """Reorient (3D) and resample a scan to the frame and voxel size a model was trained on.

    Args:
        array: `(*S)` or `(*S, C)` in voxel index order (an `ImageRecord.array`).
        affine: `(4, 4)` voxel -> RAS+ mm (`ImageRecord.affine`).
        spacing: target mm per spatial axis, or None to keep the voxel grid.
        orientation: target axis code such as "RAS" (3D only), or None.
        order: interpolation order (1 for images, 0 for labels).
        spatial_dims: 2 or 3.

    Returns:
        `(array, change)`: the array on the model grid and a `SpaceChange`
        that `from_model_space` inverts.
    """
    d = int(spatial_dims)
    array = np.asarray(array)
    aff = _spatial_affine(affine, d)
    original_shape = tuple(array.shape[:d])
    ornt = None
    if orientation is not None and d == 3:
        array, aff_r, ornt = reorient(array, aff, orientation)
    else:
        aff_r = aff
    reoriented_shape = tuple(array.shape[:d])
    if spacing is not None:
        array, aff_m = resample(array, aff_r, spacing, order=order)
    else:
        aff_m = aff_r
    change = SpaceChange(original_shape, aff, ornt, reoriented_shape, aff_r, tuple(array.shape[:d]), aff_m)
    return array, change


def from_model_space(array, change, order=1):
    """Bring an array on the model grid (image, probabilities or labels) back to the scan's own grid.

    Args:
        array: `(*model_shape)` or `(*model_shape, C)`.
        change: the `SpaceChange` from `to_model_space`.
        order: 0 for labels, 1 for probabilities/images.

    Returns:
        array `(*original_shape[, C])` on the exact original voxel grid (same
        affine), ready for `write_image`.
    """
    array = np.asarray(array)
    d = len(change.original_shape)
    if tuple(array.shape[:d]) != tuple(change.model_shape):
        raise ValueError(
            f"`array` must lie on the model grid {change.model_shape}. Received: array.shape={array.shape}"
        )
    if tuple(change.model_shape) != tuple(change.reoriented_shape) or not np.allclose(
        change.model_affine, change.reoriented_affine
    ):
        array = resample_to_grid(
            array, change.model_affine, change.reoriented_shape, change.reoriented_affine, order=order
        )
    if change.ornt is not None:
        array = undo_reorient(array, change.ornt)
    return array
