"""Tests for `keras_medseg.ops.windows`: partition/merge, masks, relative indices, window attention, space-to-depth.

References are independent NumPy loops: per-token region ids for the mask,
`itertools` offsets for the relative index, a window-by-window attention loop
over a rolled and padded array, and strided slicing for space-to-depth.
"""

import itertools

import numpy as np
import pytest
from keras import ops

from keras_medseg.ops.windows import (
    MASK_VALUE,
    effective_window,
    relative_position_index,
    shifted_window_mask,
    space_to_depth,
    window_attention,
    window_merge,
    window_partition,
)
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic


def _windows_np(x, window):
    """Windows of an (N, *S, C) array by explicit loops: image-major, windows row-major, tokens row-major."""
    spatial = x.shape[1:-1]
    out = []
    for img in x:
        for corner in itertools.product(*[range(0, s, w) for s, w in zip(spatial, window)]):
            sl = tuple(slice(c, c + w) for c, w in zip(corner, window))
            out.append(img[sl].reshape(-1, x.shape[-1]))
    return np.stack(out)


@pytest.mark.parametrize("shape,window", [((2, 8, 6, 3), (4, 3)), ((1, 4, 6, 8, 2), (2, 3, 4))])
def test_partition_matches_loops_and_merge_inverts(shape, window, rng):
    x = rng.standard_normal(shape).astype("float32")
    windows = ops.convert_to_numpy(window_partition(x, window))
    np.testing.assert_array_equal(windows, _windows_np(x, window))
    np.testing.assert_array_equal(ops.convert_to_numpy(window_merge(windows, window, shape[1:-1])), x)


def test_effective_window_clamps_short_axes():
    assert effective_window((16, 6, 7), (7, 7, 7), (3, 3, 3)) == ((7, 6, 7), (3, 0, 0))


def _mask_np(spatial, window, shift):
    """Region id of each token before the roll, compared pairwise inside each window after the roll."""
    d = len(spatial)
    ids = np.zeros(spatial, dtype=np.int64)
    for idx in itertools.product(*[range(s) for s in spatial]):
        label = 0
        for k in range(d):
            s, w, h = spatial[k], window[k], shift[k]
            i = idx[k]
            region = 0 if (h == 0 or i < s - w) else (1 if i < s - h else 2)
            label = label * 3 + region
        ids[idx] = label
    windows = _windows_np(ids[None, ..., None], window)[..., 0]
    return np.where(windows[:, :, None] != windows[:, None, :], MASK_VALUE, 0.0)


@pytest.mark.parametrize("spatial,window,shift", [((8, 8), (4, 4), (2, 2)), ((6, 4, 8), (3, 2, 4), (1, 1, 2)),
                                                  ((4, 6), (4, 3), (0, 1))])
def test_shifted_window_mask_matches_region_loop(spatial, window, shift):
    np.testing.assert_array_equal(shifted_window_mask(spatial, window, shift), _mask_np(spatial, window, shift))


@pytest.mark.parametrize("window,table", [((3, 2), (3, 2)), ((2, 3, 2), (2, 3, 2)), ((2, 2, 3), (4, 3, 3))])
def test_relative_position_index_matches_offsets(window, table):
    index = relative_position_index(window, table)
    coords = list(itertools.product(*[range(w) for w in window]))
    offsets = list(itertools.product(*[range(-(t - 1), t) for t in table]))  # the table's rows, row-major
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            assert offsets[index[i, j]] == tuple(p - q for p, q in zip(a, b))


def test_relative_position_index_rejects_a_window_larger_than_the_table():
    with pytest.raises(ValueError, match="must not exceed `table_window`"):
        relative_position_index((5, 5), (4, 4))


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _attention_np(x, wqkv, bqkv, wp, bp, heads, window, shift, table):
    """Window attention by loops: pad, roll, attend per window with bias and mask, unroll, crop."""
    n_img, *spatial, c = x.shape
    if window is None:
        window, shift = tuple(spatial), (0,) * len(spatial)
    win, sft = effective_window(spatial, window, shift)
    padded = tuple(-(-s // w) * w for s, w in zip(spatial, win))
    xp = np.zeros((n_img, *padded, c))
    xp[(slice(None),) + tuple(slice(0, s) for s in spatial)] = x
    xp = np.roll(xp, tuple(-h for h in sft), axis=tuple(range(1, len(spatial) + 1)))
    windows = _windows_np(xp, win)
    mask = _mask_np(padded, win, sft) if any(sft) else np.zeros((windows.shape[0] // n_img, 1, 1))
    hd = c // heads
    out = np.zeros_like(windows)
    coords = list(itertools.product(*[range(w) for w in win]))
    offsets = {o: r for r, o in enumerate(itertools.product(*[range(-(t - 1), t) for t in window]))}
    for b, tokens in enumerate(windows):
        qkv = tokens @ wqkv + bqkv
        q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
        heads_out = []
        for h in range(heads):
            logits = q[:, h * hd:(h + 1) * hd] @ k[:, h * hd:(h + 1) * hd].T / np.sqrt(hd)
            if table is not None:
                logits = logits + np.array([[table[offsets[tuple(p - r for p, r in zip(a, bb))], h] for bb in coords]
                                            for a in coords])
            logits = logits + mask[b % mask.shape[0]]
            heads_out.append(_softmax(logits) @ v[:, h * hd:(h + 1) * hd])
        out[b] = np.concatenate(heads_out, -1) @ wp + bp
    merged = np.zeros_like(xp)
    i = 0
    for img in range(n_img):
        for corner in itertools.product(*[range(0, s, w) for s, w in zip(padded, win)]):
            sl = (img,) + tuple(slice(a, a + w) for a, w in zip(corner, win))
            merged[sl] = out[i].reshape(*win, c)
            i += 1
    merged = np.roll(merged, sft, axis=tuple(range(1, len(spatial) + 1)))
    return merged[(slice(None),) + tuple(slice(0, s) for s in spatial)]


@pytest.mark.parametrize(
    "shape,window,shift,bias",
    [
        ((2, 4, 6, 4), None, None, False),  # global attention (UNETR)
        ((1, 8, 8, 4), (4, 4), (2, 2), True),  # shifted windows, 2D
        ((1, 6, 5, 7, 6), (3, 3, 3), (1, 1, 1), True),  # 3D, padding 5 -> 6 and 7 -> 9, shifted
        ((1, 4, 2, 8, 2), (4, 4, 4), (2, 2, 2), True),  # an axis shorter than the window: clamped, not shifted
    ],
)
def test_window_attention_matches_numpy_loop(shape, window, shift, bias, rng):
    c = shape[-1]
    heads = 2
    x = rng.standard_normal(shape)
    wqkv, bqkv = rng.standard_normal((c, 3 * c)) / np.sqrt(c), rng.standard_normal(3 * c) * 0.1
    wp, bp = rng.standard_normal((c, c)) / np.sqrt(c), rng.standard_normal(c) * 0.1
    table = None
    if bias:
        table = rng.standard_normal((int(np.prod([2 * w - 1 for w in window])), heads))
    got = window_attention(x.astype("float32"), wqkv.astype("float32"), wp.astype("float32"), heads,
                           qkv_bias=bqkv.astype("float32"), proj_bias=bp.astype("float32"), window=window,
                           shift=shift, bias_table=None if table is None else table.astype("float32"))
    want = _attention_np(x, wqkv, bqkv, wp, bp, heads, window, shift or (0,) * len(shape[1:-1]), table)
    np.testing.assert_allclose(ops.convert_to_numpy(got), want, rtol=1e-4, atol=1e-5)


def test_window_attention_gradients(rng):
    x = rng.standard_normal((1, 4, 4, 4))
    wqkv, wp = rng.standard_normal((4, 12)) * 0.5, rng.standard_normal((4, 4)) * 0.5
    table = rng.standard_normal((9, 2)) * 0.5

    def fn(x, wqkv, wp, table):
        return window_attention(x, wqkv, wp, 2, window=2, shift=1, bias_table=table)

    errors = check_op_gradients(fn, x, wqkv, wp, table, max_entries=6, rtol=1e-5)
    assert len(errors) == 4 and max(errors.values()) < 1e-5


@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (1, 5, 4, 3, 2)])
def test_space_to_depth_matches_strided_slices(shape, rng):
    x = rng.standard_normal(shape).astype("float32")
    d = len(shape) - 2
    padded = np.zeros((shape[0], *[-(-s // 2) * 2 for s in shape[1:-1]], shape[-1]), "float32")
    padded[(slice(None),) + tuple(slice(0, s) for s in shape[1:-1])] = x
    want = np.concatenate([padded[(slice(None),) + tuple(slice(o, None, 2) for o in offset)]
                           for offset in itertools.product(range(2), repeat=d)], axis=-1)
    np.testing.assert_array_equal(ops.convert_to_numpy(space_to_depth(x, 2)), want)


def test_bad_arguments():
    x = np.zeros((1, 4, 4, 6), "float32")
    w = np.zeros((6, 18), "float32")
    p = np.zeros((6, 6), "float32")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        window_attention(x, w, p, 4)
    with pytest.raises(ValueError, match=r"x.shape=\(4, 6\)"):
        window_attention(np.zeros((4, 6), "float32"), w, p, 2)
    with pytest.raises(ValueError, match=r"`bias_table` must be \(9, 2\)"):
        window_attention(x, w, p, 2, window=2, bias_table=np.zeros((4, 2), "float32"))
    with pytest.raises(ValueError, match="`window` must be"):
        window_attention(x, w, p, 2, window=(2, 2, 2))
    with pytest.raises(ValueError, match="`block` must be a positive int"):
        space_to_depth(x, 0)
