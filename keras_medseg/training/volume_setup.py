"""What `train_volumes` decides from the data before it trains, and whether a run folder may be resumed.

* `training_spacing`: `spacing="median"` becomes the training cases' target spacing
  (`keras_medseg.data.scans.target_spacing`); without a spacing, a warning when the cases' voxel sizes differ.
* `training_intensity`: `intensity="ct"` (and the default for a dataset.json whose one channel is CT) becomes
  nnU-Net's CT normalisation with the training cases' numbers (`keras_medseg.data.scans.ct_normalization`).
* `check_same_run`: a run folder resumes only the run it holds (the same cases and preprocessing).
"""

import json
import logging
import os

__all__ = ["RUN_KEYS", "check_same_run", "training_intensity", "training_spacing"]


def training_spacing(spacing, cases, orientation, spatial_dims):
    """`spacing` as `VolumeDataset` takes it: "median" becomes the training cases' target spacing
    (`keras_medseg.data.scans.target_spacing`); with None, a warning when the NIfTI cases' voxel sizes
    differ by more than 10 % along an axis."""
    import warnings

    from keras_medseg.data.scans.target_spacing import case_grids, grid_summary, target_spacing

    if isinstance(spacing, str):
        if spacing != "median":
            raise ValueError(f"`spacing` must be voxel sizes in mm, \"median\" or None. Received: spacing={spacing!r}")
        if spatial_dims != 3:
            raise ValueError("`spacing=\"median\"` needs 3D volumes (spatial_dims=3). "
                             f"Received: spatial_dims={spatial_dims!r}")
        found = target_spacing(*case_grids(cases, orientation))
        logging.getLogger(__name__).info("spacing: %s mm, from %d training cases", found, len(cases))
        return found
    if spacing is None and spatial_dims == 3:
        spacings, _ = case_grids(cases, orientation, headers_only=True)
        if len(spacings) > 1 and grid_summary(spacings)[2] > 1.1:
            low, high, _ = grid_summary(spacings)
            warnings.warn(f"The training scans' voxel sizes differ (from {_mm(low)} to {_mm(high)} mm per axis) and "
                          "no spacing was given, so each is trained on its own grid; spacing=\"median\" "
                          "(--spacing median) resamples them to one voxel size chosen from the data.", stacklevel=3)
    return spacing


def training_intensity(intensity, cases, channels, ignore_value, seed, progress):
    """`intensity` as `VolumeDataset` takes it: "ct" (or a "ct" preset without its numbers) gets nnU-Net's CT
    normalisation from the training cases' foreground (`keras_medseg.data.scans.ct_normalization`), the default
    (None) too when the dataset.json names its one channel CT; anything else as given."""
    preset = intensity.get("preset") if isinstance(intensity, dict) else intensity
    if intensity is None and channels is not None and [c.upper() for c in channels] == ["CT"]:
        preset = "ct"
    if preset != "ct" or isinstance(intensity, dict) and "mean" in intensity:
        return intensity
    from keras_medseg.data.scans.ct_normalization import ct_preset

    found = ct_preset(cases, seed=seed, ignore_value=ignore_value, progress=progress)
    logging.getLogger(__name__).info("intensity: %s, from %d training cases", found, len(cases))
    return found


def _mm(values):
    return " x ".join(f"{v:.3g}" for v in values)


#: What a run folder's `best.keras` spec must keep for the same command to resume it: the cases and how they
#: are preprocessed (the number of epochs may change).
RUN_KEYS = ("split", "spacing", "orientation", "intensity", "patch_size", "spatial_dims", "label_values",
            "class_names", "regions", "modalities")


def check_same_run(out_dir, spec):
    """Refuse, in one line, to resume (or overwrite) the run in `out_dir` with other cases or preprocessing.

    The spec inside `out_dir/best.keras` is compared with this command's on `RUN_KEYS`: another `--fold`,
    spacing or intensity in the same folder would otherwise go on training the saved weights on a different
    split (validation cases trained on) and choose the best checkpoint across the two.
    """
    from keras_medseg.data.scans.preprocess import load_preprocessing

    best = os.path.join(os.fspath(out_dir), "best.keras")
    if not os.path.exists(best):
        return
    saved = load_preprocessing(best) or {}
    same = json.loads(json.dumps({k: spec.get(k) for k in RUN_KEYS}))
    differ = [k for k in RUN_KEYS if k in saved and saved[k] != same[k]]
    if differ:
        raise ValueError(f"Run folder {os.fspath(out_dir)!r} holds a run with another "
                         + ", ".join(f"{k} ({saved[k]!r}; this command: {same[k]!r})" for k in differ)
                         + ": use a new --out (out_dir), or the run's own arguments to resume it.")
