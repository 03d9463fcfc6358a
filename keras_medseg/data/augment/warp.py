"""The fused warp: consecutive geometric transforms composed into one sampling grid per sample.

A geometric transform maps every output point to the input point it reads
(`map_points`); a chain `T1, T2, ..., Tk` (applied in that order) reads the
input at `T1(T2(...Tk(o)))`, so the chain needs one interpolation of the
input instead of k, and only at the voxels of the output. Each transform
still draws its parameters from its own seed generator, in the same order as
when it is called alone (`draw`, then the per-sample coin of `probability`),
so a pipeline stays reproducible from its seeds; a sample whose coin says no
keeps the point unchanged (`where`). A run of affine maps (flips, quarter
turns, `RandomAffine`) is multiplied into one small matrix first, and one that
follows an elastic warp turns the warp's control vectors rather than its full
displacement field (`compose_points`): one pass over the points per chain.

The output may be smaller than the input (`output_size`): the output frame
is then centred in the input, the transforms act about the output's centre,
and the input only has to hold the points the chain can reach, a margin that
`group_margin` bounds from the transforms' ranges (`bound`). Sampling a
crop with that margin equals sampling the whole volume (tested).

Eager calls of a `Compose` on TensorFlow and JAX run as one compiled program
per input signature (`run_compiled`): `jax.jit` over a stateless call (the
seed generators' states go in and come out) or `tf.function(jit_compile=True)`.
On torch, `torch.compile` of the whole call recompiles at every call (the seed
states are Python-visible), so with `jit_compile=True` only the pure part of
the fused warp (maps and sampling, after the draws) is compiled.
"""

import collections
import functools
import json
import math

import keras
import numpy as np
from keras import ops

from keras_medseg.ops.sampling import map_image_and_labels


def plan(transforms):
    """Split a list of layers into `("group", [fused transforms])` and `("layer", layer)` steps.

    A group is a run of consecutive fusable transforms that holds at least one
    warp (affine or elastic); a run of flips and 90-degree turns alone stays a
    sequence of exact array operations.
    """
    steps, run = [], []

    def flush():
        if any(t.warps for t in run):
            steps.append(("group", list(run)))
        else:
            steps.extend(("layer", t) for t in run)
        run.clear()

    for t in transforms:
        if getattr(t, "fusable", False):
            run.append(t)
        else:
            flush()
            steps.append(("layer", t))
    flush()
    return steps


def identity_points(frame):
    """`(1, d, prod(frame))` float32 voxel coordinates of the frame's grid, axis-major."""
    ranges = [ops.arange(s, dtype="float32") for s in frame]
    grid = ops.stack(ops.meshgrid(*ranges, indexing="ij"), axis=0)
    return ops.reshape(grid, (1, len(frame), -1))


def draw_group(transforms, batch_size, frame):
    """Every transform's draw and per-sample coin, in order: `[(transform, params, apply (N,) bool)]`."""
    draws = []
    for t in transforms:
        if t.probability == 0.0:  # as a lone call: no draw at all
            continue
        params = t.draw(batch_size, frame)
        apply = t.uniform((batch_size,), 0.0, 1.0) < t.probability
        draws.append((t, params, apply))
    return draws


def affine_from_points(t, params, frame, batch_size):
    """`(M (N, d, d), b (N, d))` with `t.map_points(params, p, frame) = M p + b`, read off the images of the origin
    and the unit points (exact for flips and quarter turns, whose values are multiples of 1/2)."""
    d = len(frame)
    basis = np.concatenate([np.zeros((d, 1)), np.eye(d)], axis=1)[None].astype("float32")  # (1, d, d + 1)
    base = ops.broadcast_to(ops.convert_to_tensor(basis), (batch_size, d, d + 1))
    image = t.map_points(params, base, frame)
    b = image[:, :, 0]
    return image[:, :, 1:] - b[:, :, None], b


def grid_affine(matrix, offset, frame):
    """`(N, d, *frame)` points `M o + b` of the frame's voxels `o`, one broadcast term per axis (no matmul)."""
    d = len(frame)
    out = ops.reshape(offset, (-1, d) + (1,) * d)
    for axis, size in enumerate(frame):
        shape = [1] * d
        shape[axis] = size
        line = ops.reshape(ops.arange(size, dtype="float32"), (1, 1) + tuple(shape))
        out = out + ops.reshape(matrix[:, :, axis], (-1, d) + (1,) * d) * line
    return out


def compose_points(transforms, draws, batch_size, frame, at=None):
    """Chain the maps of drawn transforms: `(N, d, *frame)` input points of the frame's voxels (frame coordinates).

    Consecutive affine maps (`affine_map`: flips, quarter turns, `RandomAffine`) are first multiplied into one
    `(N, d, d)` matrix and offset, so the points go through one affine map per run of them; a run that follows
    the transform reading the output grid is folded into it (`map_grid_affine`, e.g. an elastic warp turns its
    control vectors instead of its full displacement field), and one that reads the grid itself is a broadcast
    sum (`grid_affine`). A transform whose coin says no is the identity (`where`), as when called alone.

    Args:
        transforms: the drawn transforms, in the order they apply.
        draws: `[(params, apply)]`, one per transform.
        batch_size: N.
        frame: the output's spatial shape; the transforms act about its centre.
        at: optional `(1, d, K)` output points (frame coordinates) to map instead of the frame's voxels;
            the result is then `(N, d, K)`.
    """
    d = len(frame)
    chain = list(reversed(list(zip(transforms, draws))))  # the last transform reads the output grid
    points, i = None, 0
    if at is not None:
        points = ops.broadcast_to(at, (batch_size, d) + tuple(at.shape[2:]))
    while i < len(chain):
        t, (params, apply) = chain[i]
        run = []  # the affine maps that follow t (or t's own run, for an affine t)
        j = i if getattr(t, "affine_map", False) else i + 1
        while j < len(chain) and getattr(chain[j][0], "affine_map", False):
            run.append(chain[j])
            j += 1
        coin = None if t.probability >= 1.0 else apply
        if points is None and not getattr(t, "affine_map", False) and run and hasattr(t, "map_grid_affine"):
            points = _flat(t.map_grid_affine(params, frame, *_affine_run(run, batch_size, frame), coin))
        elif getattr(t, "affine_map", False) and len(run) > 1:
            matrix, offset = _affine_run(run, batch_size, frame)
            if points is None:
                points = _flat(grid_affine(matrix, offset, frame))
            else:
                points = ops.matmul(matrix, points) + offset[:, :, None]
        else:  # one map: as it comes
            j = i + 1
            if points is None:
                mapped, base = t.map_grid(params, frame), identity_points(frame)
            else:
                mapped, base = t.map_points(params, points, frame), points
            points = mapped if coin is None else ops.where(ops.reshape(apply, (-1, 1, 1)), mapped, base)
        i = j
    if points is None:
        points = ops.broadcast_to(identity_points(frame), (batch_size, d, math.prod(frame)))
    return points if at is not None else ops.reshape(points, (-1, d) + tuple(frame))


def _flat(points):
    return ops.reshape(points, (ops.shape(points)[0], points.shape[1], -1))


def _affine_run(run, batch_size, frame):
    """One `(M, b)` of a run of affine maps `[(t, (params, apply))]` listed from the one applied to the points
    first; identity for an empty run."""
    d = len(frame)
    eye = ops.broadcast_to(ops.eye(d, dtype="float32")[None], (batch_size, d, d))
    matrix, offset = eye, ops.zeros((batch_size, d), "float32")
    for k, (t, (params, apply)) in enumerate(run):
        m, b = t.affine(params, frame, batch_size)
        if t.probability < 1.0:
            m = ops.where(ops.reshape(apply, (-1, 1, 1)), m, eye)
            b = ops.where(ops.reshape(apply, (-1, 1)), b, ops.zeros_like(b))
        if k == 0:
            matrix, offset = m, b
        else:
            matrix, offset = ops.matmul(m, matrix), ops.squeeze(ops.matmul(m, offset[:, :, None]), -1) + b
    return matrix, offset


def group_coordinates(transforms, batch_size, frame):
    """Draw every transform of a group and compose their maps: `(N, d, *frame)` points in frame coordinates."""
    draws = draw_group(transforms, batch_size, frame)
    return compose_points([t for t, _, _ in draws], [(p, a) for _, p, a in draws], batch_size, frame)


def _apply_group(transforms, draws, image, labels, frame, padding_mode, fill_value):
    """The pure part of `warp_group` (no random draws): compose the maps, sample image and labels once."""
    spatial = tuple(image.shape[1:-1])
    points = compose_points(transforms, draws, ops.shape(image)[0], frame)
    offset = [(s - f) // 2 for s, f in zip(spatial, frame)]
    if any(offset):
        points = points + ops.reshape(ops.convert_to_tensor(offset, "float32"), (1, -1) + (1,) * len(frame))
    dtype = image.dtype
    out, out_labels = map_image_and_labels(ops.cast(image, "float32"), labels, points,
                                           padding_mode=padding_mode, fill_value=fill_value)
    return ops.cast(out, dtype), out_labels


def warp_group(transforms, image, labels, frame, cache=None):
    """Apply a group of geometric transforms with one sampling: `(image, labels)` of spatial shape `frame`.

    Args:
        transforms: fusable transforms in the order they apply (at least one warp).
        image: `(N, *S, C)` tensor; `S >= frame` per axis.
        labels: `(N, *S, K)` tensor or None.
        frame: the output's spatial shape, centred in `S`.
        cache: a dict for `torch.compile`d programs of the pure part (torch with `jit_compile=True`), or None.
    """
    spatial = tuple(image.shape[1:-1])
    draws = draw_group(transforms, ops.shape(image)[0], frame)
    first = next(t for t in transforms if t.warps)
    padding_mode, fill_value = first.padding_mode, first.fill_value
    margin = group_margin(transforms, frame)
    if all(s >= f + 2 * m for s, f, m in zip(spatial, frame, margin)):
        padding_mode = "nearest"  # no point can leave the input: clamping is exact and saves padding a copy
    active, params = [t for t, _, _ in draws], [(p, a) for _, p, a in draws]
    if cache is not None:
        import torch

        key = ("torch", tuple(id(t) for t in active), _signature(image), _signature(labels), tuple(frame),
               padding_mode)
        if key not in cache:
            cache[key] = torch.compile(lambda p, x, y: _apply_group(active, p, x, y, frame, padding_mode, fill_value),
                                       dynamic=False)
        return cache[key](params, image, labels)
    return _apply_group(active, params, image, labels, frame, padding_mode, fill_value)


def group_margin(transforms, patch_size):
    """Voxels of input each side of a `patch_size` output needs, for any draw of the group's transforms.

    Propagates the half-widths of the output box about its centre through
    the transforms' `bound`s, from the last to the first; a transform that
    may not apply (probability < 1) also keeps the box it got.
    """
    size = np.asarray(patch_size, dtype=float)
    centre = (size - 1.0) / 2.0
    half = centre.copy()
    for t in reversed(transforms):
        if t.probability > 0.0:
            half = np.maximum(half, t.bound(half))
    return tuple(int(max(0, math.ceil(h - c - 1e-6))) for h, c in zip(half, centre))


@functools.lru_cache(maxsize=64)
def rotation_reach(planes, angles, half, points=33):
    """`max_R sum_j |R_ij| half_j` over the rotations `R = R_1 R_2 ...` with `|angle_k| <= angles[k]`.

    The maximum over a grid of `points` angles per plane, plus the most the
    function can rise between grid points (it is Lipschitz in each angle with
    constant `||half||_2`, a row of a rotation's derivative having norm <= 1),
    capped by the entrywise bound (`|cos| <= 1`, `|sin| <= sin(angle)`). A
    certified bound within about 2% of the true maximum for 15-degree ranges.
    """
    d = len(half)
    w = np.asarray(half, dtype=float)
    grids = [np.linspace(-a, a, points) if a > 0 else np.zeros(1) for a in angles]
    mesh = np.meshgrid(*grids, indexing="ij")
    total = np.broadcast_to(np.eye(d), mesh[0].shape + (d, d))
    entrywise = np.eye(d)
    for (i, j), a, theta in zip(planes, angles, mesh):
        rot = np.broadcast_to(np.eye(d), theta.shape + (d, d)).copy()
        rot[..., i, i] = rot[..., j, j] = np.cos(theta)
        rot[..., i, j], rot[..., j, i] = -np.sin(theta), np.sin(theta)
        total = total @ rot
        step = np.eye(d)
        step[i, j] = step[j, i] = math.sin(min(a, math.pi / 2))
        entrywise = entrywise @ step
    grid_max = (np.abs(total) @ w).reshape(-1, d).max(axis=0)
    slack = np.linalg.norm(w) * sum(a / (points - 1) for a in angles if a > 0)  # half a grid step per angle
    return np.minimum(grid_max + slack, entrywise @ w)


# ---------------------------------------------------------------------------------------------
# Compiled eager calls
# ---------------------------------------------------------------------------------------------


def _first_array(inputs):
    if isinstance(inputs, dict):
        return inputs.get("image")
    if isinstance(inputs, (tuple, list)):
        return inputs[0] if inputs else None
    return inputs


def compile_now(setting, inputs):
    """How a call runs: "program" (the whole call compiled: TensorFlow, JAX), "warp" (torch: the fused warp
    through `torch.compile`) or None (as it comes: eager, or traced inside someone else's compiled function)."""
    if setting is False:
        return None
    backend = keras.backend.backend()
    image = _first_array(inputs)
    if image is None or isinstance(image, keras.KerasTensor):
        return None
    if backend == "tensorflow":
        import tensorflow as tf

        return "program" if tf.executing_eagerly() else None
    if backend == "jax":
        import jax

        return None if isinstance(image, jax.core.Tracer) else "program"
    if backend == "torch" and setting is True:
        import torch

        return None if torch.compiler.is_compiling() else "warp"
    return None


def to_tensor(x, float_dtype):
    """A backend tensor of `x` (NumPy arrays moved with the backend's cheapest copy; torch shares their memory);
    floating arrays are cast to `float_dtype`, as Keras does with a layer's inputs."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            x = jax.device_put(x)  # about half the time of jnp.asarray for a large array
        elif backend == "torch":
            import torch

            x = torch.as_tensor(x)
    if not (ops.is_tensor(x) or isinstance(x, keras.KerasTensor)):
        x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" in dtype and dtype != float_dtype:
        x = ops.cast(x, float_dtype)
    return x


def _signature(x):
    return None if x is None else (tuple(x.shape), keras.backend.standardize_dtype(x.dtype))


def _structure(image, labels):
    return image if labels is None else {"image": image, "labels": labels}


def _unstructure(out):
    return (out["image"], out["labels"]) if isinstance(out, dict) else (out, None)


def _build(layer, output_size):
    """A compiled pure program `(state, image, labels) -> ((image, labels), new state)` of `layer._run`.

    `state` are the values of `layer.variables` (the seed generators' states),
    so the program serves any layer with the same configuration.
    """
    variables = list(layer.variables)

    def pure(state, image, labels):
        with keras.StatelessScope(state_mapping=list(zip(variables, state))) as scope:
            out = _unstructure(layer._run(_structure(image, labels), True, output_size))
            new_state = [scope.get_current_value(v) for v in variables]
        return out, new_state

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(pure)
    import tensorflow as tf

    return tf.function(pure, jit_compile=True)


def program_config(layer, config=None):
    """The key under which layers of equal configuration (names aside) share compiled programs: their serialized
    config as JSON, computed once per layer. `config`: the layer's `keras.layers.serialize` output when the caller
    has it (a worker process gets the config it was built from: serializing again would import TensorFlow
    on JAX and torch, 2.2 s per process, as Keras' serializer tests for TensorFlow types when it is installed)."""
    if config is not None:
        layer._program_config = json.dumps(_without_names(config), sort_keys=True, default=str)
    elif not hasattr(layer, "_program_config"):
        program_config(layer, keras.saving.serialize_keras_object(layer))
    return layer._program_config


def _without_names(config):
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


_PROGRAMS = collections.OrderedDict()  # shared by layers with the same configuration (most recent 32)


def run_compiled(layer, image, labels, output_size):
    """Run `layer._run` on `(image, labels)` as a compiled program, one per configuration and input signature.

    Layers with the same configuration (names aside) share the program: two
    datasets built with equal pipelines compile once.
    """
    key = (keras.backend.backend(), program_config(layer), _signature(image), _signature(labels),
           None if output_size is None else tuple(np.broadcast_to(output_size, len(image.shape) - 2).tolist()))
    program = _PROGRAMS.get(key)
    if program is None:
        program = _PROGRAMS[key] = _build(layer, output_size)
        while len(_PROGRAMS) > 32:
            _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    variables = layer.variables
    out, new_state = program([v.value for v in variables], image, labels)
    for v, value in zip(variables, new_state):
        v.assign(value)
    return out
