"""Explain model decisions: saliency, SmoothGrad, Grad-CAM, occlusion, LIME, activation maximisation.

Every explainer takes a Keras model, a channels-last batch `(N, *S, C)` (2D or
3D) and a class index or a score function, and returns NumPy maps `(N, *S)`.
Segmentation models are explained through `region_score(class_index, mask)`.
Gradients and the scores of perturbed copies come from
`keras_medseg.utils.gradients.compiled_call`: one compiled function per
(model, target, input signature), cached weakly on the model (`tf.function`
on TensorFlow, `jax.jit` on JAX, eager on torch).
Attention maps of attention-pooling models: `upsample_attention`, `attention_mass_inside`.
"""

from keras_medseg.explain._scores import make_score_fn, region_score
from keras_medseg.explain.activation_maximization import ActivationMaximization, activation_maximization
from keras_medseg.explain.attention import attention_mass_inside, upsample_attention
from keras_medseg.explain.gradcam import find_last_conv_layer, gradcam
from keras_medseg.explain.image import ImageExplanation, explain_file, explain_image
from keras_medseg.explain.lime import LimeExplanation, lime, superpixels
from keras_medseg.explain.occlusion import occlusion
from keras_medseg.explain.plotting import overlay, take_slice
from keras_medseg.explain.saliency import saliency, smoothgrad

__all__ = [
    "ActivationMaximization",
    "ImageExplanation",
    "LimeExplanation",
    "activation_maximization",
    "attention_mass_inside",
    "explain_file",
    "explain_image",
    "find_last_conv_layer",
    "gradcam",
    "lime",
    "make_score_fn",
    "occlusion",
    "overlay",
    "region_score",
    "saliency",
    "smoothgrad",
    "superpixels",
    "take_slice",
    "upsample_attention",
]
