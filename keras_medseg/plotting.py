"""Figures for segmentation results: prediction grids and training curves.

Figures are drawn with `matplotlib.figure.Figure` (no pyplot state, no
display needed), returned, and saved as PNG when a path is given.
"""

import numpy as np


def take_slice(volume, axis=0, index=None):
    """A 2D slice of a 3D array `(D, H, W[, C])` along spatial `axis` (middle by default)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"`axis` must be 0, 1 or 2 for a volume. Received: axis={axis!r}")
    size = volume.shape[axis]
    index = size // 2 if index is None else index
    if not -size <= index < size:
        raise ValueError(f"`index` must be in [0, {size}). Received: index={index}")
    return np.take(volume, index, axis=axis)


def _middle_slice(a, spatial_dims):
    """2D view of one sample: the middle slice along the first axis of a 3D volume."""
    a = np.asarray(a)
    return take_slice(a) if spatial_dims == 3 else a


def _image_view(img, spatial_dims):
    img = _middle_slice(img, spatial_dims)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[-1] not in (3, 4) else img
    return img


#: Markers are drawn on history curves up to this many epochs (a 1-epoch curve is a single point).
MARKER_EPOCHS = 30


def class_colours(num_classes, cmap="viridis"):
    """`num_classes` RGBA colours, one per class id, as the prediction grids draw them."""
    import matplotlib

    colormap = matplotlib.colormaps[cmap]
    return [colormap(k / max(num_classes - 1, 1)) for k in range(num_classes)]


def prediction_grid(images, labels, predictions, path=None, max_rows=4, num_classes=None, titles=None,
                    spatial_dims=None, class_names=None):
    """Grid of image | ground truth | prediction(s), one row per sample, with a colour key of the classes.

    Args:
        images: `(N, *spatial, C)` array (2D: `(N, H, W, C)`, 3D: `(N, D, H, W, C)`;
            3D volumes are shown at their middle slice).
        labels: `(N, *spatial)` int class ids.
        predictions: `(N, *spatial)` class ids, or `{name: class ids}` to show
            several models side by side.
        path: PNG file to write (default None: do not save).
        max_rows: number of samples shown (default 4).
        num_classes: colour scale maximum + 1 (default: from the data).
        titles: optional column titles overriding the defaults.
        spatial_dims: 2 or 3 (default: inferred from `labels`).
        class_names: names of the classes `0..num_classes-1` for the colour key
            below the grid (default None: "class 0", "class 1", ...).

    Returns:
        the `matplotlib.figure.Figure`.

    Raises:
        ValueError: `class_names` does not hold one name per class.

    Example:
        >>> fig = prediction_grid(x_val, y_val, {"unet": pred}, class_names=["background", "liver"])
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not isinstance(predictions, dict):
        predictions = {"prediction": predictions}
    labels = np.asarray(labels)
    spatial_dims = spatial_dims or labels.ndim - 1
    rows = min(max_rows, len(labels))
    if num_classes is None:
        num_classes = int(max([labels.max()] + [np.max(p) for p in predictions.values()])) + 1
    if class_names is None:
        class_names = [f"class {k}" for k in range(num_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must hold one name per class ({num_classes}). Received: class_names={class_names!r}"
        )
    columns = ["image", "ground truth"] + list(predictions)
    if titles:
        columns = list(titles)
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * rows), constrained_layout=True)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):
        panels = [(_image_view(images[r], spatial_dims), "gray", None)]
        panels.append((_middle_slice(labels[r], spatial_dims), "viridis", (0, max(num_classes - 1, 1))))
        for pred in predictions.values():
            panels.append((_middle_slice(np.asarray(pred)[r], spatial_dims), "viridis", (0, max(num_classes - 1, 1))))
        for c, (panel, cmap, lim) in enumerate(panels):
            ax = axes[r, c]
            kw = {"vmin": lim[0], "vmax": lim[1], "interpolation": "nearest"} if lim else {}
            ax.imshow(panel, cmap=cmap, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
    key = [Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=name)
           for colour, name in zip(class_colours(num_classes), class_names)]
    fig.legend(handles=key, loc="outside lower center", ncol=min(num_classes, 6), fontsize=8, frameon=False)
    if path is not None:
        from keras_medseg.utils.atomic_io import atomic_savefig

        atomic_savefig(fig, path, dpi=100)
    return fig


def history_plot(histories, path=None, metrics=("loss", "mean_iou")):
    """Training curves of one or several Keras histories, one panel per metric.

    Args:
        histories: `{name: history_dict}` (a `History.history` dict each).
        path: PNG file to write (default None).
        metrics: metric keys to draw; `val_<key>` is drawn dashed when present.
            Histories of up to `MARKER_EPOCHS` epochs get a marker per epoch,
            so a one-epoch history shows its point. A history with an
            `"epoch"` list (0-based, as in `log.csv`; see
            `keras_medseg.training.runner.RunResult.logged_history`) is drawn at
            those epochs (plus one), so a resumed run keeps its numbering.

    Returns:
        the `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.5 * len(metrics), 3.2), constrained_layout=True)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, key in zip(axes, metrics):
        for name, hist in histories.items():
            if key in hist:
                marker = "o" if len(hist[key]) <= MARKER_EPOCHS else None
                epochs = (np.asarray(hist["epoch"]) + 1 if len(hist.get("epoch", ())) == len(hist[key])
                          else np.arange(1, len(hist[key]) + 1))
                line, = ax.plot(epochs, hist[key], marker=marker, markersize=4, label=f"{name}")
                if f"val_{key}" in hist:
                    ax.plot(epochs[:len(hist[f"val_{key}"])], hist[f"val_{key}"], "--", marker=marker,
                            markersize=4, markerfacecolor="none", color=line.get_color(), label=f"{name} (val)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend(fontsize=8)
    if path is not None:
        from keras_medseg.utils.atomic_io import atomic_savefig

        atomic_savefig(fig, path, dpi=100)
    return fig
