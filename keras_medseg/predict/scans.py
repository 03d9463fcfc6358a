"""Whole scans in, label maps out: the library behind `keras-medseg predict` and `evaluate` on scans.

* `predict_scan(model, record, spec)`: one `ImageRecord` -> label map on the
  scan's own voxel grid (reoriented and resampled to the model's training
  frame, predicted window by window, brought back exactly).
* `predict_files(model_path, inputs, output_dir)`: files or DICOM folders ->
  NIfTI label maps with each input's geometry.
* Multi-label models (a spec with `regions`, `keras_medseg.training.train_volumes`)
  give one 0/1 mask per region; `predict_files` writes them as one label map per
  region (`<name>_<region>.nii.gz`) and/or one merged map (`merged_label_values`:
  the last region listed that holds a voxel wins, so nested regions listed from
  the largest to the smallest give the innermost region), and `evaluate_scans`
  scores every region against the regions of the reference label map.
* Multi-modal scans (a spec with `modalities` and a `modality_pattern`) are read
  as one file per modality (`keras_medseg.data.scans.modalities`).
* `evaluate_scans(model_path, data_dir, csv_path)`: per-case, per-class Dice,
  IoU, HD95, ASSD and surface Dice in mm, with a summary; held-out cases by
  default.

The preprocessing comes from the spec saved with the model
(`keras_medseg.data.scans.preprocess.load_preprocessing`); models saved without one
get `default_preprocessing()` (own voxel grid, per-scan z-score).
"""

import logging
import os

import numpy as np

from keras_medseg.data.cases import find_scans
from keras_medseg.data.regions import merge_regions
from keras_medseg.data.scans.geometry import from_model_space, resample_to_grid, to_model_space, undo_reorient
from keras_medseg.data.scans.io import ImageRecord, read_image, write_image
from keras_medseg.data.scans.preprocess import intensity, resolve_preprocessing
from keras_medseg.inference import sliding_window_slabs

__all__ = [
    "merged_label_values",
    "original_label_values",
    "plan_outputs",
    "predict_files",
    "predict_scan",
]

logger = logging.getLogger(__name__)


def _argmax_uint8(probs, chunk=16):
    """Arg-max over the last axis in slabs, so no int64 copy of the whole volume is made."""
    out = np.empty(probs.shape[:-1], dtype=np.uint8 if probs.shape[-1] <= 256 else np.int32)
    if probs.shape[-1] == 1:
        np.greater(probs[..., 0], 0.5, out=out, casting="unsafe")
        return out
    for i in range(0, probs.shape[0], chunk):
        out[i:i + chunk] = np.argmax(probs[i:i + chunk], axis=-1)
    return out


def predict_scan(model, record, spec=None, overlap=0.5, batch_size=2, progress=False, allow_padding=True,
                 flips=None, return_probabilities=False):
    """Segment one scan with a model, returning labels on the scan's own grid.

    Steps: reorient to `spec["orientation"]` and resample to `spec["spacing"]`
    (linear), apply `spec["intensity"]`, sliding-window inference with
    windows of `spec["patch_size"]` (Gaussian blending), resample the class
    probabilities back to the scan's exact voxel grid (linear) and take the
    arg-max. On the model's own grid (no spacing change) the blended
    probabilities stream out of `keras_medseg.inference.sliding_window_slabs`
    band by band into the uint8 label map: no full-size float map is made
    unless `return_probabilities`; with a spacing change the float32
    probability map on the model grid is kept and resampled back one channel
    at a time into a running arg-max. The labels equal the arg-max of the
    `sliding_window` probabilities brought back with `from_model_space`
    (tests/test_predict_fast.py).

    Args:
        model: Keras model `(B, *patch, C_in)` -> `(B, *patch, K)` (softmax,
            or one sigmoid channel; or R sigmoid regions when `spec` has `regions`).
        record: `ImageRecord` from `keras_medseg.data.read_image`.
        spec: preprocessing dict (see `save_preprocessing`); default
            `resolve_preprocessing` defaults from the model.
        overlap: float in [0, 1), window overlap (default 0.5).
        batch_size: windows per forward pass (default 2; sets peak memory).
        progress: bool, Keras progress bar over the windows.
        allow_padding: bool (default True). A scan smaller than the window
            along some axis (on the model grid) is padded at the end of that
            axis with 0 after intensity normalisation, as MONAI's
            `sliding_window_inference` and nnU-Net do, and the padding is cut
            from the output; False refuses such a scan (one error naming the
            file and the axes).
        flips: None (default), spatial axes of the model grid, e.g.
            `(0, 1, 2)`, or "all" (every spatial axis): mirroring test-time
            augmentation (each window also predicted mirrored along every
            subset of these axes, the probabilities averaged;
            `keras_medseg.inference.sliding_window_slabs`).
        return_probabilities: bool (default False): also return the float32
            class (or region) probabilities on the scan's grid.

    Returns:
        uint8 label array with the spatial shape of `record` (voxel index
        order, the record's affine applies); with `spec["regions"]`, uint8
        0/1 masks `(*S, R)`, a voxel in region `r` where its sigmoid
        probability (resampled linearly to the scan's grid) is above 0.5.
        With `return_probabilities`: `(labels, probabilities)`, the second
        float32 `(*S, K)` (softmax: sums to 1 per voxel; labels = its arg-max).

    Raises:
        ValueError: the scan is not a single-channel volume/image of the
            model's dimensionality, holds NaN voxels, or (`allow_padding=False`)
            is smaller than the window (each names the file).

    Example:
    >>> rec = keras_medseg.data.read_image("ct.nii.gz")  # doctest: +SKIP
    >>> labels = keras_medseg.predict.scans.predict_scan(model, rec)  # doctest: +SKIP
    >>> keras_medseg.data.write_image("ct_seg.nii.gz", labels, rec)  # doctest: +SKIP
    """
    if not isinstance(record, ImageRecord):
        raise TypeError(f"`record` must be an ImageRecord from read_image. Received: record={type(record).__name__}")
    if spec is None:
        spec = resolve_preprocessing_from_model(model)
    d = int(spec.get("spatial_dims") or len(model.inputs[0].shape) - 2)
    name = record.path or "scan"
    in_channels = int(model.inputs[0].shape[-1])
    array = np.asarray(record.array)
    if record.spatial_dims != d:
        raise ValueError(f"The model segments {d}D scans; {name!r} is {record.spatial_dims}D with shape {array.shape}.")
    if array.ndim == d and in_channels != 1 or array.ndim == d + 1 and array.shape[-1] != in_channels \
            or array.ndim not in (d, d + 1):
        raise ValueError(f"The model takes {in_channels}-channel {d}D inputs; {name!r} holds a {array.ndim}D array "
                         f"of shape {array.shape}.")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name!r} holds {bad} NaN/inf voxels; clean or mask them before predicting.")
    x, change = to_model_space(array, record.affine, spacing=spec.get("spacing"),
                               orientation=spec.get("orientation"), order=1, spatial_dims=d)
    x = _normalise(x, spec.get("intensity") or {"preset": "none"}, repr(name), d,  # per channel
                   fresh=x is not array and x.base is None)
    if x.ndim == d:
        x = x[..., None]
    patch = spec.get("patch_size") or [int(s) if s is not None else None for s in model.inputs[0].shape[1:-1]]
    patch = [s if p is None else int(p) for p, s in zip(patch, x.shape[:d])]
    small = [(i, s, p) for i, (s, p) in enumerate(zip(x.shape[:d], patch)) if s < p]
    if small and not allow_padding:
        raise ValueError(
            f"The window {tuple(patch)} is larger than the scan {name!r} ({tuple(x.shape[:d])} voxels on the model "
            f"grid) along axes {[i for i, _, _ in small]}, and allow_padding=False (--no-pad) refuses to pad it."
        )
    regions = bool(spec.get("regions"))
    resampled = tuple(change.model_shape) != tuple(change.reoriented_shape) or \
        not np.allclose(change.model_affine, change.reoriented_affine)
    probs = labels = None
    for _, start, stop, band in sliding_window_slabs(model, x, tuple(patch), overlap=overlap, batch_size=batch_size,
                                                     progress=progress, flips=flips):
        if resampled or return_probabilities:
            if probs is None:
                probs = np.empty(x.shape[:d] + band.shape[-1:], dtype=np.float32)
            probs[start:stop] = band
        if not resampled:
            if labels is None:
                labels = np.empty(x.shape[:d] + (band.shape[-1:] if regions else ()), dtype=np.uint8)
            labels[start:stop] = band > 0.5 if regions else _argmax_uint8(band)
    del x
    if not resampled:  # only the (exact) reorientation to undo
        labels = np.ascontiguousarray(from_model_space(labels, change, order=0))
        if return_probabilities:
            probs = np.ascontiguousarray(from_model_space(probs, change, order=1))
    elif return_probabilities:  # probabilities back onto the scan's grid (linear), then the arg-max
        probs = np.ascontiguousarray(from_model_space(probs, change, order=1))
        labels = (probs > 0.5).astype(np.uint8) if regions else _argmax_uint8(probs)
    else:
        labels = _resampled_labels(probs, change, regions)
    return (labels, probs) if return_probabilities else labels


def _normalise(x, preset, name, d, fresh):
    """`intensity(x, preset)`; pointwise presets slab by slab into one float32 array (`x` itself when `fresh`)."""
    kind = preset.get("preset") if isinstance(preset, dict) else preset
    if kind not in ("ct_window", "ct", "none") or x.ndim < 1:
        return intensity(x, preset, name=name, spatial_dims=d)  # statistics over the whole scan
    out = x if fresh and x.dtype == np.float32 else np.empty(x.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))  # about 16 MB of float32 per slab
    for i in range(0, x.shape[0], step):
        out[i:i + step] = intensity(x[i:i + step], preset, name=name, spatial_dims=d)
    return out


def _resampled_labels(probs, change, regions):
    """`argmax(from_model_space(probs, change, 1))` (or `> 0.5` per region) one resampled channel at a time."""
    k = probs.shape[-1]
    grid = (change.model_affine, change.reoriented_shape, change.reoriented_affine)
    labels = best = None
    for c in range(k):
        v = resample_to_grid(probs[..., c], grid[0], grid[1], grid[2], order=1)
        if regions:
            labels = np.empty(v.shape + (k,), np.uint8) if labels is None else labels
            labels[..., c] = v > 0.5
        elif k == 1:
            labels = (v > 0.5).astype(np.uint8)
        elif best is None:
            best, labels = v, np.zeros(v.shape, np.uint8 if k <= 256 else np.int32)
        else:  # strictly greater: ties keep the lower class, as np.argmax
            labels[v > best] = c
            np.maximum(best, v, out=best)
    if change.ornt is not None:
        labels = undo_reorient(labels, change.ornt)
    return np.ascontiguousarray(labels)


def resolve_preprocessing_from_model(model):
    """`default_preprocessing()` filled in from a model's input and output shapes."""
    from keras_medseg.data.scans.preprocess import default_preprocessing

    spec = default_preprocessing()
    spec["spatial_dims"] = len(model.inputs[0].shape) - 2
    spec["patch_size"] = [None if s is None else int(s) for s in model.inputs[0].shape[1:-1]]
    channels = int(model.outputs[0].shape[-1])
    spec["class_names"] = [f"class_{i}" for i in range(max(channels, 2))]
    return spec


def _load(model_path):
    import keras_medseg  # noqa: F401  (registers the project's layers for loading)
    from keras_medseg.utils.model_io import load_model

    model = load_model(model_path, compile=False)
    return model, resolve_preprocessing(model_path, model)


def plan_outputs(scans, output_dir, extension, suffixes=None):
    """The label-map path of every scan, refusing any that would replace an input or another scan's label map.

    Rules (checked before anything is predicted):

    * a label map is never written over an input of the call: an output path that is the same file as an
      input (`os.path.samefile`: the same path, a hard link or a symlink to it; e.g. `--output` is the
      input's folder and the derived name equals an input's) is refused;
    * two scans whose names differ only in case (`Case.nii`, `case.nii.gz`) would share one label map on a
      case-insensitive file system: refused (rename one). Same stems within one folder (`case/`, `case.nii`,
      `case.nii.gz`) are refused by `keras_medseg.data.cases.find_scans`;
    * an output path that is an existing folder is refused. An existing file that is not an input (a label
      map of an earlier run) is replaced, atomically.

    Args:
        scans: `[(name, input_path)]` (`find_scans`; a multi-modal input is a tuple of paths).
        output_dir: str, the output folder.
        extension: ".nii.gz" or ".png".
        suffixes: None (default: one output per scan) or a list of name suffixes (e.g. `["", "_core"]`):
            one output `<name><suffix><extension>` per suffix.

    Returns:
        list of output paths, in the order of `scans` (with `suffixes`: one list of paths per scan).

    Raises:
        ValueError: one of the cases above, naming both paths.
    """
    outputs, seen = [], {}
    inputs = [f for _, src in scans for f in (src if isinstance(src, (list, tuple)) else [src])]
    for name, src in scans:
        paths = [os.path.join(output_dir, name + suffix + extension) for suffix in (suffixes or [""])]
        for out in paths:
            key = os.path.normcase(os.path.abspath(out)).lower()
            if key in seen:
                raise ValueError(f"Scans {seen[key]!r} and {src!r} would both get the label map {out!r}: their "
                                 "names differ only in letter case; rename one.")
            seen[key] = src
            if os.path.isdir(out):
                raise ValueError(f"Cannot write the label map of {src!r} to {out!r}: a folder of that name exists.")
            if os.path.exists(out):
                for other in inputs:
                    if os.path.exists(other) and os.path.samefile(out, other):
                        raise ValueError(
                            f"Refusing to write the label map of {src!r} to {out!r}: that file is an input scan "
                            f"({other!r}) and would be replaced. Choose another output folder (--output).")
        outputs.append(paths if suffixes is not None else paths[0])
    return outputs


def predict_files(model_path, inputs, output_dir, overlap=0.5, batch_size=2, progress=True, allow_padding=True,
                  resample_irregular=False, region_output="merged", flips=None, probabilities=False):
    """Predict every scan in `inputs` and write NIfTI label maps with each scan's geometry.

    Label maps never replace an input and never collide (`plan_outputs`, checked before the first scan is
    predicted); each is written to a temporary file and moved into place (`write_image`), so a killed run
    leaves complete label maps and no truncated one under a final name; files get the umask's mode. When the
    model's spec records `label_values` (masks with ids such as `{0, 1, 4}`), the label maps hold those
    original values.

    Args:
        model_path: str, a `.keras` model (its saved preprocessing spec is
            repeated; see `keras_medseg.data.scans.preprocess`).
        inputs: str, a scan file, a DICOM series folder, a single DICOM file, or a folder of them.
        output_dir: str, where `<name>.nii.gz` label maps are written (2D
            inputs: `<name>.png`).
        overlap, batch_size, allow_padding: see `predict_scan`.
        progress: bool, progress bar over each scan's windows (default True).
        resample_irregular: bool (default False): resample DICOM series with missing slices, uneven gaps,
            mixed pixel spacing or a tilted stack onto a regular grid instead of refusing them
            (`keras_medseg.data.scans.dicom`); the label map is written on that grid.
        region_output: multi-label models only: "merged" (default: `<name>.nii.gz`, one label map by
            `merged_label_values`), "regions" (`<name>_<region>.nii.gz`, one 0/1 map per region) or "both".
        flips: None (default), spatial axes or "all", for mirroring test-time augmentation (see `predict_scan`).
        probabilities: bool (default False): also write the class (region) probabilities on the scan's grid,
            float32 `(*S, K)`, as `<name>_probabilities.nii.gz` (2D inputs too: NIfTI keeps the floats).

    Multi-modal models (a spec with `modalities` and `modality_pattern`) take a folder of per-modality files,
    grouped into cases as in training; a modality off its case's first modality's grid is refused (named).

    Returns:
        list of `(name, input_path, output_path)` (multi-label: one entry per file written; with
        `probabilities`, the probability map's entry follows its label map's).

    Raises:
        FileNotFoundError / ValueError: missing model or input, unreadable
            scans, bad inputs, outputs that would replace an input or collide
            (each names the file).
    """
    if region_output not in ("merged", "regions", "both"):
        raise ValueError(f"`region_output` must be 'merged', 'regions' or 'both'. Received: {region_output!r}")
    if not isinstance(probabilities, (bool, np.bool_)):
        raise ValueError(f"`probabilities` must be True or False. Received: probabilities={probabilities!r}")
    model, spec = _load(model_path)
    d, regions = spec["spatial_dims"], spec.get("regions")
    written = []
    pattern = spec.get("modality_pattern")
    scans = find_scans(inputs, spec.get("modalities") if pattern else None, pattern)
    if os.path.isfile(output_dir):
        raise ValueError(f"`output_dir` must be a folder; {output_dir!r} is a file.")
    suffixes = None
    if regions:  # "" is the merged map, "_<region>" one per region
        suffixes = ([""] if region_output != "regions" else []) + (
            [f"_{r['name']}" for r in regions] if region_output != "merged" else [])
    elif probabilities:
        suffixes = [""]
    ext = ".nii.gz" if d == 3 else ".png"
    outputs = plan_outputs(scans, output_dir, ext, suffixes)
    prob_outputs = plan_outputs(scans, output_dir, ".nii.gz", ["_probabilities"]) if probabilities else None
    taken = {os.path.normcase(os.path.abspath(f)).lower() for o in outputs for f in np.atleast_1d(o).tolist()}
    for paths in prob_outputs or []:
        if os.path.normcase(os.path.abspath(paths[0])).lower() in taken:
            raise ValueError(f"The probability map {paths[0]!r} would replace a label map of this run (a region "
                             "named 'probabilities'?); rename the region or drop --probabilities.")
    os.makedirs(output_dir, exist_ok=True)
    for i, ((name, path), out) in enumerate(zip(scans, outputs)):
        logger.info("predict %d/%d: %s", i + 1, len(scans), path)
        record = read_image(path, spatial_dims=d, resample_irregular=resample_irregular,
                            channels=int(model.inputs[0].shape[-1]) > 1)
        labels = predict_scan(model, record, spec, overlap=overlap, batch_size=batch_size, progress=progress,
                              allow_padding=allow_padding, flips=flips, return_probabilities=probabilities)
        probs = None
        if probabilities:
            labels, probs = labels
        if not regions:
            targets, maps = [out[0] if probabilities else out], [original_label_values(labels, spec)]
        else:
            targets = out
            maps = ([merge_regions(labels, merged_label_values(regions))] if region_output != "regions" else []) + (
                [labels[..., r] for r in range(len(regions))] if region_output != "merged" else [])
        for target, array in zip(targets, maps):
            write_image(target, array, record)
            written.append((name, path, target))
        if probs is not None:
            write_image(prob_outputs[i][0], probs, record)
            written.append((name, path, prob_outputs[i][0]))
    return written


def merged_label_values(regions):
    """The value each region writes in a merged label map (`keras_medseg.data.regions.merge_regions`).

    Rule: a voxel takes the value of the *last* region listed that holds it; region `r` writes the smallest
    of its mask values that no later region lists (its "own" values), else its smallest value. Nested regions
    listed from the largest to the smallest (whole tumour {1, 2, 3}, tumour core {2, 3}, enhancing {3})
    therefore give back the label map (1, 2, 3): the innermost region wins.

    Args:
        regions: the spec's regions, `[{"name", "values"}]` in channel order.

    Returns:
        list of int, one per region.

    Example:

    >>> keras_medseg.predict.scans.merged_label_values([{"name": "wt", "values": [1, 2, 4]},
    ...     {"name": "tc", "values": [1, 4]}, {"name": "et", "values": [4]}])
    [2, 1, 4]
    """
    out = []
    for r, region in enumerate(regions):
        later = {v for other in regions[r + 1:] for v in other["values"]}
        own = [v for v in region["values"] if v not in later]
        out.append(min(own or region["values"]))
    return out


def original_label_values(labels, spec):
    """Class ids -> the voxel values the training masks used (`spec["label_values"]`), when they differ."""
    values = spec.get("label_values")
    if not values or list(values) == list(range(len(values))):
        return labels
    lut = np.asarray(values, dtype=np.int64)
    if int(labels.max(initial=0)) >= len(lut):
        raise ValueError(f"The model predicts class {int(labels.max())} but its spec lists only {len(lut)} label "
                         f"values {list(values)}.")
    return lut[labels]


