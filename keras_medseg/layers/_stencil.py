"""Private base for the finite-difference plugin layers (one N-D implementation)."""

import keras

from keras_medseg.ops.finite_differences import check_kernel_size_arg
from keras_medseg.utils.validation import standardize_kernel_size


class StencilLayer(keras.layers.Layer):
    """Owns `kernel_size` / `trainable_kernels` and creates stencil-initialised kernels.

    Subclasses call `self._spatial_dims(shape, name)` in `build` and
    `self._stencil_weight(...)` to create a kernel `(*kernel_size, C_in, C_out)`
    initialised to a finite-difference stencil; with `trainable_kernels=False`
    the kernel is frozen at the stencil (the textbook scheme).
    """

    def __init__(self, kernel_size=3, trainable_kernels=True, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_kernel_size_arg(kernel_size)
        if not isinstance(trainable_kernels, bool):
            raise TypeError(f"`trainable_kernels` must be a bool. Received: trainable_kernels={trainable_kernels!r}")
        self.trainable_kernels = trainable_kernels

    def _spatial_dims(self, shape, name):
        shape = tuple(shape)
        d = len(shape) - 2
        if d not in (2, 3):
            raise ValueError(
                f"{type(self).__name__}: `{name}` must be a 4D (N, H, W, C) or 5D (N, D, H, W, C) "
                f"channels-last tensor. Received: {name}.shape={shape}"
            )
        if isinstance(self.kernel_size, tuple) and len(self.kernel_size) != d:
            raise ValueError(
                f"`kernel_size` must have one entry per spatial axis of `{name}` ({d}). "
                f"Received: kernel_size={self.kernel_size}"
            )
        return d

    def _level_set_pair(self, input_shape, second, one_per_axis=False, second_what="", channels=(1,)):
        """Check the shapes of a two-input call `[u, second]` and return `(u_shape, second_shape, d)`.

        `u` must be `(N, *S, 1)`; `second` must have the same rank and a
        channel count in `channels`, or one channel per spatial axis when
        `one_per_axis`.
        """
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not isinstance(
            input_shape[0], (list, tuple)
        ):
            raise ValueError(
                f"{type(self).__name__} expects two inputs [u, {second}]. Received: input_shape={input_shape}"
            )
        u_shape, v_shape = (tuple(s) for s in input_shape)
        d = self._spatial_dims(u_shape, "u")
        if u_shape[-1] != 1:
            raise ValueError(f"`u` must have exactly one channel. Received: u.shape={u_shape}")
        want = (d,) if one_per_axis else tuple(channels)
        if len(v_shape) != len(u_shape) or v_shape[-1] not in want:
            raise ValueError(
                f"`{second}`{second_what} must have shape (N, *spatial, {' or '.join(map(str, want))}) matching "
                f"u.shape={u_shape}. Received: {second}.shape={v_shape}"
            )
        return u_shape, v_shape, d

    def _stencil_weight(self, name, d, c_in, c_out, initializer):
        sizes = standardize_kernel_size(self.kernel_size, d, minimum=3)
        return self.add_weight(
            name=name,
            shape=sizes + (c_in, c_out),
            initializer=initializer,
            trainable=self.trainable_kernels,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "trainable_kernels": self.trainable_kernels})
        return config
