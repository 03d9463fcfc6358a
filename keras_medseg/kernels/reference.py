"""Reference stencils: finite differences and classical image-processing kernels."""

import numbers

import numpy as np

from keras_medseg.utils.validation import check_spatial_dims

_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}

#: Spectral family of each reference (see `keras_medseg.kernels.identify`).
#: Singular values of a periodic convolution do not change under circular
#: shifts, reflections and axis permutations of the kernel, so forward and
#: backward differences along any axis share one spectrum, as do the central
#: differences (and the Sobel kernels) along different axes.
SPECTRAL_FAMILIES = {
    "identity": "identity",
    "laplacian": "laplacian",
    "edge": "edge",
    "gaussian_blur": "gaussian_blur",
    "local_mean": "local_mean",
    "sharpen": "sharpen",
}
for _ax in "zyx":
    SPECTRAL_FAMILIES[f"forward_difference_{_ax}"] = "one_sided_difference"
    SPECTRAL_FAMILIES[f"backward_difference_{_ax}"] = "one_sided_difference"
    SPECTRAL_FAMILIES[f"central_difference_{_ax}"] = "central_difference"
    SPECTRAL_FAMILIES[f"sobel_{_ax}"] = "sobel"


def spectral_family(name):
    """The spectral family of a reference name (the name itself if unknown)."""
    return SPECTRAL_FAMILIES.get(name, name)


def _line(values, axis, d):
    shape = [1] * d
    shape[axis] = len(values)
    return np.asarray(values, dtype="float64").reshape(shape)


def _embed(small, size):
    """Centre a 3^d stencil inside a size^d array."""
    d = small.ndim
    out = np.zeros((size,) * d)
    off = (size - small.shape[0]) // 2
    out[tuple(slice(off, off + s) for s in small.shape)] = small
    return out


def reference_kernels(size=3, spatial_dims=2):
    """Reference kernels `{name: array (size,)*spatial_dims}` (float64).

    Numerical-analysis stencils: `identity`, `laplacian` (5-point in 2D,
    7-point in 3D), `edge` (8-neighbour edge detector, 26-neighbour in 3D),
    `forward_difference_<axis>`, `backward_difference_<axis>`,
    `central_difference_<axis>` (`D^+`, `D^-`, `D^0` with `h = 1`) and
    `sobel_<axis>`; image-processing kernels: `gaussian_blur` (binomial,
    normalised to sum 1), `local_mean` (box filter) and `sharpen`
    (`identity - laplacian`). Axes are named `y, x` in 2D and `z, y, x` in
    3D. The weights are cross-correlation weights (what Keras convolutions
    apply). For `size > 3` the 3-point stencils are centred in a zero
    array while `gaussian_blur` and `local_mean` use the full size.

    Args:
        size: odd int >= 3, kernel size per axis. Defaults to 3.
        spatial_dims: 2 or 3. Defaults to 2.

    Returns:
        dict name -> NumPy array of shape `(size,) * spatial_dims`.

    Raises:
        ValueError: even or too small `size`, `spatial_dims` not 2 or 3.

    Example:

    >>> refs = keras_medseg.kernels.reference_kernels(3)
    >>> refs["laplacian"]

    Reference:
        J. Actor, "Identification of Kernels in a Convolutional Neural Network".
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 3 or size % 2 == 0:
        raise ValueError(f"`size` must be an odd int >= 3. Received: size={size!r}")
    d = check_spatial_dims(spatial_dims)
    size = int(size)
    centre = (1,) * d
    identity = np.zeros((3,) * d)
    identity[centre] = 1.0

    def along(a, values):
        """`values` along axis a, the centre tap along every other axis."""
        k = _line(values, a, d)
        for b in range(d):
            if b != a:
                k = k * _line([0.0, 1.0, 0.0], b, d)
        return k

    laplacian = sum(along(a, [1.0, -2.0, 1.0]) for a in range(d))
    edge = -np.ones((3,) * d)
    edge[centre] = 3 ** d - 1
    refs = {"identity": identity, "laplacian": laplacian, "edge": edge}
    binom = np.array([1.0])
    for _ in range(size - 1):
        binom = np.convolve(binom, [1.0, 1.0])
    gauss = np.ones((size,) * d)
    for a in range(d):
        gauss = gauss * _line(binom / binom.sum(), a, d)
    refs["gaussian_blur"] = gauss
    refs["local_mean"] = np.full((size,) * d, 1.0 / size ** d)
    refs["sharpen"] = identity - laplacian
    names = _AXIS_NAMES[d]
    for a in range(d):
        refs[f"forward_difference_{names[a]}"] = along(a, [0.0, -1.0, 1.0])
        refs[f"backward_difference_{names[a]}"] = along(a, [-1.0, 1.0, 0.0])
        refs[f"central_difference_{names[a]}"] = along(a, [-0.5, 0.0, 0.5])
        sobel = _line([-1.0, 0.0, 1.0], a, d)
        for b in range(d):
            if b != a:
                sobel = sobel * _line([1.0, 2.0, 1.0], b, d)
        refs[f"sobel_{names[a]}"] = sobel
    return {k: (v if v.shape[0] == size else _embed(v, size)) + 0.0 for k, v in refs.items()}
