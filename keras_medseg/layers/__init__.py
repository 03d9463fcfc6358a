"""Plugin layers: thin `keras.layers.Layer`s that own the weights and call `keras_medseg.ops`.

Also the layer factories every 2D/3D builder uses: `layers_for(spatial_dims)` (the conv, pooling and
upsampling classes of one dimensionality) and `normalization(kind, name)` (`factories`).
"""

# -- one import line per layer module; keep alphabetical --
from keras_medseg.layers.attention_pool import AttentionPool  # noqa: F401
from keras_medseg.layers.curvature_conv import CurvatureConv  # noqa: F401
from keras_medseg.layers.edge_indicator import EdgeIndicator  # noqa: F401
from keras_medseg.layers.factories import NORMALIZATION_KINDS, SpatialLayers, layers_for, normalization  # noqa: F401
from keras_medseg.layers.imex_block import IMEXBlock, MultiscaleLaplacian  # noqa: F401
from keras_medseg.layers.implicit_fft_conv import ImplicitFFTConv  # noqa: F401
from keras_medseg.layers.level_set_evolution import LevelSetEvolution  # noqa: F401
from keras_medseg.layers.level_set_region import SeedRegionGate  # noqa: F401
from keras_medseg.layers.level_set_step import LevelSetStep  # noqa: F401
from keras_medseg.layers.linear_upsampling import LinearUpsampling  # noqa: F401
from keras_medseg.layers.position_embedding import PositionEmbedding  # noqa: F401
from keras_medseg.layers.space_to_depth import SpaceToDepth  # noqa: F401
from keras_medseg.layers.upwind_conv import UpwindConv  # noqa: F401
from keras_medseg.layers.window_attention import WindowAttention  # noqa: F401

__all__ = [
    "AttentionPool",
    "CurvatureConv",
    "EdgeIndicator",
    "IMEXBlock",
    "ImplicitFFTConv",
    "LevelSetEvolution",
    "LevelSetStep",
    "LinearUpsampling",
    "NORMALIZATION_KINDS",
    "PositionEmbedding",
    "SeedRegionGate",
    "SpaceToDepth",
    "SpatialLayers",
    "UpwindConv",
    "WindowAttention",
    "layers_for",
    "normalization",
]
