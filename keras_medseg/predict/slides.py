"""Whole-slide inference: a patch classifier over a slide's tissue grid, heatmaps, slide scores, lesion FROC.

`predict_slide(model, slide)` selects the patch grid on the tissue (see
`keras_medseg.data.slides.streaming.patch_grid`), reads the patches tile by tile
in a background thread while the model scores the previous batch (compiled
forward: `model.predict_on_batch` on fixed-size batches, so the graph is
traced once), and returns a `SlideHeatmap`: the probability of every grid
cell (NaN off tissue), the patch scores and coordinates, and the slide score
(maximum patch probability, as in the lecture). `write_slide_prediction`
saves the heatmap array, a PNG overlay on the thumbnail and a JSON summary;
`froc_from_predictions` computes the lesion-level FROC over a set of
predicted slides: a tumour counts as detected at threshold `t` when a patch
whose inner square lies on it (its label under the inner-square rule)
scores `>= t`, and false positives are patches over `t` on normal slides.

Reference: the lecture "Convolutional networks - theory" ("Predict WSI
positive iff at least one patch I satisfies F(I) >= t", "Model evaluation -
attempt 3 - FROC"); FROC as in CAMELYON16 (Bejnordi et al., JAMA 2017).
"""

import collections
import concurrent.futures
import json
import os

import numpy as np

from keras_medseg.data.slides.annotations import Annotations, read_annotations
from keras_medseg.data.slides.slide import open_slide
from keras_medseg.data.slides.slide_base import Slide
from keras_medseg.data.slides.streaming import patch_grid

__all__ = ["SlideHeatmap", "froc_from_predictions", "predict_slide", "predict_slide_to_dir", "write_slide_prediction"]

SlideHeatmap = collections.namedtuple(
    "SlideHeatmap", ["heatmap", "scores", "coords", "tumor_ids", "slide_score", "grid", "slide_id", "num_tumors"])
SlideHeatmap.__doc__ = """Result of `predict_slide`.

`heatmap (rows, cols)` float32 probability per grid cell (NaN where no patch was scored);
`scores (N,)`, `coords (N, 2)` (row, col in pixels of the level) and `tumor_ids (N,)` per scored
patch (-1 without annotations); `slide_score` = max patch probability; `grid` the `PatchGrid`;
`num_tumors` in the annotations (0 = a normal slide, None = not annotated)."""


def _model_input_size(model):
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        return None
    return int(shape[1])


def predict_slide(model, slide, level=0, size=None, inner_size=None, stride=None, annotations=None,
                  min_tissue=0.1, tissue_threshold="otsu", batch_size=32, rescale=1.0, class_index=None,
                  thumbnail_size=1024, slide_id=None, progress=True):
    """Probability heatmap of a patch classifier over one slide's tissue grid.

    Args:
        model: a Keras model mapping `(B, size, size, C)` patches to
            probabilities `(B, 1)` (sigmoid) or `(B, K)` (softmax, see
            `class_index`); or a path to a `.keras` file.
        slide: a `Slide` or a path (pyramidal TIFF, ...).
        level: pyramid level the patches are read at, default 0.
        size: patch side, default the model's input size.
        inner_size, stride, min_tissue, tissue_threshold, thumbnail_size:
            see `keras_medseg.data.slides.streaming.patch_grid` (`min_tissue=None`
            scores every grid position).
        annotations: optional XML / GeoJSON path or `Annotations`, to attach
            tumour ids to the patches (needed for FROC).
        batch_size: patches per forward pass, default 32 (the last batch is
            padded so the compiled function sees one shape).
        rescale: multiply pixel values by this before the model, default 1.
        class_index: output column used as the probability for `(B, K)`
            outputs with `K > 1`, default 1.
        slide_id: name in the result, default the file name without extension.
        progress: tqdm bar over patches, default True.

    Returns:
        `SlideHeatmap`.

    Raises:
        ValueError: bad slide, level, sizes or annotations (naming the file),
            a model without a fixed square input and no `size`.

    Example:

    >>> result = keras_medseg.predict.slides.predict_slide("best.keras", "slide.tif", level=1)
    >>> result.slide_score, result.heatmap.shape

    Reference: the lecture "Convolutional networks - theory" (slide positive iff its best patch is).
    """
    import keras

    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"Model file not found: {os.fspath(model)!r}")
        from keras_medseg.utils.model_io import load_model

        model = load_model(model)  # safe_mode=True; a truncated file is named as such, not "not found"
    if size is None:
        size = _model_input_size(model)
        if size is None:
            raise ValueError(f"The model has no fixed square input ({getattr(model, 'input_shape', None)}); "
                             "pass `size`. Received: size=None")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    own = not isinstance(slide, Slide)
    slide = open_slide(slide) if own else slide
    try:
        if annotations is not None and not isinstance(annotations, Annotations):
            annotations = read_annotations(annotations)
        grid = patch_grid(slide, level, size, inner_size, stride, annotations, min_tissue, tissue_threshold,
                          thumbnail_size)
        n = grid.coords.shape[0]
        scores = np.zeros(n, np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, unit="patch", desc=f"predict {os.path.basename(slide.path)}")

        def read(start):
            stop = min(n, start + batch_size)
            x = np.zeros((batch_size, grid.size, grid.size, slide.channels), np.float32)
            for k in range(start, stop):
                r, c = grid.coords[k]
                x[k - start] = slide.read_region(grid.level, (int(r), int(c)), (grid.size, grid.size))
            if rescale != 1.0:
                x *= np.float32(rescale)
            return x, stop

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # read batch i+1 while batch i runs
            future = pool.submit(read, 0) if n else None
            start = 0
            while future is not None:
                x, stop = future.result()
                future = pool.submit(read, stop) if stop < n else None
                y = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(x)), np.float32)
                y = y.reshape(y.shape[0], -1)
                col = 0 if y.shape[1] == 1 else (1 if class_index is None else int(class_index))
                scores[start:stop] = y[:stop - start, col]
                if bar is not None:
                    bar.update(stop - start)
                start = stop
        if bar is not None:
            bar.close()
        heatmap = np.full(grid.grid_shape, np.nan, np.float32)
        heatmap[grid.grid_index[:, 0], grid.grid_index[:, 1]] = scores
        num_tumors = None if annotations is None else annotations.num_tumors
        return SlideHeatmap(heatmap, scores, grid.coords, grid.tumor_ids, float(scores.max()) if n else float("nan"),
                            grid, slide_id or os.path.splitext(os.path.basename(slide.path))[0], num_tumors)
    finally:
        if own:
            slide.close()


def write_slide_prediction(result, slide, out_dir, thumbnail_size=1024, alpha=0.5):
    """Save a `SlideHeatmap`: `heatmap.npy`, `heatmap.png` (thumbnail overlay), `predictions.npz`, `summary.json`.

    Args:
        result: `SlideHeatmap` from `predict_slide`.
        slide: the `Slide` or its path (for the thumbnail).
        out_dir: directory (created).
        thumbnail_size: long side of the thumbnail in the PNG, default 1024.
        alpha: heatmap opacity over the thumbnail, default 0.5.

    Returns:
        dict of the written paths.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) stays

    os.makedirs(out_dir, exist_ok=True)
    g = result.grid
    paths = {k: os.path.join(out_dir, f) for k, f in (("heatmap", "heatmap.npy"), ("png", "heatmap.png"),
                                                       ("predictions", "predictions.npz"),
                                                       ("summary", "summary.json"))}
    np.save(paths["heatmap"], result.heatmap)
    np.savez_compressed(paths["predictions"], scores=result.scores, coords=result.coords,
                        tumor_ids=result.tumor_ids, grid_index=g.grid_index, level=g.level, size=g.size,
                        inner_size=g.inner_size, stride=g.stride, downsample=np.asarray(g.downsample))
    own = not isinstance(slide, Slide)
    sl = open_slide(slide) if own else slide
    try:
        thumb, _ = sl.thumbnail(thumbnail_size)
        h0, w0 = sl.level_dimensions[0]
        path = sl.path
    finally:
        if own:
            sl.close()
    d = g.downsample
    off = (g.size - g.stride) / 2.0  # cell (i, j) = the stride x stride square at the centre of patch (i, j)
    rows, cols = g.grid_shape
    extent = (off * d[1], (off + cols * g.stride) * d[1], (off + rows * g.stride) * d[0], off * d[0])
    fig = Figure(figsize=(8, 8 * h0 / max(w0, 1)))
    ax = fig.subplots()
    ax.imshow(thumb if thumb.shape[-1] != 1 else thumb[..., 0], extent=(0, w0, h0, 0),
              cmap=None if thumb.shape[-1] != 1 else "gray")
    im = ax.imshow(np.ma.masked_invalid(result.heatmap), extent=extent, cmap="inferno", vmin=0, vmax=1, alpha=alpha,
                   interpolation="nearest")
    ax.set_xlim(0, w0)
    ax.set_ylim(h0, 0)
    ax.set_title(f"{result.slide_id}: slide score {result.slide_score:.3f}")
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.03, label="patch probability")
    fig.savefig(paths["png"], dpi=100, bbox_inches="tight")
    summary = {"slide": os.path.abspath(path), "slide_id": result.slide_id, "slide_score": result.slide_score,
               "num_patches": int(result.scores.size), "num_tumors": result.num_tumors, "level": g.level,
               "size": g.size, "inner_size": g.inner_size, "stride": g.stride, "grid_shape": list(g.grid_shape)}
    with open(paths["summary"], "w") as fh:
        json.dump(summary, fh, indent=1)
    return paths


def froc_from_predictions(directories, fp_rates=(0.25, 0.5, 1, 2, 4, 8), threshold=0.5, plot=None, progress=False):
    """Lesion-level FROC and slide-level metrics over slides written by `write_slide_prediction`.

    A slide predicted with annotations holding tumours is a tumour slide; one
    predicted with annotations holding none is normal. Slides predicted
    without annotations have no ground truth and are refused.

    Args:
        directories: output directories of `write_slide_prediction` (one per slide).
        fp_rates: average false positives per normal slide of the FROC score.
        threshold: slide-level decision threshold, default 0.5.
        plot: optional PNG path for the FROC curve (written when the FROC is defined).
        progress: tqdm bar over the slides read (stderr), default False.

    Returns:
        dict as `keras_medseg.evaluation.froc_report` (`froc`, `sensitivity_at`,
        `slide_roc_auc`, `slide_accuracy`, counts), plus `num_patches`, `plot`
        (the PNG path or None) and `slides`: `{slide_id: slide score}`.

    Raises:
        FileNotFoundError: a directory without `predictions.npz` / `summary.json`.
        ValueError: a slide without annotations, or a slide id twice.
    """
    from keras_medseg.evaluation.slide import froc_report

    scores, tumors, slides, per_slide = [], [], [], {}
    if progress:
        from tqdm.auto import tqdm

        directories = tqdm(list(directories), unit="slide", desc="read slide predictions")
    for d in directories:
        d = os.fspath(d)
        summary_path, pred_path = os.path.join(d, "summary.json"), os.path.join(d, "predictions.npz")
        for p in (summary_path, pred_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"Not a slide prediction directory (missing {os.path.basename(p)}): {d!r}")
        with open(summary_path) as fh:
            summary = json.load(fh)
        sid = summary["slide_id"]
        if summary.get("num_tumors") is None:
            raise ValueError(f"Slide {sid!r} in {d!r} was predicted without annotations: no ground truth for FROC. "
                             "Pass an annotation file (an empty one for a normal slide).")
        if sid in per_slide:
            raise ValueError(f"Slide id {sid!r} appears twice (second time in {d!r}).")
        with np.load(pred_path) as z:
            scores.append(z["scores"])
            tumors.append(z["tumor_ids"])
        slides.append(np.full(scores[-1].size, sid, object))
        per_slide[sid] = summary["slide_score"]
    if not scores:
        raise ValueError("`directories` is empty. Received: directories=[]")
    scores, tumors, slides = np.concatenate(scores), np.concatenate(tumors), np.concatenate(slides)
    report = froc_report(scores, tumors, slides.astype(str), (tumors >= 0).astype(np.uint8), fp_rates=fp_rates,
                         threshold=threshold)
    report.update(slides=per_slide, num_patches=int(scores.size), plot=None)
    if plot and report["froc"] is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from keras_medseg.evaluation import froc_curve, plot_froc

        normal = [s for s in per_slide if not (tumors[slides == s] >= 0).any()]
        curve = froc_curve(scores, tumors, slides.astype(str), normal)
        ax = plot_froc(curve.avg_fp, curve.sensitivity, label=f"FROC {report['froc']:.3f}")
        ax.figure.savefig(plot, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        report["plot"] = os.fspath(plot)
    return report


def predict_slide_to_dir(model, slide, out_dir, thumbnail_size=1024, **kwargs):
    """`predict_slide` then `write_slide_prediction` (what `keras-medseg slide predict` runs).

    Args:
        model: a Keras model or a `.keras` path.
        slide: the slide path.
        out_dir: output directory (created).
        thumbnail_size: thumbnail long side for tissue detection and the PNG, default 1024.
        **kwargs: passed to `predict_slide` (`level`, `size`, `annotations`, `min_tissue`, ...).

    Returns:
        `(result, paths)`: the `SlideHeatmap` and the dict of written files.
    """
    with open_slide(slide) as sl:
        result = predict_slide(model, sl, thumbnail_size=thumbnail_size, **kwargs)
        paths = write_slide_prediction(result, sl, out_dir, thumbnail_size=thumbnail_size)
    return result, paths
