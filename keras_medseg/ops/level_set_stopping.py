"""Stopping terms of the level-set balloon: an edge threshold and a seeded region test, on `keras.ops`.

Running a balloon-driven level set to convergence floods wherever the edge
indicator `g` does not drop near zero at the object's border. The classical
remedies, both computed once per image before the time loop:

* `edge_threshold` / `threshold_propagation`: the balloon acts only where `g`
  is above a threshold `t` (scikit-image's morphological geodesic active
  contour applies its balloon where `g > t`); here the propagation image is
  `P = max(g - t, 0) / (1 - t)`, continuous, 0 on every edge stronger than the
  threshold. `t` is picked per image from robust statistics of the gradient
  magnitude (median plus `k` scaled median absolute deviations: an edge is an
  outlier of the gradient distribution), so it holds for HU, MRI units and
  photographs alike.
* `seed_region_mask`: the balloon acts only on the seed's side of the image's
  Otsu threshold (widened by a margin), the region test of threshold-based
  level sets (ITK's `ThresholdSegmentationLevelSetImageFilter` gates its
  propagation by an intensity interval; here the interval comes from Otsu's
  two-class split and the side the seed lies on).
* `seed_interval_mask`: the balloon acts only where the smoothed intensity
  lies within `mean +- k * std` of the seed's own pixels (the confidence
  interval of ITK's `ConfidenceConnectedImageFilter`, one pass), the std
  floored at a fraction of Otsu's class-mean gap so that a small, flat seed
  does not freeze the front. Otsu's split alone cannot tell two tissues of
  one class apart (the contrast-filled aorta from the muscle around it in CT,
  the ventricles from the white matter in T1: both on the body's side of the
  air/body threshold); the seed's own statistics can.

All functions work per image of a batch `(N, *S, C)`, on every Keras backend.

Reference: V. Caselles, R. Kimmel, G. Sapiro, "Geodesic Active Contours" (1997); P. Marquez-Neila, L. Baumela,
L. Alvarez, "A Morphological Approach to Curvature-based Evolution of Curves and Surfaces" (2014) for the
balloon threshold; N. Otsu, "A Threshold Selection Method from Gray-Level Histograms" (1979); F. Hampel,
"The influence curve and its role in robust estimation" (1974) for the median absolute deviation.
"""

from keras import ops

from keras_medseg.utils.validation import check_positive

#: `auto` edge threshold: gradient magnitudes above median + AUTO_THRESHOLD_K * 1.4826 * MAD are edges
#: (picked on the tuning half of `benchmarks/level_set_real.py`)
AUTO_THRESHOLD_K = 9.0
#: seeded region test: margin around Otsu's threshold, as a fraction of the gap between the two class means
#: (picked on the tuning half of `benchmarks/level_set_real.py`)
REGION_MARGIN = 0.3
#: gradient magnitudes at or below this fraction of the image's largest are left out of the statistics (a flat
#: background, e.g. the zeros around a skull-stripped brain, would otherwise make the median 0)
FLAT_FRACTION = 1e-3
#: seed interval: half-width in standard deviations of the seed's intensity (None: no interval test)
#: (picked on the tuning half of `benchmarks/level_set_real.py`)
CONFIDENCE_K = 4.0
#: seed interval: the std is at least this fraction of the gap between Otsu's two class means
CONFIDENCE_FLOOR = 0.05


def _flat(x):
    """`(N, M)` view of `(N, *S, ...)`, with N known statically where it is (so loops keep their shapes)."""
    n = x.shape[0] if x.shape[0] is not None else ops.shape(x)[0]
    return ops.reshape(x, (n, -1))


def _median_of_first(sorted_values, count):
    """Median of the first `count[n]` entries of each sorted row `(N, M)` (count >= 1); returns `(N,)`."""
    lo = ops.expand_dims(ops.cast((count - 1) // 2, "int32"), -1)
    hi = ops.expand_dims(ops.cast(count // 2, "int32"), -1)
    a = ops.take_along_axis(sorted_values, lo, axis=1)[:, 0]
    b = ops.take_along_axis(sorted_values, hi, axis=1)[:, 0]
    return 0.5 * (a + b)


def robust_edge_level(magnitude, k=AUTO_THRESHOLD_K, flat_fraction=FLAT_FRACTION):
    """Per-image gradient level above which a pixel counts as an edge: `median + k * 1.4826 * MAD`.

    The statistics use the pixels whose magnitude exceeds `flat_fraction`
    times the image's largest (an image without any such pixel gives its
    largest magnitude).

    Args:
        magnitude: non-negative `(N, *S)` or `(N, *S, 1)` gradient magnitudes.
        k: number of scaled median absolute deviations above the median, default `AUTO_THRESHOLD_K` (9.0).
        flat_fraction: default `FLAT_FRACTION` (1e-3).

    Returns:
        `(N,)` levels, in the units of `magnitude`.

    Raises:
        ValueError: `k < 0`.

    Example:
    >>> level = keras_medseg.ops.level_set_stopping.robust_edge_level(np.random.rand(2, 32, 32))

    Reference: F. Hampel, "The influence curve and its role in robust estimation" (1974). Checked against
    NumPy's median on the same pixels.
    """
    check_positive(k, "k", allow_zero=True)
    flat = _flat(magnitude)
    big = ops.max(flat, axis=1, keepdims=True)
    valid = flat > flat_fraction * big
    count = ops.sum(ops.cast(valid, "int32"), axis=1)
    empty = count == 0
    count = ops.maximum(count, 1)
    inf = ops.full_like(flat, float("inf"))
    # invalid entries sort to the end; an image with no valid entry falls back to its maximum
    values = ops.where(valid, flat, inf)
    values = ops.where(ops.expand_dims(empty, -1), ops.broadcast_to(big, ops.shape(flat)), values)
    median = _median_of_first(ops.sort(values, axis=1), count)
    deviation = ops.where(valid, ops.abs(flat - ops.expand_dims(median, -1)), inf)
    deviation = ops.where(ops.expand_dims(empty, -1), ops.zeros_like(flat), deviation)
    mad = _median_of_first(ops.sort(deviation, axis=1), count)
    return median + ops.convert_to_tensor(k * 1.4826, dtype=median.dtype) * mad


def threshold_propagation(g, threshold):
    """Propagation image `P = max(g - t, 0) / (1 - t)` (0 where `g <= t`, `g` where `t = 0`).

    Args:
        g: edge indicator `(N, *S, 1)` in (0, 1].
        threshold: `t` in [0, 1): a float or a per-image `(N,)` tensor.

    Returns:
        `(N, *S, 1)`.
    """
    g = ops.convert_to_tensor(g)
    t = ops.convert_to_tensor(threshold, dtype=g.dtype)
    if len(t.shape) == 1:
        t = ops.reshape(t, (-1,) + (1,) * (len(g.shape) - 1))
    return ops.relu(g - t) / (1.0 - t)


def otsu_threshold(x):
    """Otsu's threshold of each image of `x` `(N, *S)` or `(N, *S, 1)`, and the two class means.

    Exact over the sorted values (every split between consecutive values
    is tried, no histogram): the split maximises the between-class variance
    `w0 w1 (mu0 - mu1)^2`; the threshold `t` is the midpoint between the
    largest value of the low class and the smallest of the high class.

    Returns:
        `(t, mu_low, mu_high)`, three `(N,)` tensors (a constant image gives
        its value three times).

    Example:
    >>> t, low, high = keras_medseg.ops.level_set_stopping.otsu_threshold(np.random.rand(1, 32, 32))

    Reference: N. Otsu, "A Threshold Selection Method from Gray-Level Histograms" (1979). Checked against
    scikit-image's `threshold_otsu` (a 256-bin histogram: the same threshold to within one bin).
    """
    flat = _flat(x)
    m = ops.shape(flat)[1]
    values = ops.sort(flat, axis=1)
    shift = ops.mean(values, axis=1, keepdims=True)  # centred sums lose less precision in float32
    centred = values - shift
    cumulative = ops.cumsum(centred, axis=1)
    total = cumulative[:, -1:]
    n0 = ops.cast(ops.arange(1, m + 1), values.dtype)[None]
    n1 = ops.cast(m, values.dtype) - n0
    mu0 = cumulative / n0
    mu1 = (total - cumulative) / ops.maximum(n1, 1.0)
    between = n0 * n1 * ops.square(mu0 - mu1)
    # a split only between two different values; the last position (empty class 1) never wins
    distinct = ops.concatenate([values[:, 1:] > values[:, :-1], ops.zeros_like(values[:, :1], dtype="bool")], axis=1)
    between = ops.where(distinct, between, -ops.ones_like(between))
    best = ops.expand_dims(ops.cast(ops.argmax(between, axis=1), "int32"), -1)
    following = ops.minimum(best + 1, m - 1)
    t = 0.5 * (ops.take_along_axis(values, best, axis=1)[:, 0] + ops.take_along_axis(values, following, axis=1)[:, 0])
    low = ops.take_along_axis(mu0, best, axis=1)[:, 0] + shift[:, 0]
    high = ops.take_along_axis(mu1, best, axis=1)[:, 0] + shift[:, 0]
    constant = ops.logical_not(ops.any(distinct, axis=1))
    high = ops.where(constant, t, high)
    return t, low, high


def seed_region_mask(image, initial_level_set, margin=REGION_MARGIN):
    """Where the balloon may push: the seed's side of Otsu's threshold, widened by `margin`.

    Otsu's threshold `t` splits each image into a low and a high class
    (means `mu_low`, `mu_high`); the seed (`initial_level_set < 0`) lies on
    the side most of its pixels are on. The mask is 1 on that side and up to
    `margin * (mu_high - mu_low)` beyond `t` (partial-volume rims, texture),
    0 farther away.

    Args:
        image: `(N, *S, C)` (channels averaged), usually Gaussian-smoothed.
        initial_level_set: `(N, *S, 1)`, negative inside the seeds.
        margin: non-negative float, default `REGION_MARGIN` (0.3).

    Returns:
        `(N, *S, 1)` mask in {0, 1} of the image's dtype (all ones for an image whose seed is empty).

    Raises:
        ValueError: `margin < 0`.

    Example:
    >>> mask = keras_medseg.ops.level_set_stopping.seed_region_mask(image, u0)  # (1, 64, 64, 1) each

    Reference: N. Otsu, "A Threshold Selection Method from Gray-Level Histograms" (1979).
    """
    check_positive(margin, "margin", allow_zero=True)
    grey = ops.mean(image, axis=-1, keepdims=True)
    t, low, high = otsu_threshold(grey)
    shape = (-1,) + (1,) * (len(grey.shape) - 1)
    delta = ops.reshape(ops.convert_to_tensor(margin, dtype=grey.dtype) * (high - low), shape)
    t = ops.reshape(t, shape)
    seed = ops.cast(ops.cast(initial_level_set, grey.dtype) < 0, grey.dtype)
    above = ops.cast(grey > t, grey.dtype)
    seeded = ops.sum(_flat(seed), axis=1)
    high_side = ops.reshape(2.0 * ops.sum(_flat(above * seed), axis=1) >= seeded, shape)
    allowed = ops.where(high_side, grey > t - delta, grey <= t + delta)
    allowed = ops.logical_or(allowed, ops.reshape(seeded == 0, shape))
    return ops.cast(allowed, grey.dtype)


def seed_interval_mask(image, initial_level_set, k=CONFIDENCE_K, floor=CONFIDENCE_FLOOR):
    """Where the balloon may push: intensities within `k` standard deviations of the seed's mean.

    With `m` and `s` the mean and standard deviation of the (channel-averaged)
    image over the seed pixels (`initial_level_set < 0`, all seeds of an image
    pooled) and `mu_low`, `mu_high` Otsu's two class means of the image, the
    mask is 1 where `|I - m| <= k * max(s, floor * (mu_high - mu_low))` and 0
    elsewhere. The floor keeps a small seed on a smooth image (a template, a
    flat organ in HU) from allowing only its own few grey levels.

    Args:
        image: `(N, *S, C)` (channels averaged), usually Gaussian-smoothed.
        initial_level_set: `(N, *S, 1)`, negative inside the seeds.
        k: positive float, default `CONFIDENCE_K` (4.0).
        floor: non-negative float, default `CONFIDENCE_FLOOR` (0.05).

    Returns:
        `(N, *S, 1)` mask in {0, 1} of the image's dtype (all ones for an image whose seed is empty).

    Raises:
        ValueError: `k <= 0` or `floor < 0`.

    Example:
    >>> mask = keras_medseg.ops.level_set_stopping.seed_interval_mask(image, u0)  # (1, 64, 64, 1) each

    Reference: the confidence-connected region growing of ITK (`ConfidenceConnectedImageFilter`, ITK Software
    Guide, "Region Growing"), one pass without its re-estimation; N. Otsu (1979) for the class means. Checked
    against the same formula in NumPy (`tests/ops/test_level_set_stopping.py`).
    """
    check_positive(k, "k")
    check_positive(floor, "floor", allow_zero=True)
    grey = ops.mean(image, axis=-1, keepdims=True)
    shape = (-1,) + (1,) * (len(grey.shape) - 1)
    seed = ops.cast(ops.cast(initial_level_set, grey.dtype) < 0, grey.dtype)
    seeded = ops.sum(_flat(seed), axis=1)
    count = ops.maximum(seeded, 1.0)
    mean = ops.sum(_flat(seed * grey), axis=1) / count
    centred = grey - ops.reshape(mean, shape)
    std = ops.sqrt(ops.sum(_flat(seed * ops.square(centred)), axis=1) / count)
    _, low, high = otsu_threshold(grey)
    spread = ops.maximum(std, ops.convert_to_tensor(floor, dtype=grey.dtype) * (high - low))
    half = ops.reshape(ops.convert_to_tensor(k, dtype=grey.dtype) * spread, shape)
    allowed = ops.logical_or(ops.abs(centred) <= half, ops.reshape(seeded == 0, shape))
    return ops.cast(allowed, grey.dtype)


def front_area(u):
    """Size of the zero level set of `u` `(N, *S, 1)` in voxels (a length in 2D, an area in 3D), per image `(N,)`.

    Half the number of voxels that have a face neighbour on the other side
    (`u < 0` against `u >= 0`): one per voxel of front for a front along a
    grid axis, about 0.85 per voxel of length on a circle. Unlike a count of
    the voxels with `|u|` below some width it does not depend on `|grad u|`,
    which grows without bound at a stopped front when the level set is not
    reinitialised.
    """
    inside = u[..., 0] < 0
    d = len(inside.shape) - 1
    marks = None
    for axis in range(1, d + 1):
        a = [slice(None)] * (d + 1)
        b = [slice(None)] * (d + 1)
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        change = ops.cast(ops.not_equal(inside[tuple(a)], inside[tuple(b)]), u.dtype)
        before = [(0, 0)] * (d + 1)
        after = [(0, 0)] * (d + 1)
        before[axis], after[axis] = (1, 0), (0, 1)
        both = ops.maximum(ops.pad(change, before), ops.pad(change, after))
        marks = both if marks is None else ops.maximum(marks, both)
    return 0.5 * ops.sum(_flat(marks), axis=1)


def front_speed(u_before, u_after, steps):
    """Mean speed of the zero level set between two level sets, in voxels per step, per image `(N,)`.

    Each voxel's inside fraction is read from the level set as
    `H(u) = clip(0.5 - u, 0, 1)` (exact for a signed distance: the fraction of
    the voxel on the negative side of a planar front), so
    `sum |H(u_after) - H(u_before)|` is the volume the front swept, sub-voxel
    motion included; divided by the front's size (`front_area` of
    `u_before`) and by `steps` it is the front's mean normal speed. Values far
    inside or outside (`|u| >= 0.5`) do not count, so a stopped front whose
    inside keeps sinking under the balloon has speed 0.

    Args:
        u_before, u_after: `(N, *S, 1)` level sets `steps` steps apart.
        steps: number of steps between them (> 0).

    Returns:
        `(N,)` speeds (the swept volume over `steps` for an image without a front).
    """
    inside_before = ops.clip(0.5 - u_before, 0.0, 1.0)
    inside_after = ops.clip(0.5 - u_after, 0.0, 1.0)
    swept = ops.sum(_flat(ops.abs(inside_after - inside_before)), axis=1)
    return swept / (ops.maximum(front_area(u_before), 1.0) * float(steps))
