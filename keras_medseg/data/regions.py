"""Label maps to overlapping region masks and back, for multi-label (sigmoid) training.

`regions_from_labels(labels, regions)` turns a label map into one 0/1 mask
per region, a region being a set of label values; regions may overlap or
nest. `merge_regions(masks, values)` goes back: each voxel takes the value of
the last region (in the given order) whose mask holds it, so nested regions
listed from the largest to the smallest give the label map again.

The brain-tumour convention (BraTS labels 1 necrosis, 2 oedema, 4 enhancing
tumour) is `BRATS_REGIONS`: whole tumour, tumour core, enhancing tumour;
`merge_regions(masks, [2, 1, 4])` rebuilds its label map.

NumPy only: these prepare targets and read predictions; the losses
(`keras_medseg.losses.MultiLabelDiceCELoss`) and the metric
(`keras_medseg.metrics.MultiLabelDice`) work on the masks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BRATS_REGIONS", "merge_regions", "regions_from_labels"]

BRATS_REGIONS = {"whole_tumour": (1, 2, 4), "tumour_core": (1, 4), "enhancing_tumour": (4,)}


def _region_values(regions):
    if isinstance(regions, dict):
        items = list(regions.items())
    elif isinstance(regions, (list, tuple)):
        items = [(f"region_{i}", r) for i, r in enumerate(regions)]
    else:
        raise TypeError("`regions` must be a dict {name: label values} or a list of label-value lists. "
                        f"Received: regions={regions!r}")
    if not items:
        raise ValueError("`regions` must name at least one region. Received: regions={}")
    out = []
    for name, values in items:
        values = [values] if np.isscalar(values) else list(values)
        if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"Region {name!r} must be a non-empty list of integer label values. "
                             f"Received: {values!r}")
        out.append((str(name), [int(v) for v in values]))
    return out


def regions_from_labels(labels, regions=BRATS_REGIONS, dtype="uint8"):
    """One 0/1 mask per region of a label map, stacked on a new last axis.

    Args:
        labels: integer label map of any shape, e.g. `(D, H, W)` or `(N, D, H, W)`; a trailing axis of 1 is
            dropped.
        regions: `{name: label values}` (in channel order) or a list of label-value lists (default
            `BRATS_REGIONS`: whole tumour {1, 2, 4}, tumour core {1, 4}, enhancing tumour {4}).
        dtype: output dtype (default uint8).

    Returns:
        array `labels.shape + (R,)`: channel `r` is 1 where the label is one of region `r`'s values.

    Raises:
        ValueError: non-integer labels; a region without integer values.

    Example:

    >>> regions_from_labels(np.array([0, 1, 2, 4]))[:, 0].tolist()  # whole tumour
    [0, 1, 1, 1]
    """
    labels = np.asarray(labels)
    if labels.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.dtype.kind not in "iub":
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"`labels` must hold integer label values. Received: dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    return np.stack([np.isin(labels, values) for _, values in _region_values(regions)], axis=-1).astype(dtype)


def merge_regions(masks, values, threshold=0.5, background=0):
    """A label map from region masks or probabilities: each voxel takes the value of its last region.

    Args:
        masks: `(..., R)` 0/1 masks or sigmoid probabilities, one channel per region.
        values: the label value written for each region, in channel order (R ints). With nested regions
            listed from largest to smallest (as `BRATS_REGIONS`), the smaller region's value wins where they
            overlap: `[2, 1, 4]` rebuilds a BraTS label map.
        threshold: a voxel is in a region where its channel is above this (default 0.5).
        background: the value of voxels in no region (default 0).

    Returns:
        int32 label map of shape `masks.shape[:-1]`.

    Raises:
        ValueError: `values` does not give one int per channel.

    Example:

    >>> merge_regions(regions_from_labels(np.array([0, 1, 2, 4])), [2, 1, 4]).tolist()
    [0, 1, 2, 4]
    """
    masks = np.asarray(masks)
    values = list(values) if not np.isscalar(values) else [values]
    if masks.ndim < 1 or len(values) != masks.shape[-1] or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"`values` must give one integer label per region channel ({masks.shape[-1:]}). "
                         f"Received: values={values!r}")
    out = np.full(masks.shape[:-1], int(background), np.int32)
    for r, value in enumerate(values):
        out[masks[..., r] > threshold] = int(value)
    return out
