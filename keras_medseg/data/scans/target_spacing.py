"""The voxel size to train on, from the data set: `spacing="median"` (`--spacing median`).

Scans of one data set rarely share a voxel size (CT: 0.6-1.0 mm in-plane, 0.6-5 mm
slices), and a convolution learns in voxels, so a model trained on each scan's own grid
sees one organ at several sizes. `target_spacing` picks one voxel size from the training
cases' headers as nnU-Net does (Isensee, Jaeger, Kohl, Petersen, Maier-Hein, "nnU-Net:
a self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 2021):

* per axis of the model grid (after the reorientation to `orientation`, when given),
  the median of the cases' voxel sizes;
* except for a strongly anisotropic data set, where the median slice distance is more
  than 3 times the largest in-plane one *and* the median scan has fewer than a third as
  many voxels along that axis as along the smallest other axis: that axis takes the 10th
  percentile of its voxel sizes (but not below the largest in-plane voxel size), so
  thick-slice scans are not interpolated down to a few slices.

`grid_summary` says, when no spacing is given, how far apart the cases' voxel sizes
are (`train_volumes` warns above 10 %). NIfTI voxel sizes come from the header alone
(nibabel, no voxels read); other formats are read with `keras_medseg.data.read_image`.
"""

import os

import numpy as np

__all__ = ["case_grids", "grid_summary", "target_spacing"]


def _grid(path, orientation):
    """`(spacing (3,), shape (3,))` of one scan on the model grid's axes (reoriented to `orientation`)."""
    from keras_medseg.data.scans.modalities import _nifti_grid

    path = path[0] if isinstance(path, (list, tuple)) else path  # per-modality files share the first's grid
    header = _nifti_grid(path)  # NIfTI: the header alone
    if header is not None:
        affine, shape = header.affine, header.shape
    else:
        from keras_medseg.data.scans.io import read_image

        rec = read_image(path, spatial_dims=3)
        affine, shape = np.asarray(rec.affine, float), tuple(rec.array.shape[:3])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if orientation is not None:
        from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

        moves = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(orientation)))
        order = np.argsort(moves[:, 0].astype(int))  # the input axis that becomes output axis k
        spacing, shape = spacing[order], tuple(np.asarray(shape)[order])
    return spacing, np.asarray(shape, float)


def _is_nifti(path):
    path = path[0] if isinstance(path, (list, tuple)) else path
    return os.fspath(path).lower().endswith((".nii", ".nii.gz"))


def case_grids(cases, orientation=None, headers_only=False):
    """`(spacings (n, 3) mm, shapes (n, 3) voxels)` of the cases' images on the model grid's axes.

    Args:
        cases: `[{"image": path or (path per modality), ...}]` (`keras_medseg.data.cases.find_cases`).
        orientation: the axis code the scans are reoriented to (e.g. "RAS"), or None (voxel axes).
        headers_only: bool (default False): only the NIfTI cases (no voxels read); n may then be 0.
    """
    grids = [_grid(c["image"], orientation) for c in cases if not headers_only or _is_nifti(c["image"])]
    if not grids:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.stack([g[0] for g in grids]), np.stack([g[1] for g in grids])


def target_spacing(spacings, shapes):
    """One voxel size for a data set (the rule in the module docstring).

    Args:
        spacings: `(n, 3)` voxel sizes in mm of the n training scans, model-grid axes.
        shapes: `(n, 3)` their voxel counts along the same axes.

    Returns:
        tuple of 3 floats (mm).

    Example:

    >>> target_spacing([[0.8, 0.8, 5.0], [0.7, 0.7, 5.0], [0.9, 0.9, 1.0]], [[512, 512, 40]] * 3)
    (0.8, 0.8, 1.8)
    """
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target, size = np.median(spacings, axis=0), np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(target.size) if a != worst]
    coarse = target[worst] > 3 * np.max(target[others])
    few = size[worst] * 3 < np.min(size[others])
    if coarse and few:
        target[worst] = max(float(np.percentile(spacings[:, worst], 10)), float(np.max(target[others])))
    return tuple(round(float(t), 4) for t in target)


def grid_summary(spacings):
    """`(lowest (3,), highest (3,), spread)`: the smallest and largest voxel size per axis and the largest
    ratio highest / lowest over the axes."""
    spacings = np.asarray(spacings, float)
    low, high = spacings.min(axis=0), spacings.max(axis=0)
    return low, high, float(np.max(high / low))
