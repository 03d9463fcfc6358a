"""One rule for the class ids in masks, used by folders, arrays and volumes.

`standardize_labels` turns the masks of a dataset into class ids
`0..K-1` (and `IGNORE_INDEX` = -1 for voxels to leave out), by this rule:

1. Values must be finite integers (a float mask with fractions, e.g. a soft
   or resampled-with-interpolation mask, is refused).
2. Voxels equal to `ignore_value` (when given) become `IGNORE_INDEX` (-1).
3. Binary masks saved by image editors: when the values found are only
   `{0, 255}` or only `{0, 65535}`, 255/65535 is the foreground, class 1.
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

import numpy as np

__all__ = ["IGNORE_INDEX", "standardize_labels"]

IGNORE_INDEX = -1
_EDITOR_MAX = (255, 65535)


def _values_str(values, limit=12):
    values = [int(v) if float(v).is_integer() else float(v) for v in values]
    head = ", ".join(str(v) for v in values[:limit])
    return f"[{head}{', ...' if len(values) > limit else ''}] ({len(values)} distinct)"


def _unique(mask, name):
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise ValueError(f"Mask {name} must hold numeric class ids. Received dtype {mask.dtype}.")
    values = np.unique(mask)
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
        max_classes: int, most distinct ids accepted (default 64).

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
    [0, 255]
    >>> y.tolist()
    [[0, 1], [1, 0]]
    """
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
        if ignore_value is not None:
            values = values[values != ignore_value]
        neg = values[values < 0]
        if neg.size:
            raise ValueError(
                f"Mask {name} has negative class ids {_values_str(neg)}; found values {_values_str(values)}. "
                "Pass ignore_value=<v> if one of them marks voxels to ignore."
            )
        for v in values.tolist():
            found.setdefault(v, name)
        arrays.append(mask)
    values = sorted(found)
    if label_values is not None:
        label_values = [int(v) for v in label_values]
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
                    f"{big} is often an 'ignore' border; pass ignore_value={big}, or "
                    f"label_values={sorted(set([0] + values))} to make it a class."
                )
        if len(values) > max_classes:
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
        keep = np.ones(mask.shape, bool) if ignore_value is None else m != ignore_value
        if label_values == list(range(len(label_values))):
            y[keep] = m[keep]
        else:
            ids = np.asarray(label_values)
            order = np.argsort(ids)
            pos = np.searchsorted(ids[order], m[keep])
            y[keep] = np.asarray([lut_index[int(v)] for v in ids[order]], dtype=np.int32)[pos]
        out.append(y)
    return (out[0] if single else out), label_values
