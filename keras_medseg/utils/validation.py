"""Argument checks shared by ops, layers and models.

Every check raises `ValueError`/`TypeError` with a message that names the
argument and the value received, in the Keras style
(`"... Received: h=-1.0"`), so that users never see a backend traceback for a
mistake in their own input.
"""

import math
import numbers


def _shape_of(x):
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(
            f"Expected a tensor or array with a `shape`. Received an object of type {type(x).__name__}."
        )
    return tuple(shape)


def spatial_rank(x, name, allowed=(2, 3)):
    """Number of spatial axes of a channels-last batch `(N, *spatial, C)`.

    Raises `ValueError` naming `name` when the rank does not give 2 or 3 spatial
    axes (or whatever `allowed` says).
    """
    shape = _shape_of(x)
    d = len(shape) - 2
    if d not in allowed:
        layouts = " or ".join(
            f"{k + 2}D (N, {', '.join('DHW'[3 - k:])}, C)" for k in allowed
        )
        raise ValueError(
            f"`{name}` must be a {layouts} channels-last tensor. "
            f"Received: {name}.shape={shape} (rank {len(shape)})."
        )
    return d


def check_spatial_dims(spatial_dims, name="spatial_dims"):
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"`{name}` must be 2 or 3. Received: {name}={spatial_dims!r}")
    return int(spatial_dims)


def check_positive(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number. Received: {name}={value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}. Received: {name}={value}")
    return value


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")
    return int(value)


def check_odd_sizes(sizes, name):
    """Every entry of a kernel-size tuple must be a positive odd integer."""
    sizes = tuple(int(s) for s in sizes)
    if any(s < 1 or s % 2 == 0 for s in sizes):
        raise ValueError(
            f"`{name}` must have odd sizes along every spatial axis (so the kernel has a centre tap). "
            f"Received: {name} spatial size={sizes}"
        )
    return sizes


def standardize_kernel_size(kernel_size, rank=None, name="kernel_size", minimum=1, ranks=None):
    """The one kernel-size check: an int or a tuple of odd ints -> a tuple of `rank` ints.

    Args:
        kernel_size: int (broadcast to every axis) or tuple/list of ints, one per spatial axis.
        rank: number of spatial axes, or `None` when not known yet (an int then
            gives a 1-tuple and a tuple keeps its length). Default None.
        name: argument name used in error messages. Default "kernel_size".
        minimum: smallest allowed size per axis (3 for finite-difference
            stencils, 1 for plain kernels). Default 1.
        ranks: allowed tuple lengths when `rank` is None (e.g. `(2, 3)`);
            default None = any length.

    Returns:
        tuple of `rank` (or `len(kernel_size)`) odd ints `>= minimum`.

    Raises:
        TypeError: `kernel_size` is not an int or a tuple/list of ints.
        ValueError: wrong number of entries, an even entry or an entry below `minimum`.

    Example:
        >>> standardize_kernel_size(3, 2)
        (3, 3)
    """
    def is_int(k):
        return isinstance(k, numbers.Integral) and not isinstance(k, bool)

    if is_int(kernel_size):
        sizes = (int(kernel_size),) * (rank or 1)
    elif isinstance(kernel_size, (tuple, list)) and kernel_size and all(is_int(k) for k in kernel_size):
        sizes = tuple(int(k) for k in kernel_size)
        if rank is not None and len(sizes) != rank:
            raise ValueError(
                f"`{name}` must have one entry per spatial axis ({rank}). Received: {name}={kernel_size!r}"
            )
        if rank is None and ranks is not None and len(sizes) not in ranks:
            raise ValueError(
                f"`{name}` must be an odd int or a tuple of {' or '.join(str(r) for r in ranks)} odd ints. "
                f"Received: {name}={kernel_size!r}"
            )
    else:
        raise TypeError(f"`{name}` must be an int or a tuple of ints. Received: {name}={kernel_size!r}")
    if any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(
            f"`{name}` must be odd along every spatial axis (so the kernel has a centre tap). "
            f"Received: {name}={kernel_size!r}"
        )
    if min(sizes) < minimum:
        raise ValueError(
            f"`{name}` must be at least {minimum} along every axis so the finite-difference stencil fits. "
            f"Received: {name}={kernel_size!r}"
        )
    return sizes


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")
    return value


def spatial_shape(input_size, spatial_dims, divisible_by=1, allow_none=True, why="", divisible_label=None,
                  name="input_size"):
    """Validate a model's spatial input size and return it as a tuple.

    Args:
        input_size: `None` (any size, if `allow_none`), an int (same size on
            every axis) or one int (or `None`) per spatial axis.
        spatial_dims: 2 or 3.
        divisible_by: every given size must be a multiple of this (e.g.
            `2**depth` for a network that halves the grid `depth` times).
        allow_none: whether free (`None`) sizes are accepted.
        why: explanation appended to the divisibility / None error.
        divisible_label: how the divisor is named in the message, e.g.
            `"2**depth = 8"` (default: the number).
        name: the argument name used in messages.

    Returns:
        tuple of `spatial_dims` ints (or `None` entries).

    Raises:
        ValueError: naming `name` and the value received.
    """
    if input_size is None:
        if allow_none:
            return (None,) * spatial_dims
        raise ValueError(f"`{name}` must be given{': ' + why if why else ''}. Received: {name}=None")
    if isinstance(input_size, numbers.Integral) and not isinstance(input_size, bool):
        input_size = (int(input_size),) * spatial_dims
    if not isinstance(input_size, (tuple, list)) or len(input_size) != spatial_dims:
        raise ValueError(
            f"`{name}` must be None, an int or a tuple of {spatial_dims} ints (one per spatial axis). "
            f"Received: {name}={input_size!r}"
        )
    for s in input_size:
        if s is None and allow_none:
            continue
        if s is None or isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
            raise ValueError(f"`{name}` entries must be positive ints. Received: {name}={input_size!r}")
        if s % divisible_by:
            raise ValueError(
                f"`{name}` must be divisible by {divisible_label or divisible_by} along every axis"
                f"{' (' + why + ')' if why else ''}. "
                f"Received: {name}={tuple(input_size)}"
            )
    return tuple(None if s is None else int(s) for s in input_size)
