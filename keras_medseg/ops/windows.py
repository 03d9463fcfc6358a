"""(Shifted-)window multi-head self-attention on channels-last 2D/3D grids, and its index helpers.

One N-D code path: a grid `(N, *S, C)` is cut into non-overlapping windows of
`prod(window)` tokens (`window_partition`), every window attends within itself
with a learned relative position bias, and the windows are put back
(`window_merge`). With `window=None` the whole grid is one window: plain
global self-attention over all tokens (the ViT encoder of UNETR). With a shift,
the grid is rolled by `-shift` first and an additive mask (`shifted_window_mask`)
keeps tokens that were not neighbours before the roll from attending to each
other, as in the Swin Transformer.

The index and mask helpers return NumPy arrays: they depend only on static
sizes, so they are computed once when a layer is built.

Reference: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", ICCV 2021; Dosovitskiy et al., "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale", ICLR 2021.
"""

import itertools
import math

import keras
import numpy as np
from keras import ops

MASK_VALUE = -100.0  # added to the logits of token pairs from different regions (Swin's value; exp(-100) ~ 4e-44)


def _as_tuple(value, d, name):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * d
    value = tuple(value)
    if len(value) != d or any(isinstance(v, bool) or int(v) != v or v < 0 for v in value):
        raise ValueError(f"`{name}` must be an int or a tuple of {d} non-negative ints. Received: {name}={value!r}")
    return tuple(int(v) for v in value)


def effective_window(spatial, window_size, shift_size):
    """The window and shift used on a grid of size `spatial`.

    An axis no longer than the window is covered by one window of its own
    length and is not shifted (as in the Swin Transformer's reference code).

    Args:
        spatial: grid size, one int per axis.
        window_size: configured window, one int per axis.
        shift_size: configured shift, one int per axis (0 = no shift).

    Returns:
        `(window, shift)`, two tuples of ints.
    """
    window, shift = [], []
    for s, w, h in zip(spatial, window_size, shift_size):
        if s <= w:
            window.append(int(s))
            shift.append(0)
        else:
            window.append(int(w))
            shift.append(int(h))
    return tuple(window), tuple(shift)


def window_partition(x, window):
    """`(N, *S, C)` -> `(N * prod(S // window), prod(window), C)`: non-overlapping windows, row-major.

    Args:
        x: channels-last 2D/3D tensor whose static spatial sizes are multiples of `window`.
        window: one int per spatial axis.

    Returns:
        The windows of all images, image-major, each flattened to `prod(window)` tokens.
    """
    spatial = tuple(int(s) for s in x.shape[1:-1])
    d = len(spatial)
    channels = x.shape[-1]
    split = []
    for s, w in zip(spatial, window):
        split += [s // w, w]
    x = ops.reshape(x, (-1, *split, channels))
    perm = (0,) + tuple(1 + 2 * k for k in range(d)) + tuple(2 + 2 * k for k in range(d)) + (2 * d + 1,)
    x = ops.transpose(x, perm)
    return ops.reshape(x, (-1, math.prod(window), channels))


def window_merge(windows, window, spatial):
    """Inverse of `window_partition`: `(N * nW, prod(window), C)` -> `(N, *spatial, C)`."""
    d = len(spatial)
    counts = tuple(int(s) // int(w) for s, w in zip(spatial, window))
    channels = windows.shape[-1]
    x = ops.reshape(windows, (-1, *counts, *window, channels))
    perm = [0]
    for k in range(d):
        perm += [1 + k, 1 + d + k]
    perm.append(2 * d + 1)
    x = ops.transpose(x, tuple(perm))
    return ops.reshape(x, (-1, *spatial, channels))


def shifted_window_mask(spatial, window, shift):
    """Additive attention mask `(nW, n, n)` of the shifted windows on a grid `spatial` (NumPy, float32).

    After rolling the grid by `-shift`, each axis has three regions
    (`[0, s - w)`, `[s - w, s - shift)`, `[s - shift, s)`); two tokens in one
    window attend to each other (mask 0) only if they come from the same
    region on every axis, otherwise the mask is `MASK_VALUE`.

    Args:
        spatial: grid size (multiples of `window`).
        window: window size per axis.
        shift: shift per axis (all zeros gives an all-zero mask).

    Returns:
        `np.ndarray` of shape `(prod(spatial // window), prod(window), prod(window))`.
    """
    d = len(spatial)
    regions = np.zeros(spatial, dtype=np.int64)
    for k in range(d):
        s, w, h = spatial[k], window[k], shift[k]
        axis_id = np.zeros(s, dtype=np.int64)
        if h > 0:
            axis_id[s - w:s - h] = 1
            axis_id[s - h:] = 2
        shape = [1] * d
        shape[k] = s
        regions = regions * 3 + axis_id.reshape(shape)
    windows = _np_window_partition(regions[None, ..., None], window)[..., 0]  # (nW, n)
    different = windows[:, :, None] != windows[:, None, :]
    return np.where(different, MASK_VALUE, 0.0).astype("float32")


def _np_window_partition(x, window):
    spatial = x.shape[1:-1]
    d = len(spatial)
    split = []
    for s, w in zip(spatial, window):
        split += [s // w, w]
    x = x.reshape((x.shape[0], *split, x.shape[-1]))
    perm = (0,) + tuple(1 + 2 * k for k in range(d)) + tuple(2 + 2 * k for k in range(d)) + (2 * d + 1,)
    return x.transpose(perm).reshape((-1, int(np.prod(window)), x.shape[-1]))


def relative_position_index(window, table_window=None):
    """`(n, n)` indices into a relative position bias table (NumPy, int32).

    The table has `prod(2 * table_window - 1)` rows, one per relative offset
    `(dz, dy, dx)` with `|d_k| < table_window[k]`, row-major. Entry `(i, j)`
    is the row of the offset from token `j` to token `i` of a window of size
    `window`; `window` may be smaller than `table_window` (a grid smaller than
    the configured window), its offsets then index the centre of the table.

    Args:
        window: the window the tokens come from, one int per axis.
        table_window: the window the table was sized for (default `window`).
    """
    table_window = tuple(window) if table_window is None else tuple(table_window)
    if any(w > t for w, t in zip(window, table_window)):
        raise ValueError(f"`window` must not exceed `table_window`. Received: window={window}, "
                         f"table_window={table_window}")
    coords = np.array(list(itertools.product(*[range(w) for w in window])), dtype=np.int64)  # (n, d)
    rel = coords[:, None, :] - coords[None, :, :] + (np.array(table_window) - 1)  # in [0, 2t - 2]
    strides = np.cumprod([1] + [2 * t - 1 for t in table_window[::-1]])[:-1][::-1]
    return (rel * strides).sum(-1).astype("int32")


def window_attention(x, qkv_kernel, proj_kernel, num_heads, qkv_bias=None, proj_bias=None, window=None, shift=None,
                     bias_table=None, table_window=None):
    """Multi-head self-attention within (shifted) windows of a channels-last 2D/3D grid.

    `qkv = x W_qkv + b_qkv`, per head `softmax(q k^T / sqrt(C / heads) + B + M) v`,
    heads concatenated and projected by `W_proj, b_proj`. `B` is the relative
    position bias (`bias_table[relative_position_index]`), `M` the shifted-window
    mask. Sizes that are not multiples of the window are zero-padded at the end
    (the padded tokens take part in the attention, as in the Swin reference
    code) and cropped afterwards. Softmax runs in float32.

    Args:
        x: `(N, H, W, C)` or `(N, D, H, W, C)`; static spatial sizes when `window` is given.
        qkv_kernel: `(C, 3C)`; `qkv_bias`: `(3C,)` or None.
        proj_kernel: `(C, C)`; `proj_bias`: `(C,)` or None.
        num_heads: number of heads; `C` must be divisible by it.
        window: window size (int or one per axis) or None for one window over
            the whole grid (global attention; any spatial size).
        shift: shift per axis (int or tuple; default 0). Axes not longer than
            the window are neither split nor shifted (`effective_window`).
        bias_table: `(prod(2 * table_window - 1), num_heads)` relative position
            bias or None (no bias).
        table_window: window the table was sized for (default `window`).

    Returns:
        Tensor shaped like `x`.

    Raises:
        ValueError: `x` not 2D/3D, `C` not divisible by `num_heads`, a window
            with unknown spatial sizes, or a bias table of the wrong size.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.ops.windows import window_attention
        >>> x = np.random.rand(1, 8, 8, 8, 6).astype("float32")
        >>> y = window_attention(x, np.eye(6, 18, dtype="float32"), np.eye(6, dtype="float32"), 2, window=4, shift=2)

    Reference: Liu et al., "Swin Transformer", ICCV 2021 (checked against a
    NumPy loop over windows in `tests/ops/test_windows.py`).
    """
    shape = tuple(x.shape)
    d = len(shape) - 2
    if d not in (2, 3):
        raise ValueError(f"`x` must be (N, H, W, C) or (N, D, H, W, C). Received: x.shape={shape}")
    channels = int(shape[-1])
    if channels % num_heads:
        raise ValueError(f"The channels of `x` ({channels}) must be divisible by num_heads. "
                         f"Received: num_heads={num_heads}")
    dtype = x.dtype
    if window is None:
        tokens = ops.reshape(x, (-1, math.prod(shape[1:-1]) if None not in shape[1:-1] else -1, channels))
        out = _attend(tokens, qkv_kernel, qkv_bias, proj_kernel, proj_bias, num_heads, None, None, dtype)
        return ops.reshape(out, ops.shape(x))
    spatial = shape[1:-1]
    if any(s is None for s in spatial):
        raise ValueError(f"Windowed attention needs static spatial sizes. Received: x.shape={shape}")
    window = _as_tuple(window, d, "window")
    shift = _as_tuple(0 if shift is None else shift, d, "shift")
    win, sft = effective_window(spatial, window, shift)
    padded = tuple(-(-s // w) * w for s, w in zip(spatial, win))
    if padded != spatial:
        x = ops.pad(x, [[0, 0]] + [[0, p - s] for p, s in zip(padded, spatial)] + [[0, 0]])
    axes = tuple(range(1, d + 1))
    if any(sft):
        x = ops.roll(x, tuple(-h for h in sft), axis=axes)
    bias = None
    if bias_table is not None:
        table_window = window if table_window is None else _as_tuple(table_window, d, "table_window")
        rows = math.prod(2 * t - 1 for t in table_window)
        if tuple(bias_table.shape) != (rows, num_heads):
            raise ValueError(f"`bias_table` must be ({rows}, {num_heads}) for table_window={table_window}. "
                             f"Received: bias_table.shape={tuple(bias_table.shape)}")
        index = relative_position_index(win, table_window)
        n = index.shape[0]
        bias = ops.take(bias_table, ops.convert_to_tensor(index.reshape(-1)), axis=0)  # (n*n, heads)
        bias = ops.transpose(ops.reshape(bias, (n, n, num_heads)), (2, 0, 1))  # (heads, n, n)
    mask = shifted_window_mask(padded, win, sft) if any(sft) else None
    out = _attend(window_partition(x, win), qkv_kernel, qkv_bias, proj_kernel, proj_bias, num_heads, bias, mask,
                  dtype)
    x = window_merge(out, win, padded)
    if any(sft):
        x = ops.roll(x, sft, axis=axes)
    if padded != spatial:
        x = x[(slice(None),) + tuple(slice(0, s) for s in spatial)]
    return x


def _attend(tokens, qkv_kernel, qkv_bias, proj_kernel, proj_bias, num_heads, bias, mask, dtype):
    """Multi-head attention within each row of `tokens` `(B, n, C)`; `bias` `(h, n, n)`, `mask` `(nW, n, n)`."""
    channels = int(tokens.shape[-1])
    n = tokens.shape[1]
    head_dim = channels // num_heads
    # einsum rather than matmul: Keras 3.15's torch matmul computes float64 in float32 (float64 gradient checks)
    qkv = ops.einsum("bnc,cd->bnd", tokens, ops.cast(qkv_kernel, dtype))
    if qkv_bias is not None:
        qkv = qkv + ops.cast(qkv_bias, dtype)
    qkv = ops.reshape(qkv, (-1, n if n is not None else ops.shape(tokens)[1], 3, num_heads, head_dim))
    qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B, h, n, hd)
    q, k, v = qkv[0], qkv[1], qkv[2]
    precise = "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"  # never float16
    logits = ops.einsum("bhqd,bhkd->bhqk", ops.cast(q, precise) * (head_dim ** -0.5), ops.cast(k, precise))
    if bias is not None:
        logits = logits + ops.cast(bias, precise)[None]
    if mask is not None:
        nw, nn = mask.shape[0], mask.shape[1]
        logits = ops.reshape(logits, (-1, nw, num_heads, nn, nn)) + ops.convert_to_tensor(mask, precise)[None, :, None]
        logits = ops.reshape(logits, (-1, num_heads, nn, nn))
    if n == 1:  # one token per window (a 16^3 UNETR input): the softmax over one key is exactly 1
        weights = ops.cast(ops.ones_like(logits), dtype)
    else:
        weights = ops.cast(ops.softmax(logits, axis=-1), dtype)
    out = ops.einsum("bhqk,bhkd->bhqd", weights, v)
    out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, n if n is not None else ops.shape(tokens)[1], channels))
    out = ops.einsum("bnc,cd->bnd", out, ops.cast(proj_kernel, dtype))
    if proj_bias is not None:
        out = out + ops.cast(proj_bias, dtype)
    return out



def space_to_depth(x, block=2):
    """`(N, *S, C)` -> `(N, *ceil(S / block), block**d * C)`: every block of voxels becomes one token.

    Odd sizes are zero-padded at the end first. Channel `o * C + c` holds
    channel `c` of the voxel at offset `o` inside the block, offsets in
    row-major order (`itertools.product(range(block), repeat=d)`); this is the
    gather of the Swin Transformer's patch merging (before its norm and linear
    reduction).

    Args:
        x: `(N, H, W, C)` or `(N, D, H, W, C)` with static spatial sizes.
        block: block size along every axis (default 2).

    Returns:
        `(N, *ceil(S / block), block**d * C)` tensor.

    Raises:
        ValueError: `x` not 2D/3D, unknown spatial sizes or `block` < 1.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.ops.windows import space_to_depth
        >>> y = space_to_depth(np.zeros((1, 8, 8, 8, 4), "float32"))  # (1, 4, 4, 4, 32)

    Reference: Liu et al., "Swin Transformer", ICCV 2021 (patch merging);
    checked against NumPy strided slicing in `tests/ops/test_windows.py`.
    """
    shape = tuple(x.shape)
    d = len(shape) - 2
    if d not in (2, 3):
        raise ValueError(f"`x` must be (N, H, W, C) or (N, D, H, W, C). Received: x.shape={shape}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"`block` must be a positive int. Received: block={block!r}")
    spatial = shape[1:-1]
    if any(s is None for s in spatial):
        raise ValueError(f"`space_to_depth` needs static spatial sizes. Received: x.shape={shape}")
    padded = tuple(-(-s // block) * block for s in spatial)
    if padded != spatial:
        x = ops.pad(x, [[0, 0]] + [[0, p - s] for p, s in zip(padded, spatial)] + [[0, 0]])
    channels = shape[-1]
    split = []
    for s in padded:
        split += [s // block, block]
    x = ops.reshape(x, (-1, *split, channels))
    perm = (0,) + tuple(1 + 2 * k for k in range(d)) + tuple(2 + 2 * k for k in range(d)) + (2 * d + 1,)
    x = ops.transpose(x, perm)
    return ops.reshape(x, (-1, *(p // block for p in padded), block ** d * channels))
