"""VGG16 patch classifier of the whole-slide-image workflow (`zoo.build("vgg16_classifier")`).

The convolutional base of `keras.applications.VGG16` (13 3x3 convolutions,
stride 1, "same" padding, five 2x2 max poolings) with its fully connected top
replaced by global max pooling and one sigmoid unit: the probability of
cancer in a patch. Trained with RMSprop (learning rate 5e-5, rho 0.9,
momentum 0.9) on binary cross-entropy, halving the learning rate after 3
epochs without validation-loss improvement and stopping after 5 epochs
without validation ROC-AUC improvement (`RECIPE` holds the numbers;
`keras_medseg.training.recipes.vgg16_recipe()` returns all of it).

Inputs are RGB patches with values in [0, 255] (what `ThreeStepSampler`
yields); with `preprocessing="caffe"` (default) the model converts them to
the input the ImageNet weights were trained on (BGR, ImageNet channel means
subtracted) with a serialisable layer, exactly like
`keras.applications.vgg16.preprocess_input`.

ImageNet weights are never downloaded at run time: `weights="imagenet"`
looks for the standard Keras file
`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` in the Keras cache
(`$KERAS_HOME/models/` or `~/.keras/models/`); `weights="/path/file.h5"`
loads a given file.

Layer names: the Keras VGG16 names (`block1_conv1` ... `block5_conv3`,
`block5_pool`, which Grad-CAM uses), then `{name}_preprocessing`,
`{name}_global_max_pool`, `{name}_dropout`, `{name}_head` (logit) and
`{name}_probability`.

Reference: the lecture "Convolutional networks - theory" (VGG16 pretrained on ImageNet, "Top fully connected parts
removed, substituted with global max-pooling and a single dense layer",
RMSprop rho 0.9, lr 5e-5, momentum 0.9); Simonyan & Zisserman, "Very deep
convolutional networks for large-scale image recognition", ICLR 2015.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive
from keras_medseg.zoo.registry import register_model

WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + WEIGHTS_FILE
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@register
class VGG16Preprocessing(keras.layers.Layer):
    """RGB in [0, 255] -> VGG16's Caffe-style input: BGR order, ImageNet means subtracted.

    Same result as `keras.applications.vgg16.preprocess_input` on
    channels-last data, as a serialisable layer (no `Lambda`).

    Input shape: `(N, H, W, 3)`. Output shape: the same.

    Example:

    >>> keras_medseg.zoo.vgg16_classifier.VGG16Preprocessing()(np.full((1, 2, 2, 3), 255.0))
    """

    def build(self, input_shape):
        if input_shape[-1] != 3:
            raise ValueError(f"VGG16Preprocessing needs 3 (RGB) channels. Received: input_shape={input_shape}")
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(np.asarray(IMAGENET_BGR_MEAN, "float32"), dtype=self.compute_dtype)
        return ops.flip(x, axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape


def _keras_cache_dirs():
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(os.path.join(os.environ["KERAS_HOME"], "models"))
    dirs.append(os.path.join(os.path.expanduser("~"), ".keras", "models"))
    dirs.append(os.path.join("/tmp", ".keras", "models"))  # Keras' fallback when ~ is read-only
    return list(dict.fromkeys(dirs))


def resolve_weights(weights):
    """Path of the VGG16 weights to load (`None` for random initialisation), without downloading.

    Args:
        weights: `None`, `"imagenet"` (the notop file in the Keras cache) or
            a path to a Keras weights file (`.h5` or `.weights.h5`).

    Returns:
        A file path or `None`.

    Raises:
        FileNotFoundError: the file is missing; the message says where to put it.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        for d in _keras_cache_dirs():
            candidate = os.path.join(d, WEIGHTS_FILE)
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(
            f"weights='imagenet': the VGG16 ImageNet weights file {WEIGHTS_FILE!r} is not in the Keras cache "
            f"(looked in: {', '.join(_keras_cache_dirs())}). keras-medseg never downloads at run time: "
            f"download it from {WEIGHTS_URL} and put it into {_keras_cache_dirs()[0]} (or set KERAS_HOME), "
            "or pass weights='/path/to/file.h5'."
        )
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"VGG16 weights file not found. Received: weights={path!r}")
        return path
    raise TypeError(f"`weights` must be None, 'imagenet' or a file path. Received: weights={weights!r}")


def _example(model, batch_size, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(32 if s is None else int(s) for s in model.inputs[0].shape[1:])
    x = rng.integers(0, 256, (batch_size,) + shape).astype("float32")
    y = (np.arange(batch_size) % 2).astype("float32").reshape(-1, 1)
    return x, y


# The training recipe as data (the WSI lecture's): RMSprop(learning_rate, rho, momentum) on binary cross-entropy, LR
# halved after `lr_patience` epochs without val_loss improvement, stop after `stop_patience` epochs without
# validation ROC-AUC improvement. `keras_medseg.training.recipes.vgg16_recipe` builds optimizer, loss and
# callbacks from it (the zoo does not import training: ops -> layers -> zoo -> training -> commands).
RECIPE = {"learning_rate": 5e-5, "rho": 0.9, "momentum": 0.9, "lr_patience": 3, "stop_patience": 5}


def compile_config(learning_rate=RECIPE["learning_rate"]):
    """`(optimizer, loss)` of the recipe: RMSprop(learning_rate, rho=0.9, momentum=0.9), binary cross-entropy."""
    check_positive(learning_rate, "learning_rate")
    optimizer = keras.optimizers.RMSprop(learning_rate=learning_rate, rho=RECIPE["rho"], momentum=RECIPE["momentum"])
    return optimizer, keras.losses.BinaryCrossentropy()


@register_model(
    "vgg16_classifier",
    description="VGG16 conv base + global max pooling + one sigmoid unit: patch cancer probability.",
    spatial_dims=(2,),
    task="classification",
    tiny={"input_shape": (32, 32, 3)},
    example=_example,
)
def vgg16_classifier(input_shape=(512, 512, 3), weights=None, preprocessing="caffe", freeze_base=False,
                     dropout=0.0, learning_rate=5e-5, name="vgg16_classifier"):
    """VGG16 patch classifier: conv base, global max pooling, one sigmoid unit (compiled).

    Args:
        input_shape: `(H, W, C)`, default `(512, 512, 3)` (the lecture's
            patches); H and W >= 32 or None (any size).
        weights: `None` (default, random), `"imagenet"` (the notop weights
            file from the Keras cache, never downloaded) or a weights file path.
        preprocessing: `"caffe"` (default: the model takes RGB in [0, 255]
            and applies VGG16's preprocessing) or `None` (inputs go straight
            to the convolutions).
        freeze_base: freeze the VGG16 convolutions (train only the head), default False.
        dropout: dropout rate before the output unit, default 0.
        learning_rate: RMSprop learning rate, default 5e-5.
        name: model name and layer-name prefix.

    Input shape: `(N, H, W, C)`. Output shape: `(N, 1)` probabilities (float32).

    Returns:
        A `keras.Model` compiled with RMSprop(lr, rho=0.9, momentum=0.9),
        binary cross-entropy and an `AUC` metric. Use
        `keras_medseg.training.recipes.vgg16_recipe(val)` for the
        lecture's callbacks.

    Raises:
        FileNotFoundError: `weights` file missing (with where to put it).
        ValueError: bad `input_shape`, `preprocessing`, `dropout`, or
            pretrained weights / "caffe" preprocessing with C != 3.

    Example:

    >>> model = keras_medseg.zoo.build("vgg16_classifier", input_shape=(64, 64, 3))
    >>> opt, loss, cbs = keras_medseg.training.recipes.vgg16_recipe(validation_data=(xv, yv))
    >>> model.fit(x, y, validation_data=(xv, yv), epochs=50, callbacks=cbs)

    Reference: the lecture "Convolutional networks - theory"; Simonyan & Zisserman, ICLR 2015.
    """
    # -- arguments
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(
        s is not None and (not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1) for s in input_shape
    ) or input_shape[-1] is None:
        raise ValueError(
            "`input_shape` must be (H, W, C) with positive ints (H, W may be None). "
            f"Received: input_shape={input_shape}"
        )
    if any(s is not None and s < 32 for s in input_shape[:2]):
        raise ValueError(
            f"VGG16 needs patches of at least 32x32 (five 2x poolings). Received: input_shape={input_shape}"
        )
    if preprocessing not in ("caffe", None):
        raise ValueError(f"`preprocessing` must be 'caffe' or None. Received: preprocessing={preprocessing!r}")
    check_positive(dropout, "dropout", allow_zero=True)
    if dropout >= 1:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
    channels = input_shape[-1]
    if (weights is not None or preprocessing == "caffe") and channels != 3:
        raise ValueError(
            "Pretrained VGG16 weights and 'caffe' preprocessing need RGB input (3 channels); use "
            f"weights=None, preprocessing=None for other inputs. Received: input_shape={input_shape}, "
            f"weights={weights!r}, preprocessing={preprocessing!r}"
        )
    weights_path = resolve_weights(weights)

    # -- layers and wiring: the Keras VGG16 base is built on our tensor, so
    # its layers become layers of this model (no nested model).
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = VGG16Preprocessing(name=f"{name}_preprocessing")(inputs) if preprocessing == "caffe" else inputs
    base = keras.applications.VGG16(include_top=False, weights=None, input_tensor=x)
    if weights_path is not None:
        base.load_weights(weights_path)
    if freeze_base:
        for layer in base.layers:
            layer.trainable = False
    x = keras.layers.GlobalMaxPooling2D(name=f"{name}_global_max_pool")(base.output)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = keras.layers.Dense(1, name=f"{name}_head")(x)
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}_probability")(x)
    model = keras.Model(inputs, outputs, name=name)

    # -- training configuration (the WSI lecture's)
    optimizer, loss = compile_config(learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.AUC(name="auc")])
    return model
