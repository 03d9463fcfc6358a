"""Registered kernel initialisers: finite-difference stencils for the plugin layers.

A plugin layer's kernel *starts* as a finite-difference stencil; frozen, the
layer reproduces the textbook scheme, trained, it becomes the Level Set
Network. The initialisers are ordinary `keras.initializers.Initializer`
subclasses, serialisable in `.keras` files.
"""

import keras
from keras import ops

from keras_medseg.ops.finite_differences import STENCILS_1D, stencil_kernel
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_choice


@register
class StencilInitializer(keras.initializers.Initializer):
    """Fill a convolution kernel `(*K, C_in, C_out)` with 1D stencils, one per spatial axis.

    Args:
        kind: `"forward"` (`D^+`), `"backward"` (`D^-`) or `"central"` (`D^0`).
            Default `"central"`.
        axis_channel: `"out"` (default): output channel k holds the stencil
            along spatial axis k for every input channel (a gradient,
            `(*K, C, d)`); `"in"`: input channel k holds it for every output
            channel (a divergence, `(*K, d, C)`). Channels beyond the number of
            spatial axes are zero.

    Raises:
        ValueError: unknown `kind` / `axis_channel`, or a kernel shape with
            even or smaller-than-3 spatial sizes.

    Example:
    >>> init = keras_medseg.initializers.StencilInitializer("forward")
    >>> init((3, 3, 1, 2))  # D_y^+ and D_x^+

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (finite-difference kernels in the Level Set Network).
    """

    def __init__(self, kind="central", axis_channel="out"):
        self.kind = check_choice(kind, "kind", tuple(STENCILS_1D))
        self.axis_channel = check_choice(axis_channel, "axis_channel", ("out", "in"))

    def __call__(self, shape, dtype=None):
        dtype = dtype or keras.config.floatx()
        return ops.convert_to_tensor(stencil_kernel(self.kind, shape, self.axis_channel), dtype=dtype)

    def get_config(self):
        return {"kind": self.kind, "axis_channel": self.axis_channel}


@register
class ForwardDifference(StencilInitializer):
    """`StencilInitializer(kind="forward")`: `D_k^+ u(i) = u(i+1) - u(i)` along each axis."""

    def __init__(self, axis_channel="out"):
        super().__init__("forward", axis_channel)

    def get_config(self):
        return {"axis_channel": self.axis_channel}


@register
class BackwardDifference(StencilInitializer):
    """`StencilInitializer(kind="backward")`: `D_k^- u(i) = u(i) - u(i-1)` along each axis."""

    def __init__(self, axis_channel="out"):
        super().__init__("backward", axis_channel)

    def get_config(self):
        return {"axis_channel": self.axis_channel}


@register
class CentralDifference(StencilInitializer):
    """`StencilInitializer(kind="central")`: `D_k^0 u(i) = (u(i+1) - u(i-1)) / 2` along each axis."""

    def __init__(self, axis_channel="out"):
        super().__init__("central", axis_channel)

    def get_config(self):
        return {"axis_channel": self.axis_channel}
