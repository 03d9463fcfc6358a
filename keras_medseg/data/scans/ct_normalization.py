"""nnU-Net's CT normalisation: one intensity mapping for a whole CT data set, from its foreground voxels.

CT values are physical (Hounsfield units), so every scan of a data set is mapped the same way,
not by its own statistics (a per-scan z-score depends on how much air and table each scan
holds). Following Isensee, Jaeger, Kohl, Petersen, Maier-Hein, "nnU-Net: a self-configuring
method for deep learning-based biomedical image segmentation", Nature Methods 2021, the
mapping comes from the voxels inside the label maps (the structures to segment) of the
training cases: clip to their 0.5th and 99.5th percentiles, subtract their mean and divide by
their standard deviation (`keras_medseg.data.scans.preprocess.intensity` preset "ct").

`foreground_statistics` samples at most `samples_per_case` foreground voxels of every case
(seeded), pools them and returns the four numbers; `ct_preset` is the preset dict saved in a
model's preprocessing spec, so `predict` maps new scans with the training data's numbers.
`train_volumes(intensity="ct")` (`train --intensity ct`) computes it from the training cases, and
uses it by default when the data set's `dataset.json` names its one channel "CT".
"""

import numpy as np

__all__ = ["ct_preset", "foreground_statistics"]


def foreground_statistics(cases, samples_per_case=10000, seed=0, ignore_value=None, progress=False):
    """Percentiles 0.5 / 99.5, mean and standard deviation (HU) of the training cases' foreground voxels.

    Args:
        cases: `[{"name", "image", "label"}]` (`keras_medseg.data.cases.find_cases`), single-channel scans.
        samples_per_case: at most this many foreground voxels drawn from each case (default 10,000), so a
            large organ does not outweigh the other cases.
        seed: int, the draw's seed.
        ignore_value: a label value that is not foreground (e.g. 255), or None.
        progress: bool, a progress bar over the cases.

    Returns:
        dict with `low`, `high` (the 0.5th and 99.5th percentiles), `mean`, `std` (floats, HU) and `voxels`
        (the number of voxels pooled).

    Raises:
        ValueError: a multi-channel case, or no foreground voxel in any case (named).

    Checked against NumPy's `percentile`, `mean` and `std` over the same voxels (tests/data/test_ct_normalization.py).
    """
    from keras_medseg.data.scans.geometry import check_same_grid
    from keras_medseg.data.scans.io import read_image

    rng = np.random.default_rng(seed)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(cases), unit_name="case")
    pooled = []
    for k, case in enumerate(cases):
        if isinstance(case["image"], (list, tuple)) and len(case["image"]) > 1:
            raise ValueError(f"The 'ct' intensity preset is for single-channel CT; case {case['name']!r} has "
                             f"{len(case['image'])} image files.")
        image = read_image(case["image"], spatial_dims=3)
        labels = read_image(case["label"], spatial_dims=3)
        check_same_grid(image, labels)
        values = np.asarray(image.array)
        if values.ndim == 4 and values.shape[-1] == 1:  # one file per channel, one channel
            values = values[..., 0]
        if values.ndim != 3:
            raise ValueError(f"The 'ct' intensity preset is for single-channel CT; case {case['name']!r} has an "
                             f"image of shape {values.shape}.")
        mask = np.asarray(labels.array)
        inside = (mask > 0) if ignore_value is None else (mask > 0) & (mask != ignore_value)
        found = values[inside]
        if found.size > samples_per_case:
            found = found[rng.choice(found.size, samples_per_case, replace=False)]
        pooled.append(found.astype(np.float64))
        if bar is not None:
            bar.update(k + 1)
    voxels = np.concatenate(pooled) if pooled else np.zeros(0)
    if voxels.size == 0:
        raise ValueError(f"No foreground voxel (label > 0) in the {len(cases)} cases: the 'ct' intensity preset "
                         "takes its statistics from the labelled structures.")
    low, high = np.percentile(voxels, [0.5, 99.5])
    return {"low": float(low), "high": float(high), "mean": float(voxels.mean()), "std": float(voxels.std()),
            "voxels": int(voxels.size)}


def ct_preset(cases, **kwargs):
    """`{"preset": "ct", "low", "high", "mean", "std"}` for `preprocess.intensity` from `foreground_statistics`
    (same arguments)."""
    stats = foreground_statistics(cases, **kwargs)
    return {"preset": "ct", **{k: round(stats[k], 4) for k in ("low", "high", "mean", "std")}}
