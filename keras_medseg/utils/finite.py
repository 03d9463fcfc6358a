"""`check_finite`: refuse NaN/Inf inputs once, at the entry point, naming the array and the count.

One NaN pixel in a training image makes every loss `nan` for the whole run;
an all-NaN image given to an explainer yields a map of NaNs. Entry points
(training and evaluation data, explain inputs, kernels, volumes) call
`check_finite(array, "name")` once, so the user reads which array and how many
values are bad instead of a `nan` loss or a blank map.
"""

import numpy as np

__all__ = ["check_finite"]


def check_finite(array, name):
    """Raise `ValueError` when `array` holds NaN or Inf values; return it unchanged otherwise.

    Args:
        array: array-like (NumPy or anything `np.asarray` takes).
        name: str, how the message names the array or its file.

    Returns:
        `array` (unchanged), so calls can be chained.

    Raises:
        ValueError: "`name` has 3 NaN and 1 Inf values (of 4096); ..." with
            the index of the first bad sample for batched arrays.

    Example:

    >>> check_finite(np.ones(3), "x")
    array([1., 1., 1.])
    """
    a = np.asarray(array)
    if a.dtype.kind not in "fc":  # integers and booleans are always finite
        return array
    finite = np.isfinite(a)
    if finite.all():
        return array
    n_nan = int(np.isnan(a).sum())
    n_inf = int(a.size - finite.sum() - n_nan)
    first = np.argwhere(~finite)[0]
    where = f" (first at index {tuple(int(i) for i in first)})" if a.ndim else ""
    raise ValueError(
        f"{name} has {n_nan} NaN and {n_inf} Inf values (of {a.size}){where}; inputs must be finite. "
        "Fix or drop those images, or fill the gaps (e.g. np.nan_to_num) before passing them."
    )
