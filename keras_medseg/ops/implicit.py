"""Implicit (backward-Euler) step of a periodic depthwise convolution, solved by FFT."""

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.validation import check_odd_sizes, check_positive, spatial_rank


def _fft_dtype(dtype):
    """float64 stays float64; everything else (float16, bfloat16, float32) uses float32."""
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def _forward(x, d):
    """Real N-D FFT of `x (..., *S)` over its last `d` axes.

    The real FFT runs along the last axis; that (halved) frequency axis is then
    moved in front of the other spatial axes, which get a complex FFT (`ops.fft`
    for 2D, `ops.fft2` for 3D). Returns `(real, imag)` of shape
    `(..., S_last // 2 + 1, *S[:-1])`.
    """
    real, imag = ops.rfft(x)
    lead = len(x.shape) - d
    perm = list(range(lead)) + [lead + d - 1] + list(range(lead, lead + d - 1))
    real, imag = ops.transpose(real, perm), ops.transpose(imag, perm)
    fft = ops.fft if d == 2 else ops.fft2
    return fft((real, imag))


def _inverse(spectrum, d, last_size):
    """Inverse of `_forward`; `last_size` is the length of the last spatial axis."""
    real, imag = spectrum
    if d == 2:
        # keras.ops has no 1D inverse FFT: ifft(z) = conj(fft(conj(z))) / n.
        n = ops.cast(ops.shape(real)[-1], real.dtype)
        real, imag = ops.fft((real, -imag))
        real, imag = real / n, -imag / n
    else:
        real, imag = ops.ifft2((real, imag))
    lead = len(real.shape) - d
    perm = list(range(lead)) + list(range(lead + 1, lead + d)) + [lead]
    real, imag = ops.transpose(real, perm), ops.transpose(imag, perm)
    return ops.irfft((real, imag), fft_length=last_size)


def _check_h(h):
    """Check a concrete `h` (number or NumPy scalar); symbolic/backend tensors pass unchecked."""
    if isinstance(h, (np.ndarray, np.generic)):
        if h.ndim != 0:
            raise ValueError(f"`h` must be a scalar. Received: h with shape {h.shape}")
        h = h.item()
    if not hasattr(h, "dtype"):
        check_positive(h, "h")


def implicit_conv_solve(b, kernel, h):
    """Solve `(I + h C^T C) Y = b` for a periodic depthwise convolution `C` by FFT.

    `C` is the depthwise ("wrap"-around, periodic) convolution of every channel
    with its own kernel, centred on the kernel's middle tap. Its eigenvectors are
    the Fourier modes, so with `c` the kernel zero-padded to the image size and
    circularly shifted so its centre sits at index 0,

        Y = F^-1( F(b) / (1 + h |F(c)|^2) ).

    `C^T C` is positive semi-definite, so the divisor is >= 1 and the solve is
    always well posed for `h > 0`. The circular shift multiplies `F(c)` by a
    unit-modulus phase only, so `|F(c)|^2` is taken from the zero-padded kernel
    directly (whether `C` is a convolution or a cross-correlation does not
    matter either: both give the same `C^T C`). The FFTs are real-to-complex
    along the last spatial axis and complex along the others; 3D uses `ops.rfft`
    + `ops.fft2` (separable 1D FFTs) since `keras.ops` has no 3D FFT. The
    computation runs in float32 (float64 for float64 input) and the result is
    cast back to the dtype of `b`. Differentiable with respect to `b`, `kernel`
    and `h` on every backend.

    Args:
        b: right-hand side, `(N, H, W, C)` (2D) or `(N, D, H, W, C)` (3D).
        kernel: depthwise kernel `(kh, kw, C)` (2D) or `(kd, kh, kw, C)` (3D),
            odd size along every spatial axis, not larger than the image.
        h: step size, a positive scalar (Python number or scalar tensor;
            tensors are not checked for positivity).

    Returns:
        `Y`, same shape and dtype as `b`.

    Raises:
        ValueError: `b` not 2D/3D channels-last, `kernel` of the wrong rank,
            even kernel size, kernel larger than the image, kernel channels
            different from the channels of `b`, or `h <= 0`.

    Example:

    >>> import numpy as np
    >>> b = np.random.rand(2, 16, 16, 3).astype("float32")
    >>> kernel = np.random.rand(3, 3, 3).astype("float32")
    >>> y = keras_medseg.ops.implicit_conv_solve(b, kernel, h=0.5)
    >>> tuple(y.shape)
    (2, 16, 16, 3)

    Reference:
        Haber, Lensink, Treister, Ruthotto, "IMEXnet: A forward stable deep
        neural network", ICML 2019.
    """
    d = spatial_rank(b, "b")
    _check_h(h)
    b_shape = tuple(b.shape)
    k_shape = tuple(getattr(kernel, "shape", ()))
    if len(k_shape) != d + 1:
        raise ValueError(
            f"`kernel` must have shape (*kernel_size, channels) with {d} spatial axes to match "
            f"`b` of shape {b_shape}. Received: kernel.shape={k_shape}"
        )
    check_odd_sizes(k_shape[:-1], "kernel")
    channels = b_shape[-1]
    if channels is not None and k_shape[-1] != channels:
        raise ValueError(
            f"`kernel` must have one depthwise filter per channel of `b` ({channels}). "
            f"Received: kernel.shape={k_shape} for b.shape={b_shape}"
        )
    spatial = b_shape[1:-1]
    if any(s is None for s in spatial):
        raise ValueError(
            f"`implicit_conv_solve` needs static spatial sizes for the FFT. Received: b.shape={b_shape}"
        )
    if any(k > s for k, s in zip(k_shape[:-1], spatial)):
        raise ValueError(
            f"`kernel` must not be larger than the image along any spatial axis. "
            f"Received: kernel.shape={k_shape} for image size {spatial}"
        )

    out_dtype = b.dtype
    dtype = _fft_dtype(b.dtype)
    b = ops.cast(b, dtype)
    kernel = ops.cast(kernel, dtype)
    # Python numbers straight to `dtype` (a detour through float32 would round h).
    h = ops.cast(h, dtype) if hasattr(h, "dtype") else ops.convert_to_tensor(h, dtype=dtype)

    # Channels first so the spatial axes are the last ones for the FFT.
    b = ops.transpose(b, [0, d + 1] + list(range(1, d + 1)))
    kernel = ops.transpose(kernel, [d] + list(range(d)))
    kernel = ops.pad(kernel, [(0, 0)] + [(0, s - k) for s, k in zip(spatial, k_shape[:-1])])

    k_real, k_imag = _forward(kernel, d)
    denom = 1.0 + h * (ops.square(k_real) + ops.square(k_imag))  # (C, *freq)
    b_real, b_imag = _forward(b, d)  # (N, C, *freq)
    y = _inverse((b_real / denom, b_imag / denom), d, spatial[-1])
    y = ops.transpose(y, [0] + list(range(2, d + 2)) + [1])
    return ops.cast(y, out_dtype)
