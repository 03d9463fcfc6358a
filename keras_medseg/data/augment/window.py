"""Warped patches read from a window of the scan that holds just the points the warp reads.

`Compose.margin` bounds how far any draw of a fused warp can reach, so a
dataset that crops `patch + 2 * margin` voxels around every patch and warps
that crop is always right, but it moves the worst case (for 64^3 patches
with 15-degree rotations, 10 % zoom and elastic warps, a 146^3 crop, 12x the
patch's voxels) for every patch. `warp_patches` runs in two steps instead:

1. draw the fused warp's parameters and take the bounding box, per sample, of
   its sampling points in the frame of that worst-case crop. For the usual
   chains (affine maps, then at most one elastic warp reading the output
   grid: `nodes_bound_points`) every coordinate of the points is multilinear
   on each cell of the elastic control grid, so its extremes over the patch
   are its values at the cells' corners (`box_nodes`: 5^3 = 125 points for a
   64^3 patch and a 16-voxel spacing); the box is widened by `NODE_SLACK` for
   rounding. Other chains compose the points at every voxel here;
2. read only that box (`read(n, start, size)`: the dataset's crop, its
   origin relative to the worst-case crop), compose the points at the
   patch's voxels from the drawn parameters (the same `compose_points` as a
   call on the crop), shift them into the box by its integer start, and
   sample it once (linear image, nearest labels), then run the pipeline's
   remaining layers (intensity) on the patch, all in one compiled program.

Subtracting an integer `k <= x` from a float32 `x >= 0` is exact, so the
shifted points have the same integer and fractional parts as before and the
patches equal those of a call on the worst-case crop (tested). Boxes are
padded up to a multiple of `BUCKET` voxels (a cube) so that a compiled step
sees a few shapes, not one per patch. Both steps run as compiled programs on
TensorFlow (XLA) and JAX (`jax.jit`), as `Compose` does; on torch they run
eagerly, or with `torch.compile` of step 2's points and sampling for
`jit_compile=True`.
"""

import functools

import numpy as np
from keras import ops

from keras_medseg.data.augment import warp
from keras_medseg.data.augment.base import prepare
from keras_medseg.ops.sampling import map_image_and_labels

BUCKET = 16  # box sizes are multiples of this many voxels (the same on every axis)
NODE_SLACK = 0.01  # voxels added to the nodes' extremes: the points, computed in another order, round otherwise
_STATIC = {}  # the parameters' non-tensor entries (a flip's axes) of each compiled drawing program


def crop_box(array, start, size, fill, view=False):
    """`array[start:start + size]` on the leading `len(size)` axes, `fill` where the box leaves the array.

    Args:
        array: NumPy array `(*S, ...)`.
        start: first voxel of the box per axis (may be negative).
        size: the box's size per axis.
        fill: value outside the array.
        view: return a view of `array` (no copy) when the box lies inside it (default False: a new array).
    """
    d = len(size)
    if view and all(0 <= s0 and s0 + n <= full for s0, n, full in zip(start, size, array.shape[:d])):
        return array[tuple(slice(s0, s0 + n) for s0, n in zip(start, size))]
    src, dst = [], []
    for s0, n, full in zip(start, size, array.shape[:d]):
        lo, hi = max(s0, 0), min(s0 + n, full)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s0, lo - s0 + max(hi - lo, 0)))
    out = np.empty(tuple(size) + array.shape[d:], dtype=array.dtype)
    out[tuple(dst)] = array[tuple(src)]
    for axis, (inside, n) in enumerate(zip(dst, size)):  # the slabs outside the array, each voxel written once
        before = (slice(None),) * axis
        out[before + (slice(0, inside.start),)] = fill
        out[before + (slice(inside.stop, n),)] = fill
        dst[axis] = slice(0, n)  # later axes: their slabs across the whole extent of this one
    return out


def supports_windows(layer):
    """Whether `warp_patches` can run `layer`: a `Compose` whose first step is a fused warp group."""
    steps = warp.plan(getattr(layer, "transforms", []))
    return hasattr(layer, "jit_compile") and bool(steps) and steps[0][0] == "group"


def _mode(layer):
    import keras

    backend = keras.backend.backend()
    if layer.jit_compile is False:
        return None
    if backend in ("tensorflow", "jax"):
        return "program"
    return "warp" if layer.jit_compile is True else None


def nodes_bound_points(group):
    """Whether the extremes of `group`'s points over a frame's voxels are their extremes at a few nodes.

    True when every drawn transform is an affine map of points (flips, 90-degree turns, `RandomAffine`)
    except possibly the last one, an elastic warp on a control grid of the output frame: each coordinate
    of the composed points is then multilinear on every cell of that grid, so it is largest and smallest at
    the cells' corners (`box_nodes`).
    """
    drawn = [t for t in group if t.probability > 0.0]
    return all(getattr(t, "affine_map", False) for t in drawn[:-1]) and bool(drawn) and (
        getattr(drawn[-1], "affine_map", False) or getattr(drawn[-1], "control_spacing", None) is not None)


def box_nodes(group, frame):
    """`(1, d, K)` float32 nodes where the composed points of `group` reach their extremes (see
    `nodes_bound_points`): per axis the control-grid positions inside the frame and its last voxel."""
    drawn = [t for t in group if t.probability > 0.0]
    spacing = getattr(drawn[-1], "control_spacing", None)
    axes = [sorted(set(range(0, f, spacing or f)) | {f - 1}) for f in frame]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(1, len(frame), -1)
    return ops.convert_to_tensor(grid.astype(np.float32))


def _shift(points, margin):
    if any(margin):  # as `warp._apply_group` adds the crop's offset
        points = points + ops.reshape(ops.convert_to_tensor(list(margin), "float32"),
                                      (1, -1) + (1,) * (len(points.shape) - 2))
    return points


def _draw(group, batch_size, frame, margin):
    """Step 1 (nodes): `(draws [(params, apply)] of the drawn transforms, low (N, d), high (N, d))`: the
    parameters and the extremes of the points over the frame's voxels (worst-case crop's voxels), computed
    at `box_nodes` only."""
    draws = warp.draw_group(group, batch_size, frame)
    active, params = [t for t, _, _ in draws], [(p, a) for _, p, a in draws]
    points = _shift(warp.compose_points(active, params, batch_size, frame, box_nodes(group, frame)), margin)
    return params, ops.min(points, axis=-1), ops.max(points, axis=-1)


def _points(group, batch_size, frame, margin):
    """Step 1 (any chain): `(points (N, d, *frame) in the worst-case crop's voxels, low (N, d), high (N, d))`."""
    draws = warp.draw_group(group, batch_size, frame)
    points = _shift(warp.compose_points([t for t, _, _ in draws], [(p, a) for _, p, a in draws], batch_size,
                                        frame), margin)
    flat = ops.reshape(points, (batch_size, len(frame), -1))
    return points, ops.min(flat, axis=-1), ops.max(flat, axis=-1)


def _sample(steps, image, labels, points, start):
    """Step 2: shift `points` by the boxes' integer `start` (N, d), sample the boxes once, run the other steps."""
    d = len(points.shape) - 2
    points = points - ops.reshape(ops.cast(start, "float32"), (-1, d) + (1,) * d)
    dtype = image.dtype
    out, out_labels = map_image_and_labels(ops.cast(image, "float32"), labels, points, padding_mode="nearest")
    return _sample_rest(steps, ops.cast(out, dtype), out_labels)


def _warp_sample(steps, active, frame, margin, image, labels, params, start):
    """Step 2 (nodes): compose the points of the drawn `params` at the frame's voxels, then `_sample`: one
    program from the parameters to the patch (the points are never written out whole)."""
    points = _shift(warp.compose_points(active, params, ops.shape(image)[0], frame), margin)
    return _sample(steps, image, labels, points, start)


def _program(variables, fn):
    """`fn(*args)` as a pure compiled program `(state, *args) -> (out, new state)` of `variables` (the seed
    generators' states that `fn` reads and moves on; see `warp._build`)."""
    import keras

    def pure(state, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, state))) as scope:
            out = fn(*args)
            new_state = [scope.get_current_value(v) for v in variables]
        return out, new_state

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(pure)
    import tensorflow as tf

    return tf.function(pure, jit_compile=True)


def _run(layer, variables, mode, key, fn, *args):
    """`fn(*args)` with the seed states `variables`: compiled once per `key` ("program"), else as it comes."""
    if mode != "program":
        return fn(*args)
    full_key = ("window", layer._program_config) + key
    program = warp._PROGRAMS.get(full_key)
    if program is None:
        program = warp._PROGRAMS[full_key] = _program(variables, fn)
        while len(warp._PROGRAMS) > 32:
            warp._PROGRAMS.popitem(last=False)
    warp._PROGRAMS.move_to_end(full_key)
    out, new_state = program([v.value for v in variables], *args)
    for v, value in zip(variables, new_state):
        v.assign(value)
    return out


def box_size(low, high, limit):
    """The common box of a batch: `floor(high) - floor(low) + 2` voxels (the linear corner above the last
    point), the largest over samples and axes, rounded up to a multiple of `BUCKET`, at most `limit` per axis
    unless the points need more."""
    need = int(np.max(np.floor(high) - np.floor(low))) + 2
    rounded = -(-need // BUCKET) * BUCKET
    return tuple(max(need, min(rounded, int(c))) for c in limit)


def warp_patches(layer, read, batch_size, patch_size):
    """Warped `(image, labels)` patches of `layer` (a `Compose`), reading only the boxes the warp needs.

    Equals `layer({"image": x, "labels": y}, output_size=patch_size)` on the worst-case crops
    `x, y = read(n, (0,) * d, patch_size + 2 * margin)` stacked over `n` (same seeds; tested to 1e-5,
    in practice bit for bit).

    Args:
        layer: a `Compose` for which `supports_windows` is true.
        read: `read(n, start, size) -> (image (*size, C), labels (*size))` NumPy arrays of sample `n`: the
            box of that size whose first voxel is `start` (d ints >= 0) voxels from the first voxel of the
            sample's worst-case crop (`patch_size + 2 * margin` around the patch); outside the scan the
            dataset's padding.
        batch_size: N, the number of samples.
        patch_size: d ints, the output's spatial shape.

    Returns:
        `(image (N, *patch_size, C), labels (N, *patch_size))` backend tensors.

    Raises:
        ValueError: a layer that `supports_windows` refuses.
    """
    if not supports_windows(layer):
        raise ValueError("`warp_patches` needs a Compose whose first step is an affine or elastic warp. "
                         f"Received: layer={layer!r}")
    import keras

    warp.program_config(layer)
    frame = tuple(int(p) for p in patch_size)
    steps = warp.plan(layer.transforms)
    group = steps[0][1]
    margin = warp.group_margin(group, frame)
    mode = _mode(layer)
    # each program carries only the seed states it moves on (fewer variable writes per patch)
    first = [v for t in group for v in t.variables]
    rest = [v for v in layer.variables if all(v is not w for w in first)]
    if nodes_bound_points(group):  # the box from a few nodes; the points only inside the sampling program
        active = [t for t in group if t.probability != 0.0]
        static = _STATIC.setdefault(("draw", layer._program_config, batch_size, frame), {})

        def draw():
            params, low, high = _draw(group, batch_size, frame, margin)
            static["params"] = [{k: v for k, v in p.items() if not ops.is_tensor(v)} for p, _ in params]
            return [({k: v for k, v in p.items() if ops.is_tensor(v)}, a) for p, a in params], low, high

        params, low, high = _run(layer, first, mode, ("draw", batch_size, frame), draw)
        params = [(dict(p, **fixed), a) for (p, a), fixed in zip(params, static["params"])]
        low, high = (np.asarray(ops.convert_to_numpy(v)) for v in (low, high))
        low, high = low - NODE_SLACK, high + NODE_SLACK
    else:
        points, low, high = _run(layer, first, mode, ("points", batch_size, frame),
                                 lambda: _points(group, batch_size, frame, margin))
        low, high = np.asarray(ops.convert_to_numpy(low)), np.asarray(ops.convert_to_numpy(high))
    start = np.maximum(np.floor(low), 0).astype(np.int32)  # >= 0: the margin holds every draw
    size = box_size(start, high, [p + 2 * m for p, m in zip(frame, margin)])
    boxes = [read(n, tuple(int(s) for s in start[n]), size) for n in range(batch_size)]
    if batch_size == 1:
        image, labels = boxes[0][0][None], boxes[0][1][None]
    else:
        image, labels = np.stack([b[0] for b in boxes]), np.stack([b[1] for b in boxes])
    if keras.backend.backend() == "torch":  # torch shares the memory and refuses read-only arrays (memory maps)
        image, labels = (a if a.flags.writeable else np.array(a) for a in (image, labels))
    image = warp.to_tensor(image, layer.compute_dtype)
    labels = warp.to_tensor(labels[..., None], layer.compute_dtype)
    start = ops.convert_to_tensor(start)

    if nodes_bound_points(group):
        # only the drawn tensors enter the program: `jax.jit` traces every argument, and a transform's static
        # parameters (a flip's or a quarter turn's axes, Python ints) must stay Python ints inside it
        fixed = static["params"]

        def sample(img, lab, prm, st, rest_steps=steps[1:]):
            prm = [(dict(p, **f), a) for (p, a), f in zip(prm, fixed)]
            return _warp_sample(rest_steps, active, frame, margin, img, lab, prm, st)
        args = ([({k: v for k, v in p.items() if k not in f}, a) for (p, a), f in zip(params, fixed)],)
    else:
        def sample(img, lab, pts, st, rest_steps=steps[1:]):
            return _sample(rest_steps, img, lab, pts, st)
        args = (points,)
    if mode == "warp":  # torch.compile of the sampling (its random layers after it run eagerly)
        import torch

        key = ("window", warp._signature(image), warp._signature(labels), frame, nodes_bound_points(group))
        if key not in layer._compiled:
            layer._compiled[key] = torch.compile(functools.partial(sample, rest_steps=[]), dynamic=False)
        out_image, out_labels = _sample_rest(steps[1:], *layer._compiled[key](image, labels, *args, start))
    else:
        key = ("sample", warp._signature(image), warp._signature(labels), frame)
        out_image, out_labels = _run(layer, rest, mode, key, sample, image, labels, *args, start)
    return out_image, ops.squeeze(out_labels, -1)


def _sample_rest(steps, image, labels):
    """The pipeline's steps after the first warp group, on the sampled patch."""
    inputs = {"image": image, "labels": labels}
    for kind, item in steps:
        if kind == "group":
            img, lab, finish = prepare(inputs)
            inputs = finish(*warp.warp_group(item, img, lab, tuple(img.shape[1:-1])))
        else:
            inputs = item(inputs, training=True)
    return inputs["image"], inputs["labels"]
