"""Geometric augmentation: flips, 90-degree rotations, random affine and elastic warps (2D/3D).

The image is resampled with linear interpolation and the labels with nearest
neighbour, from the same per-sample draw. See `keras_medseg.data.augment.base`
for the input structure.

Every transform here is also a map of points (output voxel -> the input point
it reads, in voxel coordinates of the output frame): `map_points` for any
points, `map_grid` for the output grid, and `bound`, a bound of how far the
map reaches from the frame's centre. `keras_medseg.data.augment.warp` chains
these maps so that a `Compose` of them samples the input once.
"""

import math

import numpy as np
from keras import ops

from keras_medseg.data.augment.base import RandomTransform, check_range
from keras_medseg.data.augment.warp import affine_from_points, grid_affine, identity_points, rotation_reach
from keras_medseg.ops.sampling import PADDING_MODES as _PADDING
from keras_medseg.ops.sampling import map_coordinates
from keras_medseg.utils.serialization import register

ELASTIC_TRUNCATION = 3.0  # control-point displacements are clipped at this many standard deviations


def _centre(frame):
    return ops.reshape(ops.convert_to_tensor([(s - 1) / 2.0 for s in frame], "float32"), (1, -1, 1))


def _flat_points(coords):
    """`(N, d, *S)` -> `(N, d, prod(S))`."""
    return ops.reshape(coords, (ops.shape(coords)[0], coords.shape[1], -1))


def _sample_pair(layer, image, labels, coords):
    """Image (linear) and labels (nearest) at `coords` with the layer's padding."""
    if image is not None:
        return map_coordinates(ops.cast(image, "float32"), coords, 1, layer.padding_mode, layer.fill_value)
    return map_coordinates(labels, coords, 0, layer.padding_mode, 0)


def _check_axes(axes, name):
    if axes is None:
        return None
    if not isinstance(axes, (list, tuple)) or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2
                                                    for a in axes):
        raise ValueError(f"`{name}` must be a tuple of spatial axes in {{0, 1, 2}}. Received: {name}={axes!r}")
    return tuple(axes)


def _spatial_axes(axes, spatial, name):
    d = len(spatial)
    axes = tuple(range(d)) if axes is None else axes
    if any(a >= d for a in axes):
        raise ValueError(f"`{name}` must name spatial axes < {d} for a {d}D input. Received: {name}={axes}")
    return axes


@register
class RandomFlip(RandomTransform):
    """Random mirror flips along spatial axes (image and labels alike).

    A transformed sample is flipped along each axis of `axes` with chance 1/2,
    independently (all 2**k combinations are equally likely).

    Args:
        axes: spatial axes that may flip, 0-based over `(D, H, W)` / `(H, W)`
            (default None: all).
        probability: chance a sample is transformed (default 1.0).
        seed: int seed (default None).

    Input/output: `(N, *S, C)` image, optional `(N, *S[, 1])` labels, same shapes.

    Example:

    >>> out = keras_medseg.data.augment.RandomFlip(axes=(1, 2), seed=0)({"image": x, "labels": y})
    """

    geometric = True
    fusable = True
    affine_map = True  # an affine map of points (see `keras_medseg.data.augment.window`)

    def __init__(self, axes=None, probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.axes = _check_axes(axes, "axes")

    def map_points(self, params, points, frame):
        """Mirror the drawn axes: `p_a -> (F_a - 1) - p_a` (`points` `(N, d, K)` in frame voxels)."""
        coords = [points[:, i] for i in range(len(frame))]
        for k, a in enumerate(params["axes"]):
            flag = params["flip"][:, k:k + 1]
            coords[a] = ops.where(flag, (frame[a] - 1.0) - coords[a], coords[a])
        return ops.stack(coords, axis=1)

    def map_grid(self, params, frame):
        return self.map_points(params, identity_points(frame), frame)

    def affine(self, params, frame, batch_size):
        """`(M, b)`: `map_points` as `M p + b`."""
        return affine_from_points(self, params, frame, batch_size)

    def bound(self, half):
        return half

    def draw(self, batch_size, spatial):
        axes = _spatial_axes(self.axes, spatial, "axes")
        return {"flip": self.uniform((batch_size, max(len(axes), 1)), 0.0, 1.0) < 0.5, "axes": axes}

    def _apply(self, x, params):
        rank = len(x.shape)
        for k, a in enumerate(params["axes"]):
            flag = ops.reshape(params["flip"][:, k], (-1,) + (1,) * (rank - 1))
            x = ops.where(flag, ops.flip(x, axis=a + 1), x)
        return x

    def transform_image(self, image, params):
        return self._apply(image, params)

    def transform_labels(self, labels, params):
        return self._apply(labels, params)

    def get_config(self):
        config = super().get_config()
        config["axes"] = self.axes
        return config


@register
class RandomRotate90(RandomTransform):
    """Random rotation by 90, 180 or 270 degrees in one spatial plane.

    Args:
        axes: the plane, two spatial axes (default (0, 1); for 3D `(1, 2)`
            rotates the in-plane `(H, W)` axes). Its two sizes must be equal.
        probability: chance a sample is rotated (default 1.0); a rotated sample
            gets k = 1, 2 or 3 quarter turns with equal chance.
        seed: int seed (default None).

    Raises:
        ValueError: `axes` not two distinct spatial axes, or a non-square plane.

    Example:

    >>> out = keras_medseg.data.augment.RandomRotate90(axes=(1, 2), seed=0)((x, y))
    """

    geometric = True

    def __init__(self, axes=(0, 1), probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        axes = _check_axes(axes, "axes")
        if axes is None or len(axes) != 2 or axes[0] == axes[1]:
            raise ValueError(f"`axes` must be two distinct spatial axes. Received: axes={axes!r}")
        self.axes = axes

    fusable = True
    affine_map = True

    def map_points(self, params, points, frame):
        """`k` quarter turns about the frame's centre in the plane `axes` (as `numpy.rot90`)."""
        a, b = self.axes
        centre = (frame[a] - 1) / 2.0
        coords = [points[:, i] for i in range(len(frame))]
        ua, ub = coords[a] - centre, coords[b] - centre
        k = params["k"][:, None]
        coords[a] = centre + ops.where(k == 1, ub, ops.where(k == 2, -ua, -ub))
        coords[b] = centre + ops.where(k == 1, -ua, ops.where(k == 2, -ub, ua))
        return ops.stack(coords, axis=1)

    def map_grid(self, params, frame):
        return self.map_points(params, identity_points(frame), frame)

    def affine(self, params, frame, batch_size):
        """`(M, b)`: `map_points` as `M p + b`."""
        return affine_from_points(self, params, frame, batch_size)

    def bound(self, half):
        a, b = self.axes
        out = np.array(half, dtype=float)
        out[a] = out[b] = max(half[a], half[b])
        return out

    def draw(self, batch_size, spatial):
        a, b = _spatial_axes(self.axes, spatial, "axes")
        if spatial[a] != spatial[b]:
            raise ValueError(f"RandomRotate90 needs a square plane; axes {self.axes} have sizes "
                             f"{spatial[a]} and {spatial[b]}. Received: image spatial shape={spatial}")
        k = ops.cast(ops.floor(self.uniform((batch_size,), 1.0, 4.0)), "int32")
        return {"k": ops.clip(k, 1, 3)}

    def _apply(self, x, params):
        a, b = self.axes[0] + 1, self.axes[1] + 1
        rank = len(x.shape)
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        out = x
        turned = x
        for k in (1, 2, 3):
            # one quarter turn counter-clockwise in (a, b): flip b, then swap a and b (as numpy.rot90)
            turned = ops.transpose(ops.flip(turned, axis=b), perm)
            flag = ops.reshape(ops.equal(params["k"], k), (-1,) + (1,) * (rank - 1))
            out = ops.where(flag, turned, out)
        return out

    def transform_image(self, image, params):
        return self._apply(image, params)

    def transform_labels(self, labels, params):
        return self._apply(labels, params)

    def get_config(self):
        config = super().get_config()
        config["axes"] = self.axes
        return config


def _rotation(angle, i, j, d):
    """`(N, d, d)` rotation by `angle` (N,) in the plane of axes (i, j)."""
    c, s = ops.cos(angle), ops.sin(angle)
    one, zero = ops.ones_like(angle), ops.zeros_like(angle)
    rows = []
    for r in range(d):
        row = []
        for q in range(d):
            if (r, q) == (i, i) or (r, q) == (j, j):
                row.append(c)
            elif (r, q) == (i, j):
                row.append(-s)
            elif (r, q) == (j, i):
                row.append(s)
            else:
                row.append(one if r == q else zero)
        rows.append(ops.stack(row, axis=-1))
    return ops.stack(rows, axis=-2)


def _planes(d):
    return [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]


@register
class RandomAffine(RandomTransform):
    """Random rotation, scaling and translation about the centre (linear image, nearest labels).

    Output voxel `o` takes the input value at `M (o - c) + c + t`, with `c`
    the centre, `M = R diag(1 / s)`, `R` the product of rotations in the
    planes `(1, 2)`, `(0, 2)`, `(0, 1)` (3D) or `(0, 1)` (2D), scale factors
    `s` and translation `t` (voxels), all drawn uniformly per sample. Checked
    against `scipy.ndimage.affine_transform` (`order=1`, `mode="grid-constant"`).

    Args:
        rotation: largest absolute angle in radians, one number or one per
            plane (1 in 2D, 3 in 3D); default 0.
        scaling: largest relative zoom: factors in `[1 - scaling, 1 + scaling]`
            (number) or a `(low, high)` factor range; default 0 (no zoom).
        translation: largest absolute shift in voxels (default 0).
        isotropic: one scale factor for all axes (default True).
        padding_mode: "constant" (outside is `fill_value`; labels 0) or "nearest".
        fill_value: image value outside the input (default 0.0).
        probability, seed: see `RandomTransform`.

    Raises:
        ValueError: negative ranges, a zoom factor <= 0, an unknown `padding_mode`.

    Example:

    >>> aff = keras_medseg.data.augment.RandomAffine(rotation=0.3, scaling=0.1, translation=5, seed=0)
    >>> out = aff({"image": x, "labels": y})
    """

    geometric = True
    fusable = True
    warps = True
    affine_map = True

    def __init__(self, rotation=0.0, scaling=0.0, translation=0.0, isotropic=True, padding_mode="constant",
                 fill_value=0.0, probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        if isinstance(rotation, (list, tuple)):
            if len(rotation) not in (1, 3):
                raise ValueError("`rotation` must be a number or 1 (2D) / 3 (3D) angles. "
                                 f"Received: rotation={rotation!r}")
            rotation = tuple(float(check_range(r, "rotation", symmetric=True)[1]) for r in rotation)
        else:
            rotation = float(check_range(rotation, "rotation", symmetric=True)[1])
        self.rotation = rotation
        if isinstance(scaling, (int, float)) and not isinstance(scaling, bool):
            if not 0 <= scaling < 1:
                raise ValueError("`scaling` must be in [0, 1) or a (low, high) factor range. "
                                 f"Received: scaling={scaling!r}")
            self._scale_range = (1.0 - scaling, 1.0 + scaling)
        else:
            self._scale_range = check_range(scaling, "scaling")
            if self._scale_range[0] <= 0:
                raise ValueError(f"`scaling` factors must be > 0. Received: scaling={scaling!r}")
        self.scaling = scaling if not isinstance(scaling, list) else tuple(scaling)
        self.translation = float(check_range(translation, "translation", symmetric=True)[1])
        self.isotropic = bool(isotropic)
        if padding_mode not in _PADDING:
            raise ValueError(f"`padding_mode` must be one of {_PADDING}. Received: padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        self.fill_value = float(fill_value)

    def _angles(self, d):
        planes = _planes(d)
        angles = self.rotation if isinstance(self.rotation, tuple) else (self.rotation,) * len(planes)
        if len(angles) != len(planes):
            raise ValueError(f"`rotation` needs {len(planes)} angle(s) for a {d}D input. "
                             f"Received: rotation={self.rotation}")
        return planes, angles

    def draw(self, batch_size, spatial):
        d = len(spatial)
        planes, angles = self._angles(d)
        matrix = None
        for (i, j), a in zip(planes, angles):
            r = _rotation(self.uniform((batch_size,), -a, a), i, j, d)
            matrix = r if matrix is None else ops.matmul(matrix, r)
        lo, hi = self._scale_range
        s = self.uniform((batch_size, 1 if self.isotropic else d), lo, hi)
        s = ops.broadcast_to(s, (batch_size, d))
        matrix = matrix * ops.expand_dims(1.0 / s, 1)  # R @ diag(1/s)
        shift = self.uniform((batch_size, d), -self.translation, self.translation)
        return {"matrix": matrix, "shift": shift}

    def map_points(self, params, points, frame):
        """`M (p - c) + c + t` for `points` `(N, d, K)` in frame voxels (`c` the frame's centre)."""
        centre = _centre(frame)
        return ops.matmul(params["matrix"], points - centre) + centre + params["shift"][..., None]

    def map_grid(self, params, frame):
        return self.map_points(params, identity_points(frame), frame)

    def affine(self, params, frame, batch_size):
        """`(M, b)`: `map_points` as `M p + b` (`b = c + t - M c`)."""
        centre = _centre(frame)  # (1, d, 1)
        offset = centre[:, :, 0] + params["shift"] - ops.matmul(params["matrix"], centre)[:, :, 0]
        return params["matrix"], offset

    def bound(self, half):
        """Half-widths reached from a box of half-widths `half`: `max |M| half + t` over the drawable `M`."""
        planes, angles = self._angles(len(half))
        reach = rotation_reach(tuple(planes), tuple(float(a) for a in angles), tuple(float(h) for h in half))
        return reach / self._scale_range[0] + self.translation

    def coordinates(self, params, spatial):
        """`(N, d, *S)` input coordinates of every output voxel for drawn `params`."""
        return ops.reshape(self.map_grid(params, spatial), (-1, len(spatial)) + tuple(spatial))

    def transform_image(self, image, params):
        return _sample_pair(self, image, None, self.coordinates(params, tuple(image.shape[1:-1])))

    def transform_labels(self, labels, params):
        return _sample_pair(self, None, labels, self.coordinates(params, tuple(labels.shape[1:-1])))

    def get_config(self):
        config = super().get_config()
        config.update({"rotation": self.rotation, "scaling": self.scaling, "translation": self.translation,
                       "isotropic": self.isotropic, "padding_mode": self.padding_mode, "fill_value": self.fill_value})
        return config


@register
class RandomElastic(RandomTransform):
    """Random elastic deformation: a smooth random displacement field on a coarse control grid.

    Control points every `spacing` voxels get Gaussian displacements (voxels,
    standard deviation drawn per sample in `magnitude`, truncated at 3
    standard deviations so that a warp reaches a known distance, see
    `margin`), interpolated linearly to every voxel; the image is resampled
    linearly and the labels by nearest neighbour at `x + u(x)`. The control
    grid starts at the output's first voxel.

    Args:
        magnitude: standard deviation of the control-point displacements in
            voxels, a number `m` (drawn in `[0, m]`) or a `(low, high)` range;
            default 0. Keep it under `spacing / 2` to avoid folding.
        spacing: control-point spacing in voxels (default 16).
        padding_mode: "constant" or "nearest" (default "nearest").
        fill_value: image value outside the input for "constant" (default 0).
        probability, seed: see `RandomTransform`.

    Raises:
        ValueError: a negative `magnitude`, `spacing` < 2, unknown `padding_mode`.

    Example:

    >>> el = keras_medseg.data.augment.RandomElastic(magnitude=3.0, spacing=16, seed=0)
    >>> out = el({"image": x, "labels": y})

    Reference: Simard, Steinkraus, Platt, "Best practices for convolutional
    neural networks applied to visual document analysis", ICDAR 2003.
    """

    geometric = True
    fusable = True
    warps = True

    def __init__(self, magnitude=0.0, spacing=16, padding_mode="nearest", fill_value=0.0, probability=1.0,
                 seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.magnitude = check_range(magnitude, "magnitude", low=0.0, minimum=0.0)
        if not isinstance(spacing, int) or isinstance(spacing, bool) or spacing < 2:
            raise ValueError(f"`spacing` must be an int >= 2 (voxels). Received: spacing={spacing!r}")
        self.spacing = spacing
        if padding_mode not in _PADDING:
            raise ValueError(f"`padding_mode` must be one of {_PADDING}. Received: padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        self.fill_value = float(fill_value)

    @property
    def control_spacing(self):
        """Voxels between control points, from the frame's first voxel: the displacement is multilinear on
        each cell of that grid (see `keras_medseg.data.augment.window`)."""
        return self.spacing

    def draw(self, batch_size, spatial):
        d = len(spatial)
        coarse = tuple(max(math.ceil((s - 1) / self.spacing) + 1, 2) for s in spatial)
        std = self.uniform((batch_size,), self.magnitude[0], self.magnitude[1] + 1e-12)
        field = ops.clip(self.normal((batch_size,) + coarse + (d,)), -ELASTIC_TRUNCATION, ELASTIC_TRUNCATION)
        field = field * ops.reshape(std, (-1,) + (1,) * (d + 1))
        return {"field": field}

    def _weights(self, size, coarse):
        """`(size, coarse)` float32 linear interpolation weights of the control points at voxels `0..size-1`."""
        pos = np.arange(size) / float(self.spacing)
        lo = np.minimum(np.floor(pos).astype(int), coarse - 2)
        frac = pos - lo
        weights = np.zeros((size, coarse), np.float32)
        weights[np.arange(size), lo] = 1.0 - frac
        weights[np.arange(size), lo + 1] = frac
        return ops.convert_to_tensor(weights)

    def displacement(self, params, spatial):
        """`(N, d, *S)` displacement `u(x)` of every voxel: the control grid up-sampled linearly, one axis at a time.

        The last axis first (a matmul on the right), then the others from the left, so that every step
        writes a contiguous array and the displacement comes out in the points' layout.
        """
        d = len(spatial)
        field = ops.moveaxis(params["field"], -1, 1)  # (N, d, *coarse), small
        n, coarse = ops.shape(field)[0], tuple(field.shape[2:])
        field = ops.matmul(field, ops.transpose(self._weights(spatial[-1], coarse[-1])))
        for axis in reversed(range(d - 1)):  # field: (N, d, c_0..c_axis, S_axis+1..)
            before, after = math.prod(coarse[:axis]), math.prod(spatial[axis + 1:])
            flat = ops.reshape(field, (n, d, before, coarse[axis], after))
            flat = ops.matmul(self._weights(spatial[axis], coarse[axis]), flat)  # (N, d, before, S_axis, after)
            field = ops.reshape(flat, (n, d) + coarse[:axis] + tuple(spatial[axis:]))
        return field

    def coordinates(self, params, spatial):
        """`(N, d, *S)` input points `x + u(x)` (see `displacement`)."""
        d = len(spatial)
        return ops.reshape(identity_points(spatial), (1, d) + tuple(spatial)) + self.displacement(params, spatial)

    def map_grid_affine(self, params, frame, matrix, offset, apply=None):
        """`(N, d, *frame)` points `M (x + u(x)) + b` of the frame's voxels `x`: as the interpolation is linear,
        `M u(x)` is the displacement of the turned control vectors `M f`, so no full field is multiplied.

        Args:
            params: this transform's draw.
            frame: the output's spatial shape.
            matrix, offset: `(N, d, d)` and `(N, d)`, the affine map applied after this one.
            apply: optional `(N,)` bool coins: where false, no displacement.
        """
        field = params["field"]  # (N, *coarse, d)
        n, d = ops.shape(field)[0], len(frame)
        if apply is not None:
            field = ops.where(ops.reshape(apply, (-1,) + (1,) * (d + 1)), field, ops.zeros_like(field))
        turned = ops.matmul(ops.reshape(field, (n, -1, d)), ops.transpose(matrix, (0, 2, 1)))
        turned = ops.reshape(turned, ops.shape(field))
        return grid_affine(matrix, offset, frame) + self.displacement({"field": turned}, frame)

    def map_grid(self, params, frame):
        return _flat_points(self.coordinates(params, frame))

    def map_points(self, params, points, frame):
        """`p + u(p)`: the control-point displacements interpolated linearly at any points (edge-clamped)."""
        d = len(frame)
        at = ops.reshape(points / float(self.spacing), (ops.shape(points)[0], d, -1))
        disp = map_coordinates(params["field"], at, order=1, padding_mode="nearest")  # (N, K, d)
        return points + ops.transpose(disp, (0, 2, 1))

    def bound(self, half):
        return np.asarray(half, dtype=float) + ELASTIC_TRUNCATION * self.magnitude[1]

    def transform_image(self, image, params):
        return _sample_pair(self, image, None, self.coordinates(params, tuple(image.shape[1:-1])))

    def transform_labels(self, labels, params):
        return _sample_pair(self, None, labels, self.coordinates(params, tuple(labels.shape[1:-1])))

    def get_config(self):
        config = super().get_config()
        config.update({"magnitude": self.magnitude, "spacing": self.spacing, "padding_mode": self.padding_mode,
                       "fill_value": self.fill_value})
        return config
