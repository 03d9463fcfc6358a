"""Explain one image file with a saved model: the library behind `keras-medseg explain`.

`explain_file(checkpoint, image_path, method="gradcam")` loads the model
(`keras_medseg.utils.model_io.load_model`, `safe_mode=True`), reads the image
(`keras_medseg.data.io.read_array`: NaN/Inf refused with the file named),
brings it to the model's input layout (`prepare_input`) and runs one
explainer. A model with one sigmoid output is explained as binary: its only
output is the foreground probability, so there is no "class 1" to ask for.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["METHODS", "ImageExplanation", "explain_file", "explain_image", "load_checkpoint", "load_image",
           "prepare_input"]

METHODS = ("saliency", "smoothgrad", "gradcam", "occlusion", "lime")


@dataclasses.dataclass
class ImageExplanation:
    """`heat` `(*S)` map, the model input `x` `(1, *S, C)`, the class explained and a readable label of it."""

    heat: np.ndarray
    x: np.ndarray
    class_index: int
    label: str


def load_checkpoint(path):
    """Load a `.keras` checkpoint with `safe_mode=True` (`keras_medseg.utils.model_io.load_model`, not compiled)."""
    from keras_medseg.utils.model_io import load_model

    return load_model(path, compile=False)


def load_image(path):
    """Read one image/volume (`keras_medseg.data.io.read_array`): .npy, .npz, NIfTI, PNG/JPEG/TIFF."""
    from keras_medseg.data.io import read_array

    return read_array(path, "IMAGE file")  # refuses NaN/Inf, naming the file


def prepare_input(image, model):
    """Add batch/channel axes and resize to the model's input grid when that is fixed.

    Args:
        image: array `(*S)` or `(*S, C)`; RGB(A) is averaged to one channel for a one-channel model.
        model: a Keras model with one image input `(N, *S, C)`.

    Returns:
        float32 array `(1, *S, C)`.

    Raises:
        ValueError: wrong number of spatial axes or channels for the model (the message gives both shapes).
    """
    from skimage.transform import resize

    shape = tuple(model.inputs[0].shape[1:])
    spatial, channels = shape[:-1], shape[-1]
    img = np.asarray(image, dtype="float32")
    if img.ndim == len(spatial):
        img = img[..., None]
    if img.ndim != len(spatial) + 1:
        raise ValueError(
            f"IMAGE must have {len(spatial)} spatial axes (and optionally channels) for this model "
            f"(input {shape}). Received an array of shape {image.shape}."
        )
    if channels is not None and img.shape[-1] != channels:
        if img.shape[-1] in (3, 4) and channels == 1:
            img = img[..., :3].mean(axis=-1, keepdims=True)
        elif img.shape[-1] == 1:
            img = np.repeat(img, channels, axis=-1)
        else:
            raise ValueError(f"IMAGE has {img.shape[-1]} channels, the model expects {channels}.")
    target = tuple(s if s is not None else img.shape[i] for i, s in enumerate(spatial))
    if img.shape[:-1] != target:
        img = resize(img, target + (img.shape[-1],), order=1, preserve_range=True).astype("float32")
    return img[None]


def explain_image(model, x, method="gradcam", class_index=None, layer=None, samples=32, patch=16, stride=None,
                  progress=True) -> ImageExplanation:
    """Run one explainer on a prepared batch `x` `(1, *S, C)`; the predicted class when `class_index` is None.

    Raises:
        ValueError: unknown `method`, or a `class_index` the model does not output (a one-output sigmoid
            model has only class 0, its foreground probability).
    """
    import keras

    from keras_medseg import explain

    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    outputs = int(model.outputs[0].shape[-1])
    y = keras.ops.convert_to_numpy(model(x, training=False))
    if class_index is None:
        scores = y.reshape(-1, y.shape[-1]).sum(axis=0) if y.ndim > 2 else y[0]
        class_index = int(np.argmax(scores))
    if not 0 <= class_index < outputs:
        what = ("it has one sigmoid output (class 0, the foreground probability)" if outputs == 1
                else f"it has {outputs} classes (0 to {outputs - 1})")
        raise ValueError(f"`class_index` {class_index} does not exist for this model: {what}.")
    label = "foreground probability" if outputs == 1 else f"class {class_index}"
    if method == "saliency":
        heat = explain.saliency(model, x, class_index)
    elif method == "smoothgrad":
        heat = explain.smoothgrad(model, x, class_index, samples=samples)
    elif method == "gradcam":
        heat = explain.gradcam(model, x, class_index, layer=layer)
    elif method == "occlusion":
        heat = explain.occlusion(model, x, class_index, patch=patch, stride=stride, progress=progress)
    else:
        heat = explain.lime(model, x, class_index, samples=max(samples, 2), progress=progress).maps
    return ImageExplanation(heat=np.asarray(heat[0]), x=x, class_index=class_index, label=label)


def explain_file(checkpoint, image_path, method="gradcam", **kwargs) -> ImageExplanation:
    """`explain_image` on an image file with a saved model (see the module docstring)."""
    model = load_checkpoint(checkpoint)
    return explain_image(model, prepare_input(load_image(image_path), model), method=method, **kwargs)
