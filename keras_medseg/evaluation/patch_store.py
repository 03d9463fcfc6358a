"""Scoring a patch classifier on an HDF5 patch store: FROC and slide-level results.

`evaluate_patch_store(checkpoint, store)` loads a `.keras` patch classifier
through `keras_medseg.utils.model_io.load_model` (`safe_mode=True`), scores
every patch of the store and returns `froc_report` (FROC score, sensitivity
at the standard false-positive rates per normal slide, slide-level ROC-AUC and
accuracy) plus the patch scores; with `plot=` it writes the FROC curve PNG.
`keras-medseg evaluate CKPT --data store.h5 --froc` calls it.
"""

import os

import numpy as np

from keras_medseg.data.sources import PatchStoreSource, resolve_source
from keras_medseg.evaluation.froc import froc_curve
from keras_medseg.evaluation.plots import plot_froc
from keras_medseg.evaluation.slide import froc_report
from keras_medseg.utils.model_io import load_model

__all__ = ["evaluate_patch_store"]


def evaluate_patch_store(checkpoint, store, batch_size=16, plot=None, verbose=0):
    """Score every patch of a store with a `.keras` checkpoint; FROC and slide-level report.

    Normal slides are the slides without a positive patch. The model's first
    output unit is the patch score.

    Args:
        checkpoint: str, a `.keras` patch classifier.
        store: str or `PatchStoreSource`, an HDF5 patch store (`*.h5` / `*.hdf5`).
        batch_size: int, prediction batch size (default 16).
        plot: str or None, PNG path for the FROC curve, written when the FROC
            is defined (default None).
        verbose: int, Keras verbosity of the prediction (0 silent, default;
            1 a progress bar over the batches).

    Returns:
        dict: the `froc_report` keys plus `"scores"` (float array, one per
        patch), `"num_patches"` and `"plot"` (the PNG path or None).

    Raises:
        FileNotFoundError: missing checkpoint or store (named).
        ValueError: `store` is not an HDF5 patch store, or the checkpoint
            cannot be loaded safely.

    Example:

    >>> report = evaluate_patch_store("runs/vgg/best.keras", "patches.h5")  # doctest: +SKIP
    >>> report["froc"], report["slide_roc_auc"]  # doctest: +SKIP
    """
    from keras_medseg.data.slides import PatchSequence, PatchStore

    source = resolve_source(store)
    if not isinstance(source, PatchStoreSource):
        raise ValueError(f"--froc needs an HDF5 patch store as --data. Received: --data {store!r}")
    store = source.path
    if not os.path.isfile(store):
        raise FileNotFoundError(f"Patch store not found: --data {store!r}")
    model = load_model(checkpoint)
    scores = np.asarray(model.predict(PatchSequence(store, batch_size=batch_size), verbose=verbose))
    scores = scores.reshape(scores.shape[0], -1)[:, 0]
    with PatchStore(store) as s:
        labels, slides, tumors = s.labels, s.slide_ids, s.tumor_ids
    report = dict(froc_report(scores, tumors, slides, labels))
    report.update(scores=scores, num_patches=len(scores), plot=None)
    if plot and report["froc"] is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        normal = np.unique(slides)[[not (labels[slides == s] > 0).any() for s in np.unique(slides)]]
        curve = froc_curve(scores, tumors, slides, normal)
        ax = plot_froc(curve.avg_fp, curve.sensitivity, label=f"FROC {report['froc']:.3f}")
        ax.figure.savefig(plot, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        report["plot"] = plot
    return report
