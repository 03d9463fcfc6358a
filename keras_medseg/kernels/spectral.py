"""Spectral identification of convolution kernels (singular values of `A[K]`)."""

import csv
import dataclasses
import numbers

import numpy as np

from keras_medseg.kernels.reference import reference_kernels, spectral_family

INDETERMINATE = "indeterminate"


def _check_grid(grid_shape, kernel_shape=None):
    grid = tuple(grid_shape) if isinstance(grid_shape, (tuple, list)) else None
    if grid is None or len(grid) not in (2, 3) or any(
        isinstance(g, bool) or not isinstance(g, numbers.Integral) or g < 1 for g in grid
    ):
        raise ValueError(
            f"`grid_shape` must be a tuple of 2 or 3 positive ints. Received: grid_shape={grid_shape!r}"
        )
    if kernel_shape is not None:
        if len(kernel_shape) < len(grid):
            raise ValueError(
                f"`kernel` must have at least {len(grid)} axes for grid_shape={grid}. "
                f"Received: kernel.shape={tuple(kernel_shape)}"
            )
        k = tuple(kernel_shape[-len(grid):])
        if any(a > b for a, b in zip(k, grid)):
            raise ValueError(
                f"The kernel {k} must fit in the grid. Received: grid_shape={grid}, kernel.shape={tuple(kernel_shape)}"
            )
    return tuple(int(g) for g in grid)


def conv_singular_values(kernel, grid_shape):
    """Singular values of the periodic convolution operator `A[K]` on a grid.

    `A[K]` maps an image `u` on the periodic grid to `K * u` (the
    correlation Keras applies, with circular boundaries). It is
    block-circulant, diagonalised by the discrete Fourier transform, so its
    singular values are `|FFT(K zero-padded to the grid)|` (Sedghi, Gupta,
    Long 2019); shifts of the kernel only change phases. Sorted descending,
    they equal `numpy.linalg.svd` of the explicit `prod(grid) x prod(grid)`
    matrix.

    Args:
        kernel: array `(*batch, *k)`; the last `len(grid_shape)` axes are the
            kernel (2D `(k, k)` or 3D `(k, k, k)`, any sizes that fit).
        grid_shape: `(H, W)` or `(D, H, W)`, the image grid.

    Returns:
        float64 array `(*batch, prod(grid_shape))`, sorted descending.

    Raises:
        ValueError: bad `grid_shape` or a kernel larger than the grid.

    Example:

    >>> s = keras_medseg.kernels.conv_singular_values(np.ones((3, 3)) / 9, (16, 16))

    Reference:
        J. Actor, "Identification of Kernels in a Convolutional Neural Network"
        (SVD comparison of kernels).
    """
    kernel = np.asarray(kernel, dtype="float64")
    grid = _check_grid(grid_shape, kernel.shape)
    d = len(grid)
    axes = tuple(range(kernel.ndim - d, kernel.ndim))
    spectrum = np.abs(np.fft.fftn(kernel, s=grid, axes=axes))
    spectrum = spectrum.reshape(kernel.shape[: kernel.ndim - d] + (-1,))
    return -np.sort(-spectrum, axis=-1)


def normalized_spectrum(kernel, grid_shape):
    """Singular values divided by the largest one (zeros for a zero kernel)."""
    s = conv_singular_values(kernel, grid_shape)
    top = s[..., :1]
    return np.divide(s, top, out=np.zeros_like(s), where=top > 0)


@dataclasses.dataclass
class Identification:
    """Result of `identify` for one kernel.

    Attributes:
        label: the spectral family of the nearest reference, or "indeterminate".
        nearest: the nearest family, even when indeterminate.
        distance: `||s_K - s_F||_1 / n` of normalised spectra to `nearest`.
        deviation: `max_i |s_K,i - s_F,i|` to `nearest` (compared with the tolerance).
        distances: dict family -> distance.
        equivalent: reference names of the nearest family (same spectrum).
    """

    label: str
    nearest: str
    distance: float
    deviation: float
    distances: dict
    equivalent: tuple


def reference_spectra(kernel_shape, grid_shape, references=None):
    """`(families, spectra (F, n), members)`: normalised spectra of the reference families."""
    d = len(grid_shape)
    k = kernel_shape[-d:]
    if references is None:
        if len(set(k)) != 1 or k[0] % 2 == 0 or k[0] < 3:
            raise ValueError(
                "Built-in references exist for square kernels of odd size >= 3; pass `references=` "
                f"for others. Received: kernel.shape={tuple(kernel_shape)}"
            )
        references = reference_kernels(k[0], spatial_dims=d)
    families, members, spectra = [], {}, []
    for name, ref in references.items():
        fam = spectral_family(name)
        if fam not in members:
            members[fam] = []
            families.append(fam)
            spectra.append(normalized_spectrum(np.asarray(ref), grid_shape))
        members[fam].append(name)
    return families, np.stack(spectra), {f: tuple(m) for f, m in members.items()}


def _default_grid(d):
    return (8,) * d


def identify_many(kernels, grid_shape=None, references=None, tolerance=0.1, chunk=32768):
    """Vectorised `identify` for a stack `(M, *k)`.

    Returns:
        `(labels (M,) str, distances (M, F), deviations (M,), families)`:
        `distances` are the L1 distances `||s_K - s_F||_1 / n` to every
        family, `deviations` the largest `|s_K,i - s_F,i|` to the nearest one.
    """
    kernels = np.asarray(kernels, dtype="float64")
    from keras_medseg.utils.finite import check_finite

    check_finite(kernels, "`kernels`")  # an all-NaN kernel has no spectrum; do not label it like a zero kernel
    if kernels.ndim not in (3, 4):
        raise ValueError(f"`kernels` must be a stack (M, k, k) or (M, k, k, k). Received: shape={kernels.shape}")
    d = kernels.ndim - 1
    grid = _check_grid(_default_grid(d) if grid_shape is None else grid_shape, kernels.shape)
    if len(grid) != d:
        raise ValueError(f"`grid_shape` must have {d} entries for {d}D kernels. Received: grid_shape={grid}")
    tolerance = _check_tolerance(tolerance)
    families, ref_spectra, _ = reference_spectra(kernels.shape, grid, references)
    ref32 = ref_spectra.astype("float32")
    n = ref_spectra.shape[1]
    m = len(kernels)
    dist = np.empty((m, len(families)))
    deviation = np.empty(m)
    for start in range(0, m, chunk):
        s = normalized_spectrum(kernels[start:start + chunk], grid).astype("float32")
        for j, r in enumerate(ref32):
            dist[start:start + chunk, j] = np.abs(s - r).sum(axis=1) / n
        best = dist[start:start + chunk].argmin(axis=1)
        deviation[start:start + chunk] = np.abs(s - ref32[best]).max(axis=1)
    best = dist.argmin(axis=1)
    zero = ~np.any(kernels.reshape(m, -1) != 0, axis=1)
    labels = np.asarray(families, dtype=object)[best]
    labels[(deviation > tolerance) | zero] = INDETERMINATE
    return labels.astype(str), dist, deviation, families


def _check_tolerance(tolerance):
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 <= tolerance:
        raise ValueError(f"`tolerance` must be a number >= 0. Received: tolerance={tolerance!r}")
    return float(tolerance)


def identify(kernel, grid_shape=None, references=None, tolerance=0.1):
    """Label a kernel by the reference with the nearest singular-value spectrum.

    Definition (our precise reading of J. Actor's "label as indeterminate if
    not within 10% of the largest singular value"): let `s_K` be the
    singular values of `A[K]` on the periodic grid, sorted descending and
    divided by the largest one (so a scaled or negated kernel keeps its
    label), and `n` their number. The nearest reference family is

        F* = argmin_F ||s_K - s_F||_1        (reported as distance / n),

    and the label is `F*` when every singular value is within `tolerance`
    (10%) of the largest singular value of the reference spectrum,

        max_i |s_K,i - s_F*,i| <= tolerance,

    else "indeterminate" (always for an all-zero kernel). A mean (L1)
    threshold would be too loose: sorted spectra of random kernels sit on
    average within 5% of the Laplacian's, while the max criterion labels
    about 94% of Gaussian-noise 3x3 kernels indeterminate (8x8 grid) and
    the references stay at least 0.11 apart. References with identical
    spectra (a shift, reflection or axis permutation of each other, e.g.
    forward and backward differences along any axis) form one family,
    because singular values cannot tell them apart.

    Args:
        kernel: `(k, k)` or `(k, k, k)` array.
        grid_shape: grid of the operator; default None is `(8,) * d`.
        references: optional dict name -> kernel; default
            `reference_kernels(k, spatial_dims=d)`.
        tolerance: float >= 0, the threshold above. Defaults to 0.1.

    Returns:
        `Identification` (label, nearest family, distance, all distances,
        equivalent reference names).

    Raises:
        ValueError: kernel not 2D/3D, NaN/Inf entries, does not fit the grid,
            or no built-in references for its size (even or 1x1).

    Example:

    >>> keras_medseg.kernels.identify(2.5 * keras_medseg.kernels.reference_kernels()["laplacian"]).label
    'laplacian'

    Reference:
        J. Actor, "Identification of Kernels in a Convolutional Neural Network"
        (spectral distance `||Sigma_K - Sigma_F||_1`).
    """
    kernel = np.asarray(kernel, dtype="float64")
    from keras_medseg.utils.finite import check_finite

    check_finite(kernel, "`kernel`")
    if kernel.ndim not in (2, 3):
        raise ValueError(f"`kernel` must be 2D (k, k) or 3D (k, k, k). Received: kernel.shape={kernel.shape}")
    grid = _default_grid(kernel.ndim) if grid_shape is None else grid_shape
    labels, dist, deviation, families = identify_many(kernel[None], grid, references, tolerance)
    _, _, members = reference_spectra(kernel.shape, _check_grid(grid), references)
    j = int(dist[0].argmin())
    return Identification(
        label=str(labels[0]),
        nearest=families[j],
        distance=float(dist[0, j]),
        deviation=float(deviation[0]),
        distances={f: float(v) for f, v in zip(families, dist[0])},
        equivalent=members[families[j]],
    )


def identify_model(model, grid_shape=None, tolerance=0.1, references=None, progress=False):
    """Spectral labels of every k x k (x k) kernel of every convolution layer.

    Args:
        model: a Keras model.
        grid_shape: operator grid: a tuple, or an int for that many cells per
            axis of each layer's kernels (2D and 3D alike); default `(8,) * d`.
        tolerance: float, see `identify`. Defaults to 0.1.
        references: optional dict name -> kernel (for one kernel size).
        progress: bool, tqdm progress bar over layers. Defaults to False.

    Returns:
        list of records (plain dicts), one per layer with odd square kernels
        of size >= 3: `layer`, `layer_type`, `kernel_size`, `n_kernels`,
        `median_deviation` (see `identify`), and one count per label (every reference family
        and "indeterminate"). Write them with `write_csv`, plot them with
        `plot_label_counts`.

    Example:

    >>> records = keras_medseg.kernels.identify_model(model)
    >>> keras_medseg.kernels.write_csv(records, "kernels.csv")

    Reference:
        J. Actor, "Identification of Kernels in a Convolutional Neural Network"
        (kernel analysis results per layer).
    """
    from keras_medseg.kernels.extract import extract_kernels

    layers = extract_kernels(model)
    iterator = layers
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(layers, desc="identify kernels", unit="layer")
    records = []
    for lk in iterator:
        k = lk.kernel_size
        if references is None and (len(set(k)) != 1 or k[0] % 2 == 0 or k[0] < 3):
            continue
        grid = (grid_shape,) * len(k) if isinstance(grid_shape, (int, np.integer)) else grid_shape
        labels, dist, deviation, families = identify_many(lk.kernels, grid, references, tolerance)
        rec = {
            "layer": lk.layer,
            "layer_type": lk.layer_type,
            "kernel_size": "x".join(str(s) for s in k),
            "n_kernels": int(len(labels)),
            "median_deviation": float(np.median(deviation)) if len(labels) else float("nan"),
        }
        for fam in list(families) + [INDETERMINATE]:
            rec[fam] = int(np.sum(labels == fam))
        records.append(rec)
    return records


def write_csv(records, path):
    """Write a list of dict records (e.g. from `identify_model`) as CSV; returns `path`."""
    if not records:
        raise ValueError("`records` is empty: the model has no kernels to identify.")
    fields = []
    for rec in records:
        fields += [k for k in rec if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval=0)
        writer.writeheader()
        writer.writerows(records)
    return path


def plot_label_counts(records, ax=None, normalize=True):
    """Stacked bar plot of spectral labels per layer (fractions by default); returns the Axes."""
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("`records` is empty: the model has no kernels to identify.")
    fixed = {"layer", "layer_type", "kernel_size", "n_kernels", "median_deviation"}
    labels = []
    for rec in records:
        labels += [k for k in rec if k not in fixed and k not in labels]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5, 0.5 * len(records) + 2), 4))
    bottom = np.zeros(len(records))
    xs = np.arange(len(records))
    cmap = plt.get_cmap("tab20")
    for i, lab in enumerate(labels):
        vals = np.array([rec.get(lab, 0) for rec in records], dtype="float64")
        if normalize:
            vals = vals / np.maximum([rec["n_kernels"] for rec in records], 1)
        color = "lightgray" if lab == INDETERMINATE else cmap(i % 20)
        ax.bar(xs, vals, bottom=bottom, label=lab, color=color)
        bottom += vals
    ax.set_xticks(xs)
    ax.set_xticklabels([rec["layer"] for rec in records], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("fraction of kernels" if normalize else "kernels")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.figure.tight_layout()
    return ax
