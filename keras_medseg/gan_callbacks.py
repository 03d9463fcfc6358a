"""Callback that writes a PNG grid of GAN samples every N epochs, and the grid helper.

`GANSampleGrid` works with the three zoo GANs (`keras_medseg.zoo.gan`):

* `ConditionalGAN`: one row per class label, `num_samples` columns drawn
  from fixed latent vectors (the same `z` in every row and every epoch, so the
  grids show how training changes the samples).
* `Pix2Pix`: rows `source`, `G(source)` (and `target` if given).
* `CycleGAN`: rows `a`, `G_AB(a)`, `G_BA(G_AB(a))` (and `b`, `G_BA(b)`,
  `G_AB(G_BA(b))` if domain-B images are given).

3D volumes are shown by their middle slice along the first spatial axis.

Reference: seed 004 (sample grids to judge GAN training, which has no
clear stopping criterion).
"""

import os

import keras
import numpy as np

from keras_medseg.utils.validation import check_positive_int


def _to_rgb(images):
    """`(n, *spatial, C)` in [-1, 1] -> `(n, H, W, 3)` in [0, 1] (middle slice for 3D)."""
    images = np.asarray(images, dtype="float32")
    if images.ndim == 5:
        images = images[:, images.shape[1] // 2]
    if images.ndim != 4:
        raise ValueError(
            f"Sample rows must be batches of 2D or 3D channels-last images. Received: shape={images.shape}"
        )
    images = np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    channels = images.shape[-1]
    if channels == 3:
        return images
    return np.repeat(images[..., :1], 3, axis=-1)


def make_grid(rows, padding=1):
    """Tile rows of images into one RGB grid image.

    Args:
        rows: list of arrays `(n, H, W, C)` or `(n, D, H, W, C)` in [-1, 1],
            all with the same spatial size (rows may have different `n`).
        padding: white pixels between tiles. Default 1.

    Returns:
        float32 array `(rows * (H + p) + p, max_n * (W + p) + p, 3)` in [0, 1].

    Raises:
        ValueError: empty `rows` or images of different spatial size.

    Example:
    ```python
    grid = keras_medseg.gan_callbacks.make_grid([np.zeros((4, 8, 8, 1))])
    ```
    """
    if not rows:
        raise ValueError("`rows` must contain at least one batch of images. Received: rows=[]")
    rows = [_to_rgb(r) for r in rows]
    h, w = rows[0].shape[1:3]
    if any(r.shape[1:3] != (h, w) for r in rows):
        raise ValueError(f"All rows need the same image size. Received: sizes={[r.shape[1:3] for r in rows]}")
    ncols = max(r.shape[0] for r in rows)
    grid = np.ones((len(rows) * (h + padding) + padding, ncols * (w + padding) + padding, 3), "float32")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = padding + i * (h + padding), padding + j * (w + padding)
            grid[y:y + h, x:x + w] = img
    return grid


def sample_rows(model, inputs=None, num_samples=8, seed=0):
    """The rows of images `GANSampleGrid` shows for `model` (see module docstring).

    Args:
        model: a `ConditionalGAN`, `Pix2Pix` or `CycleGAN`.
        inputs: `None` for the cGAN (or a list of labels); source images or
            `(source, target)` for pix2pix; `a` or `(a, b)` for CycleGAN.
        num_samples: images per row. Default 8.
        seed: latent seed for the cGAN. Default 0.

    Returns:
        list of NumPy arrays in [-1, 1].

    Raises:
        TypeError: not one of the zoo GANs.
        ValueError: translation model without `inputs`.
    """
    from keras_medseg.zoo.gan import ConditionalGAN, CycleGAN, Pix2Pix

    if isinstance(model, ConditionalGAN):
        labels = range(model.num_classes) if inputs is None else list(inputs)
        z = np.random.default_rng(seed).standard_normal((num_samples, model.latent_dim)).astype("float32")
        return [model.generate([label] * num_samples, z=z) for label in labels]
    if not isinstance(model, (Pix2Pix, CycleGAN)):
        raise TypeError(
            "GANSampleGrid needs a keras_medseg ConditionalGAN, Pix2Pix or CycleGAN. "
            f"Received: model of type {type(model).__name__}"
        )
    if inputs is None:
        raise ValueError(
            f"{type(model).__name__} samples are translations: pass `inputs` (source images or a "
            "(source, target) pair). Received: inputs=None"
        )
    first, second = (inputs if isinstance(inputs, (tuple, list)) else (inputs, None))
    first = np.asarray(first, "float32")[:num_samples]
    second = None if second is None else np.asarray(second, "float32")[:num_samples]
    if isinstance(model, Pix2Pix):
        rows = [first, model.translate(first)]
        return rows if second is None else rows + [second]
    fake_b = model.translate(first, "a2b")
    rows = [first, fake_b, model.translate(fake_b, "b2a")]
    if second is not None:
        fake_a = model.translate(second, "b2a")
        rows += [second, fake_a, model.translate(fake_a, "a2b")]
    return rows


class GANSampleGrid(keras.callbacks.Callback):
    """Write a PNG grid of GAN samples every `every` epochs.

    Args:
        directory: output folder (created if missing).
        every: write after every `every`-th epoch (>= 1). Default 1.
        inputs: what to show (see `sample_rows`): None for the cGAN (all
            labels), translation inputs for pix2pix / CycleGAN.
        num_samples: images per row. Default 8.
        seed: latent seed of the cGAN rows. Default 0.
        filename: format string with `{epoch}` (1-based). Default
            `"samples_epoch{epoch:03d}.png"`.

    Attributes:
        paths: the files written so far.

    Raises:
        ValueError: `every`/`num_samples` < 1.

    Example:
    ```python
    cb = keras_medseg.gan_callbacks.GANSampleGrid("samples", every=5)
    model.fit(x, y, epochs=20, callbacks=[cb])
    ```
    """

    def __init__(self, directory, every=1, inputs=None, num_samples=8, seed=0,
                 filename="samples_epoch{epoch:03d}.png"):
        super().__init__()
        self.directory = os.fspath(directory)
        self.every = check_positive_int(every, "every")
        self.inputs = inputs
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.seed = seed
        self.filename = filename
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        self.write(epoch + 1)

    def write(self, epoch):
        """Render the grid for the current model state and save it; returns the path."""
        import matplotlib.pyplot as plt

        grid = make_grid(sample_rows(self.model, self.inputs, self.num_samples, self.seed))
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, self.filename.format(epoch=epoch))
        plt.imsave(path, grid)
        self.paths.append(path)
        return path


__all__ = ["GANSampleGrid", "make_grid", "sample_rows"]
