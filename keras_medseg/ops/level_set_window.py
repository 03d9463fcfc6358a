"""Evolve a level set only inside a box around its front (the dense analogue of a narrow band).

A level-set step changes the segmentation only where the zero level set is:
elsewhere it moves values whose sign never changes (without a front nearby no
voxel can cross zero: at a local extremum the upwind gradient norm is 0). ITK's
sparse-field filters exploit this by updating a narrow band of voxels; a
compiled array program cannot gather a band of changing size, so here the
work is restricted to a BOX of static size that follows the front:

1. every `chunk` steps, find the bounding box of the front (voxels whose
   sign differs from a neighbour's) and grow it by a margin larger than the
   distance the front can travel in `chunk` steps;
2. pick the smallest window of a fixed ladder of sizes (`window_ladder`)
   that holds it (the whole image when none does: then it is the dense step);
3. run `chunk` steps on the window as an image of its own (replicate
   boundaries, as the dense step has at the image border) and write it back.

Each ladder size is one branch of a `keras.ops.switch` with static shapes,
so the loop compiles once (TensorFlow XLA, `jax.lax`), and PyTorch runs the
chosen branch eagerly. The zero level set agrees with the dense evolution
(tested: Dice >= 0.99 on real images); values far from the front keep their
last-updated values, which is what a narrow-band method does too.

Reference: D. Adalsteinsson, J. Sethian, "A Fast Level Set Method for Propagating Interfaces" (1995), for
the narrow band; R. Whitaker, "A Level-Set Approach to 3D Reconstruction from Range Data" (1998), for the
sparse field that ITK implements.
"""

import math

import numpy as np
from keras import ops


#: window edge lengths in voxels, smallest first (each axis is capped at the image's own size)
WINDOW_SIZES = (64, 96, 128, 192, 256, 384, 512, 768, 1024)


def window_ladder(spatial_shape, sizes=WINDOW_SIZES):
    """The window shapes, smallest first, strictly smaller than `spatial_shape` (a tuple of ints).

    A size `L` gives the window `min(L, s)` along each axis of size `s`;
    windows equal to the whole image are dropped (the dense step covers
    that case). Returns a list of tuples (empty for small images).
    """
    full = tuple(int(s) for s in spatial_shape)
    ladder = []
    for size in sizes:
        window = tuple(min(size, s) for s in full)
        if window != full and window not in ladder and math.prod(window) < 0.6 * math.prod(full):
            ladder.append(window)
    return ladder


def front_bounds(u):
    """Bounding box of the front of `u` `(1, *S, 1)`: voxels whose side (`u < 0`) differs from a neighbour's.

    Returns:
        `(found, lo, hi)`: a boolean scalar (there is a front) and two int32
        vectors `(d,)`, the first and last front index along each spatial axis
        (0 and `S - 1` when there is no front).
    """
    inside = u[0, ..., 0] < 0
    d = len(inside.shape)
    front = None
    for axis in range(d):
        a = [slice(None)] * d
        b = [slice(None)] * d
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        change = ops.not_equal(inside[tuple(a)], inside[tuple(b)])
        before = [(0, 0)] * d
        after = [(0, 0)] * d
        before[axis], after[axis] = (1, 0), (0, 1)
        marks = ops.logical_or(ops.pad(change, before, constant_values=False),
                               ops.pad(change, after, constant_values=False))
        front = marks if front is None else ops.logical_or(front, marks)
    lows, highs = [], []
    for axis in range(d):
        others = tuple(k for k in range(d) if k != axis)
        profile = ops.cast(ops.any(front, axis=others) if others else front, "int32")
        lows.append(ops.cast(ops.argmax(profile), "int32"))
        highs.append(inside.shape[axis] - 1 - ops.cast(ops.argmax(ops.flip(profile, axis=0)), "int32"))
    return ops.any(front), ops.stack(lows), ops.stack(highs)


def choose_window(found, lo, hi, margin, spatial_shape, ladder):
    """Branch index: 0 no front (nothing to do), `1 + j` the window `ladder[j]`, `len(ladder) + 1` dense.

    The window must hold `[lo - margin, hi + margin]` (clipped to the image)
    along every axis.
    """
    full = ops.convert_to_tensor(np.asarray(spatial_shape, "int32"))
    need = ops.minimum(hi - lo + 1 + 2 * margin, full)
    index = ops.convert_to_tensor(1, "int32")
    for window in ladder:
        too_small = ops.any(ops.convert_to_tensor(np.asarray(window, "int32")) < need)
        index = index + ops.cast(too_small, "int32")
    return ops.where(found, index, 0)


def window_start(lo, hi, margin, window, spatial_shape):
    """Corner of `window` holding `[lo - margin, hi + margin]` (slack split evenly), kept inside the image.

    Returns int32 `(d,)`. When the window is smaller than the box (it never
    is for the window `choose_window` picks) it is centred on the box.
    """
    window = ops.convert_to_tensor(np.asarray(window, "int32"))
    full = ops.convert_to_tensor(np.asarray(spatial_shape, "int32"))
    need = hi - lo + 1 + 2 * margin
    return ops.clip(lo - margin - (window - need) // 2, 0, full - window)


def evolve_in_window(u, g, velocity, advance, steps, start, window):
    """`steps` calls of `advance(u_w, g_w, v_w)` on the window `window` of `u` at `start`; `u` updated.

    The window is stepped as an image of its own: replicate boundaries at
    its faces, exactly the dense step's boundary where a face is the image
    border, and an error confined to the margin elsewhere (the front stays
    at least `margin` voxels away from those faces, see `choose_window`).
    `g` `(1, *S, 1)` and `velocity` `(1, *S, d)` are the full-image edge
    indicator and convection velocity, sliced once per window.
    """
    zero = ops.zeros((1,), "int32")
    corner = ops.concatenate([zero, start, zero])
    u_w = ops.slice(u, corner, (1,) + tuple(window) + (1,))
    g_w = ops.slice(g, corner, (1,) + tuple(window) + (1,))
    v_w = ops.slice(velocity, corner, (1,) + tuple(window) + (int(velocity.shape[-1]),))
    u_w = ops.fori_loop(0, steps, lambda i, u_w: advance(u_w, g_w, v_w), u_w)
    return ops.slice_update(u, corner, u_w)


def speed_bound(g, velocity, alpha, beta, dt):
    """Upper bound of the front's displacement per step in voxels: `dt (|alpha| + d |beta|) max g + dt max |V|_1`.

    The curvature of central differences of unit normals is at most `d` in
    magnitude; the convection moves the front by at most the sum of the
    velocity's components.
    """
    d = len(g.shape) - 2
    gmax = ops.max(ops.abs(g))
    vmax = ops.max(ops.sum(ops.abs(velocity), axis=-1))
    return dt * ((ops.abs(alpha) + d * ops.abs(beta)) * gmax + vmax)
