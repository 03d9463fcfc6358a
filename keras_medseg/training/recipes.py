"""Training recipes: optimizer, loss and callbacks of a zoo model, built from the numbers the model keeps.

`vgg16_recipe` is the patch-classifier recipe of the whole-slide-image
workflow: the numbers live with the model as data
(`keras_medseg.zoo.vgg16_classifier.RECIPE`, so the zoo never imports
training) and this module turns them into Keras objects. It is used by the
patch-classifier training (`keras_medseg.training.patch_classifier`), the zoo
builder's compile step (same optimizer and loss) and the tutorials.

Reference: Simonyan & Zisserman, "Very deep convolutional networks for
large-scale image recognition", ICLR 2015 (VGG16); the RMSprop settings,
LR-halving and ROC-AUC stopping rules are those of the whole-slide-image
lecture's patch classifier.
"""

from keras_medseg.training.callbacks import ROCAUCEarlyStopping, lr_halving_on_plateau
from keras_medseg.zoo.vgg16_classifier import RECIPE, compile_config

__all__ = ["vgg16_recipe"]


def vgg16_recipe(validation_data=None, learning_rate=RECIPE["learning_rate"], lr_patience=RECIPE["lr_patience"],
                 stop_patience=RECIPE["stop_patience"], batch_size=64):
    """The VGG16 patch classifier's training recipe: `(optimizer, loss, callbacks)`.

    RMSprop(learning_rate, rho=0.9, momentum=0.9), binary cross-entropy, and
    the callbacks `[ROCAUCEarlyStopping(validation_data, patience=5),
    lr_halving_on_plateau(patience=3)]` (the first only when
    `validation_data` is given). The LR rule watches `val_loss`, so also pass
    `validation_data` to `fit`.

    Args:
        validation_data: `(x, y)` or a dataset of batches for the ROC-AUC
            early stopping; default None (no early stopping).
        learning_rate: float, default 5e-5.
        lr_patience: int, epochs before halving the learning rate, default 3.
        stop_patience: int, epochs without ROC-AUC improvement before stopping, default 5.
        batch_size: int, prediction batch size of the ROC-AUC callback (default 64).

    Returns:
        `(keras.optimizers.RMSprop, keras.losses.BinaryCrossentropy, [callbacks])`.

    Raises:
        ValueError: a non-positive `learning_rate` or patience.

    Example:

    >>> opt, loss, cbs = keras_medseg.training.recipes.vgg16_recipe(validation_data=val)  # doctest: +SKIP
    >>> model.compile(optimizer=opt, loss=loss)  # doctest: +SKIP
    >>> model.fit(train, validation_data=val, epochs=100, callbacks=cbs)  # doctest: +SKIP
    """
    optimizer, loss = compile_config(learning_rate)
    callbacks = []
    if validation_data is not None:
        callbacks.append(ROCAUCEarlyStopping(validation_data, patience=stop_patience, batch_size=batch_size))
    callbacks.append(lr_halving_on_plateau(patience=lr_patience))
    return optimizer, loss, callbacks
