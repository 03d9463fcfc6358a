"""`LinearUpsampling`: bilinear / trilinear upsampling by integer factors for 2D and 3D grids."""

import keras

from keras_medseg.ops.upsample import _factors, upsample_linear
from keras_medseg.utils.serialization import register


@register
class LinearUpsampling(keras.layers.Layer):
    """Upsample `(N, *S, C)` by integer factors with linear interpolation (half-pixel centres, clamped edges).

    What `keras.layers.UpSampling2D(interpolation="bilinear")` does in 2D, also
    in 3D (`UpSampling3D` only repeats voxels) and for sizes known only at run
    time; equal to `torch.nn.functional.interpolate(mode="trilinear",
    align_corners=False)`, MONAI's non-trainable upsampling in SegResNet. No
    weights. See `keras_medseg.ops.upsample_linear`.

    Args:
        factor: int or one int per spatial axis (default 2).
        **kwargs: base layer arguments.

    Input shape: `(N, H, W, C)` or `(N, D, H, W, C)`.
    Output shape: `(N, *(S * factor), C)`.

    Raises:
        ValueError: bad `factor`, or an input that is not 2D/3D channels-last.

    Example:

    >>> y = keras_medseg.layers.LinearUpsampling(2)(np.zeros((1, 4, 4, 4, 8), "float32"))  # (1, 8, 8, 8, 8)

    Reference: Myronenko, "3D MRI brain tumor segmentation using autoencoder
    regularization", BrainLes 2018 (trilinear upsampling in the decoder).
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(factor, list):
            factor = tuple(factor)
        _factors(factor, len(factor) if isinstance(factor, tuple) else 1)
        self.factor = factor

    def build(self, input_shape):
        d = len(input_shape) - 2
        if d not in (2, 3):
            raise ValueError("LinearUpsampling expects (N, H, W, C) or (N, D, H, W, C). "
                             f"Received: input_shape={tuple(input_shape)}")
        _factors(self.factor, d)

    def call(self, x):
        return upsample_linear(x, self.factor)

    def compute_output_shape(self, input_shape):
        factors = _factors(self.factor, len(input_shape) - 2)
        spatial = tuple(None if s is None else s * f for s, f in zip(input_shape[1:-1], factors))
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config["factor"] = self.factor
        return config
