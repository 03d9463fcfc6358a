"""`SeedRegionGate`: the balloon of a level set pushes only through pixels like its seed's (a region test)."""

import keras
from keras import ops

from keras_medseg.ops.finite_differences import conv_edge, gaussian_kernel
from keras_medseg.ops.level_set_stopping import (
    CONFIDENCE_FLOOR,
    CONFIDENCE_K,
    REGION_MARGIN,
    seed_interval_mask,
    seed_region_mask,
)
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


@register
class SeedRegionGate(keras.layers.Layer):
    """Gate the propagation image of a level set by a region test around its seed (no weights).

    The image (Gaussian-smoothed, channels averaged) is split by Otsu's
    threshold into a low and a high class; the balloon may push only on the
    side of the threshold where the seed (`initial_level_set < 0`) lies, and
    up to `margin` times the gap between the class means beyond it
    (`keras_medseg.ops.level_set_stopping.seed_region_mask`). With a
    `confidence_k` it must also lie within `confidence_k` standard deviations
    of the seed pixels' mean intensity (std at least `confidence_floor` times
    the class-mean gap; `keras_medseg.ops.level_set_stopping.seed_interval_mask`):
    Otsu's split puts two tissues of one class (aorta and muscle in CT,
    ventricles and white matter in T1) on the same side, the seed's own
    statistics separate them. The propagation channel of the edge indicator is
    multiplied by the product of the masks; the edge indicator itself
    (curvature and convection) is left as it is.

    Args:
        smoothing_sigma: Gaussian smoothing of the image before the test
            (voxels), default 1.0; None for none.
        margin: non-negative fraction of the class-mean gap tolerated beyond
            the threshold, default 0.3 (`keras_medseg.ops.level_set_stopping.REGION_MARGIN`);
            None for no Otsu test.
        confidence_k: half-width of the seed's intensity interval in its
            standard deviations, default 4.0
            (`keras_medseg.ops.level_set_stopping.CONFIDENCE_K`); None for no
            interval test.
        confidence_floor: the smallest standard deviation used, as a fraction
            of the gap between Otsu's class means, default 0.05
            (`keras_medseg.ops.level_set_stopping.CONFIDENCE_FLOOR`).
        **kwargs: base layer arguments.

    Input shape: `[image (N, *S, C), g (N, *S, 1 or 2), initial_level_set (N, *S, 1)]`;
        `g` from `keras_medseg.layers.EdgeIndicator` (with a `threshold`: `[g, P]`;
        without one `P = g`).
    Output shape: `(N, *S, 2)`: `[g, P * mask]`.

    Raises:
        ValueError: `smoothing_sigma <= 0`, `margin < 0`, `confidence_k <= 0`,
            `confidence_floor < 0`, not three inputs,
            mismatched spatial shapes, `g` with other than 1 or 2 channels.

    Example:
    >>> gate = keras_medseg.layers.SeedRegionGate()
    >>> g2 = gate([image, keras_medseg.layers.EdgeIndicator(threshold="auto")(image), u0])

    Reference: N. Otsu, "A Threshold Selection Method from Gray-Level Histograms" (1979); the intensity-gated
    propagation of ITK's threshold level set (ITK Software Guide, "Threshold Level Set Segmentation"); the
    confidence interval of ITK's confidence-connected region growing (ITK Software Guide, "Region Growing").
    """

    def __init__(self, smoothing_sigma=1.0, margin=REGION_MARGIN, confidence_k=CONFIDENCE_K,
                 confidence_floor=CONFIDENCE_FLOOR, **kwargs):
        super().__init__(**kwargs)
        self.smoothing_sigma = None if smoothing_sigma is None else float(check_positive(smoothing_sigma,
                                                                                      "smoothing_sigma"))
        self.margin = None if margin is None else float(check_positive(margin, "margin", allow_zero=True))
        self.confidence_k = None if confidence_k is None else float(check_positive(confidence_k, "confidence_k"))
        self.confidence_floor = float(check_positive(confidence_floor, "confidence_floor", allow_zero=True))

    def _check(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) != 3 or not isinstance(shapes[0], (list, tuple)):
            raise ValueError(f"SeedRegionGate expects three inputs [image, g, initial_level_set]. "
                             f"Received: input_shape={shapes}")
        image, g, u = (tuple(s) for s in shapes)
        for name, shape in (("g", g), ("initial_level_set", u)):
            if len(shape) != len(image) or any(a is not None and b is not None and a != b
                                                for a, b in zip(image[1:-1], shape[1:-1])):
                raise ValueError(f"`{name}` must have the spatial shape of the image {image[1:-1]}. "
                                 f"Received: {name}.shape={shape}")
        if g[-1] not in (1, 2):
            raise ValueError(f"`g` must have 1 or 2 channels. Received: g.shape={g}")
        return image, g, u

    def build(self, input_shape):
        image, _, _ = self._check(input_shape)
        self._smoothing = None
        if self.smoothing_sigma is not None:
            self._smoothing = gaussian_kernel(self.smoothing_sigma, len(image) - 2, 1)

    def call(self, inputs):
        image, g, u = inputs
        self._check([tuple(image.shape), tuple(g.shape), tuple(u.shape)])  # every call: a model built for any size
        grey = ops.mean(ops.cast(image, g.dtype), axis=-1, keepdims=True)
        if self._smoothing is not None:
            grey = conv_edge(grey, self._smoothing)
        propagation = g[..., 1:] if g.shape[-1] == 2 else g
        if self.margin is not None:
            propagation = propagation * ops.cast(seed_region_mask(grey, u, self.margin), g.dtype)
        if self.confidence_k is not None:
            propagation = propagation * ops.cast(
                seed_interval_mask(grey, u, self.confidence_k, self.confidence_floor), g.dtype)
        return ops.concatenate([g[..., :1], propagation], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1][:-1]) + (2,)

    def get_config(self):
        config = super().get_config()
        config.update({"smoothing_sigma": self.smoothing_sigma, "margin": self.margin,
                       "confidence_k": self.confidence_k, "confidence_floor": self.confidence_floor})
        return config
