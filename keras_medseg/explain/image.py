"""Explain one image file with a saved model: the library behind `keras-medseg explain`.

`explain_file(checkpoint, image_path, method="gradcam")` loads the model
(`keras_medseg.utils.model_io.load_model`, `safe_mode=True`), reads the image
(`keras_medseg.data.scans.io.read_array`: NaN/Inf refused with the file named),
applies the intensity normalisation the model was trained with, brings it to
the model's input layout (`prepare_input`) and runs one explainer. A model
with one sigmoid output is explained as binary: its only output is the
foreground probability, so there is no "class 1" to ask for.

Normalisation: the preprocessing spec stored with the model
(`keras_medseg.data.scans.preprocess.load_preprocessing`, written by training and
read by `keras-medseg predict`) gives the intensity preset (z-score, CT
window, percentile); the image is normalised with the same function predict
uses (`keras_medseg.data.scans.preprocess.intensity`, over the whole image once it
is on the model's grid, as predict does after resampling), so the explained
input is the one the model saw in training. A model saved without a spec is explained on the image
as given (`spec=None`); pass `spec=` to override. Spacing and orientation in
the spec are not applied: explain reads plain arrays, without a voxel grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["METHODS", "ImageExplanation", "explain_file", "explain_image", "load_checkpoint", "load_image",
           "load_spec", "prepare_input"]

METHODS = ("saliency", "smoothgrad", "gradcam", "occlusion", "lime")


@dataclasses.dataclass
class ImageExplanation:
    """`heat` `(*S)` map, the model input `x` `(1, *S, C)`, the class explained, a readable label of it, and
    `normalisation`: how the input was normalised ("image as given", or the stored preset, e.g. "zscore")."""

    heat: np.ndarray
    x: np.ndarray
    class_index: int
    label: str
    normalisation: str = "image as given"


def load_checkpoint(path):
    """Load a `.keras` checkpoint with `safe_mode=True` (`keras_medseg.utils.model_io.load_model`, not compiled)."""
    from keras_medseg.utils.model_io import load_model

    return load_model(path, compile=False)


def load_image(path):
    """Read one image/volume (`keras_medseg.data.scans.io.read_array`): .npy, .npz, NIfTI, PNG/JPEG/TIFF."""
    from keras_medseg.data.scans.io import read_array

    return read_array(path, "IMAGE file")  # refuses NaN/Inf, naming the file


def load_spec(checkpoint):
    """The preprocessing spec stored with a saved model (`load_preprocessing`), or None when it has none."""
    from keras_medseg.data.scans.preprocess import load_preprocessing

    return load_preprocessing(checkpoint)


def prepare_input(image, model, spec=None, name="IMAGE"):
    """Add batch/channel axes, resize to a fixed input grid, and normalise as in training when `spec` is given.

    Args:
        image: array `(*S)` or `(*S, C)`; RGB(A) is averaged to one channel for a one-channel model.
        model: a Keras model with one image input `(N, *S, C)`.
        spec: None (default: the image as given) or a preprocessing spec (`load_spec(checkpoint)`); its
            `intensity` preset is applied with `keras_medseg.data.scans.preprocess.intensity`, the function
            `keras-medseg predict` uses, to the whole image once it is on the model's grid (after the resize),
            as predict normalises a scan after resampling it.
        name: str, how errors name the image (default "IMAGE").

    Returns:
        float32 array `(1, *S, C)`.

    Raises:
        ValueError: NaN/Inf values (counted), wrong number of spatial axes or channels for the model (the
            message gives both shapes).
    """
    from skimage.transform import resize

    from keras_medseg.utils.finite import check_finite

    check_finite(image, name)
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
    if spec is not None:  # on the model's grid, as predict normalises a scan after resampling it
        from keras_medseg.data.scans.preprocess import intensity

        img = intensity(img, spec.get("intensity") or {"preset": "none"}, name=name, spatial_dims=len(spatial))
    return img[None]


def explain_image(model, x, method="gradcam", class_index=None, layer=None, samples=32, patch=16, stride=None,
                  progress=True) -> ImageExplanation:
    """Run one explainer on a prepared batch `x` `(1, *S, C)`; the predicted class when `class_index` is None.

    Raises:
        ValueError: unknown `method`, NaN/Inf in `x` (counted), or a `class_index` the model does not
            output (a one-output sigmoid model has only class 0, its foreground probability).
    """
    import keras

    from keras_medseg.explain.gradcam import gradcam
    from keras_medseg.explain.lime import lime
    from keras_medseg.explain.occlusion import occlusion
    from keras_medseg.explain.saliency import saliency, smoothgrad
    from keras_medseg.utils.finite import check_finite

    check_finite(x, "`x`")

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
        heat = saliency(model, x, class_index)
    elif method == "smoothgrad":
        heat = smoothgrad(model, x, class_index, samples=samples)
    elif method == "gradcam":
        heat = gradcam(model, x, class_index, layer=layer)
    elif method == "occlusion":
        heat = occlusion(model, x, class_index, patch=patch, stride=stride, progress=progress)
    else:
        heat = lime(model, x, class_index, samples=max(samples, 2), progress=progress).maps
    return ImageExplanation(heat=np.asarray(heat[0]), x=x, class_index=class_index, label=label)


_STORED = "stored"


def explain_file(checkpoint, image_path, method="gradcam", spec=_STORED, **kwargs) -> ImageExplanation:
    """`explain_image` on an image file with a saved model, normalised as the model was trained.

    Args:
        checkpoint: str, a `.keras` model (loaded with `safe_mode=True`).
        image_path: str, the image or volume (`load_image`).
        method: one of `METHODS` (default "gradcam").
        spec: "stored" (default: the spec saved with the model, `load_spec`; the image as given when there
            is none), None (the image as given), or a preprocessing dict (`save_preprocessing`'s format).
        **kwargs: `explain_image` options (`class_index`, `layer`, `samples`, `patch`, `stride`, `progress`).

    Returns:
        `ImageExplanation`; its `x` is the normalised model input.

    Raises:
        FileNotFoundError: missing checkpoint or image (named).
        ValueError: NaN/Inf in the image (named, counted), a layout the model cannot take, a bad stored
            spec, or the `explain_image` errors.

    Example:
    >>> r = explain_file("runs/u/best.keras", "case1.png", method="saliency")  # doctest: +SKIP
    >>> r.heat.shape  # doctest: +SKIP
    (64, 64)
    """
    model = load_checkpoint(checkpoint)
    if isinstance(spec, str) and spec == _STORED:
        spec = load_spec(checkpoint)
    image = load_image(image_path)
    x = prepare_input(image, model, spec=spec, name=f"IMAGE file {image_path!r}")
    result = explain_image(model, x, method=method, **kwargs)
    if spec is not None:
        preset = dict(spec.get("intensity") or {"preset": "none"})
        name = preset.pop("preset")
        params = ", ".join(f"{k}={v}" for k, v in sorted(preset.items()))
        result.normalisation = f"{name} ({params})" if params else name
    return result
