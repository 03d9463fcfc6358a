"""Pure functions on `keras.ops` (TensorFlow and JAX), channels-last `(N, *spatial, C)`.

Boundary convention: every finite-difference op replicates the edge value
(zero flux, Neumann) except `implicit_conv_solve`, which is periodic because it
works in the Fourier domain.
"""

# -- one import line per op module; keep alphabetical --
from keras_medseg.ops.attention import attention_pool, resize_matrix, resize_spatial  # noqa: F401
from keras_medseg.ops.finite_differences import conv_edge, pad_edge, stencil_kernel  # noqa: F401
from keras_medseg.ops.implicit import implicit_conv_solve  # noqa: F401
from keras_medseg.ops.level_set import (  # noqa: F401
    curvature,
    edge_indicator,
    reinitialize,
    upwind_advection,
    upwind_grad_norm,
)
from keras_medseg.ops.sampling import map_coordinates, map_image_and_labels  # noqa: F401
from keras_medseg.ops.upsample import upsample_linear  # noqa: F401
from keras_medseg.ops.windows import space_to_depth, window_attention  # noqa: F401

__all__ = [
    "attention_pool",
    "conv_edge",
    "curvature",
    "edge_indicator",
    "implicit_conv_solve",
    "map_coordinates",
    "map_image_and_labels",
    "pad_edge",
    "reinitialize",
    "resize_matrix",
    "resize_spatial",
    "space_to_depth",
    "stencil_kernel",
    "upsample_linear",
    "upwind_advection",
    "upwind_grad_norm",
    "window_attention",
]
