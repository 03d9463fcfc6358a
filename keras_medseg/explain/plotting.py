"""Plotting helpers: heat maps over images and slices of volumes."""

import numpy as np

from keras_medseg.plotting import take_slice


def overlay(image, heatmap, ax=None, alpha=0.5, cmap="jet", image_cmap="gray", axis=0, index=None,
            title=None, colorbar=False):
    """Draw a heat map over an image (2D) or over one slice of a volume (3D).

    Args:
        image: `(H, W)`, `(H, W, C)`, `(D, H, W)` or `(D, H, W, C)` for one
            sample (a leading batch axis of size 1 is dropped).
        heatmap: the map of the same spatial shape (`(H, W)` or `(D, H, W)`).
        ax: matplotlib Axes; default None creates a figure.
        alpha: float in [0, 1], opacity of the heat map. Defaults to 0.5.
        cmap: colormap of the heat map. Defaults to "jet".
        image_cmap: colormap of a single-channel image. Defaults to "gray".
        axis: int, spatial axis of the slice for volumes. Defaults to 0.
        index: int, slice index for volumes; default None takes the middle.
        title: optional title.
        colorbar: bool, add a colour bar for the heat map. Defaults to False.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: shapes that do not match, or a bad slice `axis`/`index`.

    Example:

    >>> ax = keras_medseg.explain.overlay(x[0], keras_medseg.explain.saliency(model, x, 0)[0])
    >>> ax.figure.savefig("saliency.png")
    """
    import matplotlib.pyplot as plt

    image = np.asarray(image, dtype="float32")
    heatmap = np.asarray(heatmap, dtype="float32")
    if heatmap.ndim in (3, 4) and heatmap.shape[0] == 1 and image.ndim == heatmap.ndim + 1:
        heatmap, image = heatmap[0], image[0]
    if image.ndim == heatmap.ndim + 1:
        spatial = image.shape[:-1]
    else:
        spatial = image.shape
    if spatial != heatmap.shape or heatmap.ndim not in (2, 3):
        raise ValueError(
            f"`heatmap` must have the image's spatial shape (2D or 3D). "
            f"Received: image.shape={image.shape}, heatmap.shape={heatmap.shape}"
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    if heatmap.ndim == 3:
        image = take_slice(image, axis, index)
        heatmap = take_slice(heatmap, axis, index)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        image = image.mean(axis=-1)
    lo, hi = float(image.min()), float(image.max())
    shown = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(shown, cmap=image_cmap if shown.ndim == 2 else None)
    im = ax.imshow(heatmap, cmap=cmap, alpha=alpha)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
