"""Preprocessing of scans in their own geometry, and the preprocessing spec saved with a model.

Everything here works on voxel arrays in **voxel index order** `(i, j, k)` as
stored in the file (the order nibabel uses), with a 4x4 `affine` that maps
voxel indices to RAS+ millimetres (see `keras_medseg.data.read_image`).

* `reorient(array, affine, "RAS")` / `undo_reorient(...)`: permute and flip
  axes so the array runs along a canonical frame, and back (nibabel's
  orientation algebra; no interpolation, exact).
* `resample(array, affine, spacing, order)` / `resample_to_grid(...)`: change
  the voxel size (linear or cubic for images, nearest for labels) and come
  back to the exact original grid (checked against SimpleITK).
  (These live in `keras_medseg.data.scans.geometry`.)
* `intensity(array, preset)`: CT window in HU, percentile scaling, z-score
  (optionally inside a foreground mask).
* `crop_to_foreground` / `uncrop`.
* `save_preprocessing(model_path, spec)` / `load_preprocessing(model_path)`:
  the spec (spacing, orientation, intensity preset, class names, spatial dims,
  patch size) travels inside the `.keras` file so `keras-medseg predict` can
  repeat it with no flags.
"""

import io
import json
import os
import zipfile

import numpy as np

from keras_medseg.utils.atomic_io import atomic_path

__all__ = [
    "PREPROCESSING_FILENAME",
    "check_regions",
    "check_spec",
    "crop_to_foreground",
    "default_preprocessing",
    "intensity",
    "load_preprocessing",
    "resolve_preprocessing",
    "save_preprocessing",
    "uncrop",
]

# Name of the spec inside a `.keras` archive (and suffix of the side-car file otherwise).
PREPROCESSING_FILENAME = "keras_medseg_preprocessing.json"
_SPEC_KEYS = ("spacing", "orientation", "intensity", "class_names", "spatial_dims", "patch_size", "split",
              "label_values", "modalities", "modality_pattern", "regions")
_PRESETS = ("ct_window", "ct", "percentile", "zscore", "none")


def default_preprocessing():
    """The spec assumed for a model saved without one (models trained before issue 13).

    `spacing=None` and `orientation=None` (the scan is used in its own voxel
    grid, as the folder loader always did), `intensity={"preset": "zscore"}`
    (per-image zero mean, unit variance, what `load_folder(normalize=True)`
    does), `class_names=None` (named `class_0`, `class_1`, ... from the
    model's output channels), `spatial_dims=None` and `patch_size=None` (read
    from the model's input shape).
    """
    return {
        "spacing": None,
        "orientation": None,
        "intensity": {"preset": "zscore"},
        "class_names": None,
        "spatial_dims": None,
        "patch_size": None,
        "split": None,
        "label_values": None,
        "modalities": None,
        "modality_pattern": None,
        "regions": None,
    }


def check_spec(spec):
    """A preprocessing spec completed with the defaults and checked (`save_preprocessing`'s format).

    Raises:
        TypeError: `spec` is not a dict.
        ValueError: unknown keys or bad values (named).
    """
    if not isinstance(spec, dict):
        raise TypeError(f"`spec` must be a dict. Received: spec={spec!r}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(
            f"`spec` has unknown keys {unknown}; allowed keys: {list(_SPEC_KEYS)}. Received: spec={spec!r}"
        )
    out = default_preprocessing()
    out.update(spec)
    if out["spacing"] is not None:
        sp = [float(s) for s in out["spacing"]]
        if not sp or any(not np.isfinite(s) or s <= 0 for s in sp):
            raise ValueError(
                f"`spec['spacing']` must be positive mm per axis or None. Received: spacing={out['spacing']!r}"
            )
        out["spacing"] = sp
    if out["orientation"] is not None:
        o = str(out["orientation"]).upper()
        if len(o) != 3 or sorted(o.replace("L", "R").replace("P", "A").replace("I", "S")) != ["A", "R", "S"]:
            raise ValueError(
                "`spec['orientation']` must be a 3-letter code such as 'RAS' or None. "
                f"Received: orientation={out['orientation']!r}"
            )
        out["orientation"] = o
    inten = out["intensity"]
    if inten is None:
        inten = {"preset": "none"}
    if not isinstance(inten, dict) or inten.get("preset") not in _PRESETS:
        raise ValueError(
            f"`spec['intensity']` must be a dict with 'preset' in {_PRESETS}. Received: intensity={inten!r}"
        )
    out["intensity"] = dict(inten)
    if out["class_names"] is not None:
        out["class_names"] = [str(c) for c in out["class_names"]]
    if out["spatial_dims"] is not None:
        out["spatial_dims"] = int(out["spatial_dims"])
    if out["patch_size"] is not None:
        out["patch_size"] = [int(p) for p in out["patch_size"]]
    if out["label_values"] is not None:
        values = out["label_values"]
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, np.integer)) and not isinstance(
                v, bool) for v in values) or len(set(values)) != len(values):
            raise ValueError("`spec['label_values']` must be a list of distinct ints (the mask value of each class). "
                             f"Received: label_values={values!r}")
        out["label_values"] = [int(v) for v in values]
    if out["modalities"] is not None:
        from keras_medseg.data.scans.modalities import check_modalities

        out["modalities"] = list(check_modalities(out["modalities"]))
    if out["modality_pattern"] is not None and out["modalities"] is None:
        raise ValueError("`spec['modality_pattern']` needs `spec['modalities']` (the names it fills in). "
                         f"Received: modality_pattern={out['modality_pattern']!r}")
    if out["regions"] is not None:
        out["regions"] = check_regions(out["regions"])
    if out["split"] is not None:
        if not isinstance(out["split"], dict):
            raise ValueError(
                "`spec['split']` must be a dict such as {'train': [...], 'validation': [...]}. "
                f"Received: split={out['split']!r}"
            )
        out["split"] = {str(k): [str(c) for c in v] for k, v in out["split"].items()}
    return out


def check_regions(regions):
    """Regions of a multi-label model as `[{"name": str, "values": [int, ...]}, ...]`, in channel order.

    Accepts that list, a list of `(name, values)` pairs or a dict `{name: values}` (`values`: the mask values
    inside the region). Regions may overlap; names are distinct.

    Raises:
        ValueError: no region, a repeated name, a region without integer values (named).
    """
    if isinstance(regions, dict):
        regions = list(regions.items())
    if not isinstance(regions, (list, tuple)) or not regions:
        raise ValueError("`regions` must list at least one region (name and mask values). "
                         f"Received: regions={regions!r}")
    out = []
    for item in regions:
        name, values = (item.get("name"), item.get("values")) if isinstance(item, dict) else tuple(item)
        values = [values] if isinstance(values, (int, np.integer)) else values
        if not isinstance(values, (list, tuple)) or not values or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"Region {name!r} must list integer mask values, e.g. [1, 2, 3]. Received: {values!r}")
        out.append({"name": str(name), "values": sorted({int(v) for v in values})})
    names = [r["name"] for r in out]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"Region names must be distinct and non-empty. Received: {names}")
    return out


def _is_zip(path):
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def _sidecar(path):
    return os.fspath(path) + "." + PREPROCESSING_FILENAME.replace("keras_medseg_", "")


def save_preprocessing(model_path, spec):
    """Store the preprocessing `spec` with a saved model (atomic write).

    A `.keras` file (a zip archive) gets the spec as the member
    `keras_medseg_preprocessing.json`, so it travels with the model;
    `keras.saving.load_model` ignores the extra member. Any other model path
    (a directory, an `.h5` file) gets a side-car file
    `<model_path>.preprocessing.json`. The archive is rewritten to a temporary
    file in the same folder and moved over the original in one `os.replace`.

    Args:
        model_path: str, a saved model (must exist).
        spec: dict with keys `spacing` (mm per spatial axis or None),
            `orientation` (e.g. "RAS" or None), `intensity` (e.g.
            `{"preset": "ct_window", "low": -160, "high": 240}`,
            `{"preset": "zscore"}`, `{"preset": "percentile", "low": 0.5,
            "high": 99.5}`), `class_names` (list of str), `spatial_dims`,
            `patch_size`, and optionally `split` (`{"train": [names],
            "validation": [names]}`, the case stems) and `label_values` (the
            mask value of each class, `keras_medseg.data.cases.standardize_labels`;
            predict writes these values and evaluate reads masks with them).
            Missing keys take `default_preprocessing()` values.

    Raises:
        FileNotFoundError: `model_path` does not exist.
        ValueError: unknown keys or malformed values (named).

    Example:
    >>> model.save("liver.keras")  # doctest: +SKIP
    >>> spec = {"spacing": [1, 1, 3], "orientation": "RAS"}
    >>> keras_medseg.data.save_preprocessing("liver.keras", spec)  # doctest: +SKIP
    """
    model_path = os.fspath(model_path)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"Cannot save preprocessing: model file not found. Received: model_path={model_path!r}")
    payload = json.dumps(check_spec(spec), indent=2, sort_keys=True).encode()
    # Through `atomic_path` (a plain `open`): the rewritten file keeps the umask's mode, as every other file a run
    # writes (a `tempfile.mkstemp` temporary is 0600 and made `best.keras` private).
    if _is_zip(model_path):
        with atomic_path(model_path) as tmp:
            with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
                for item in src.infolist():
                    if item.filename != PREPROCESSING_FILENAME:
                        dst.writestr(item, src.read(item.filename))
                dst.writestr(PREPROCESSING_FILENAME, payload)
        return
    with atomic_path(_sidecar(model_path), estimate_bytes=len(payload)) as tmp, open(tmp, "wb") as f:
        f.write(payload)


def load_preprocessing(model_path):
    """The preprocessing spec saved with a model, or None when it has none.

    Args:
        model_path: str, a `.keras` file or another saved model path.

    Returns:
        dict with all keys of `default_preprocessing()`, or `None` for a model
        saved without a spec (use `resolve_preprocessing` to get the documented
        defaults filled in).

    Raises:
        FileNotFoundError: `model_path` does not exist.
        ValueError: the stored spec is not valid JSON (names the file).
    """
    model_path = os.fspath(model_path)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"Model file not found. Received: model_path={model_path!r}")
    raw = None
    if _is_zip(model_path):
        with zipfile.ZipFile(model_path) as z:
            if PREPROCESSING_FILENAME in z.namelist():
                raw = z.read(PREPROCESSING_FILENAME)
    if raw is None and os.path.isfile(_sidecar(model_path)):
        with open(_sidecar(model_path), "rb") as f:
            raw = f.read()
    if raw is None:
        return None
    try:
        spec = json.load(io.BytesIO(raw))
    except ValueError as exc:
        raise ValueError(f"The preprocessing spec stored with {model_path!r} is not valid JSON: {exc}") from exc
    return check_spec(spec)


def resolve_preprocessing(model_path, model=None):
    """`load_preprocessing` with the documented defaults filled in from the model.

    `spatial_dims` and `patch_size` come from the model's input shape and
    `class_names` from its output channels (`class_0`, ...) when the spec does
    not give them.
    """
    spec = load_preprocessing(model_path) or default_preprocessing()
    if model is not None:
        in_shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
        if in_shape is not None:
            if spec["spatial_dims"] is None:
                spec["spatial_dims"] = len(in_shape) - 2
            if spec["patch_size"] is None and all(s is not None for s in in_shape[1:-1]):
                spec["patch_size"] = [int(s) for s in in_shape[1:-1]]
        if spec["class_names"] is None and getattr(model, "outputs", None):
            channels = int(model.outputs[0].shape[-1])
            spec["class_names"] = [f"class_{i}" for i in range(max(channels, 2))]
    return spec


# ---------------------------------------------------------------- intensity


def intensity(array, preset="zscore", mask=None, name="image", spatial_dims=None, **params):
    """Intensity normalisation presets, per channel for multi-channel (multi-modal) arrays.

    Args:
        array: numeric array (any shape).
        preset: str or dict. "ct_window" (`low`, `high` in HU, default -1000
            and 1000: clip to the window, scale to [0, 1]), "percentile" (`low`,
            `high` in percent, default 0.5 and 99.5: clip to those percentiles,
            scale to [0, 1]), "zscore" (`(x - mean) / (std + 1e-6)`, the
            statistics taken inside `mask` when given), "none" (float32 copy).
            A dict `{"preset": ..., **params}` (the spec's `intensity`) works too.
            `nonzero=True` (zscore, percentile): the statistics are taken over
            the non-zero voxels of each channel only, and zero voxels stay 0
            (skull-stripped MR, whose background is 0). "ct" (nnU-Net's CT
            normalisation, with a data set's foreground statistics `low`,
            `high`, `mean`, `std` in HU from
            `keras_medseg.data.scans.ct_normalization`): clip to
            `[low, high]`, then `(x - mean) / std`.
        mask: optional bool array of `array`'s spatial shape; the percentile
            and z-score statistics are taken over its voxels only.
        name: str, how errors name the array (e.g. the file).
        spatial_dims: int or None (default). When `array` has one axis more
            than `spatial_dims` (channels last, e.g. `(D, H, W, C)` MR
            sequences), every channel is normalised with its own statistics,
            `x[..., c] = (x[..., c] - mean_c) / (std_c + 1e-6)` for zscore;
            None treats the whole array as one channel.

    Returns:
        float32 array of `array`'s shape.

    Raises:
        ValueError: NaN/inf voxels, an unknown preset, `high <= low`, or an
            empty mask (all named).

    Example:
    >>> from keras_medseg.data.scans.preprocess import intensity
    >>> x = intensity(ct, {"preset": "ct_window", "low": -160, "high": 240})  # doctest: +SKIP
    """
    if isinstance(preset, dict):
        params = {**{k: v for k, v in preset.items() if k != "preset"}, **params}
        preset = preset.get("preset")
    if preset not in _PRESETS:
        raise ValueError(f"`preset` must be one of {_PRESETS}. Received: preset={preset!r}")
    x = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} holds {bad} NaN/inf voxels; clean or mask them before preprocessing.")
    if spatial_dims is not None and x.ndim == int(spatial_dims) + 1:
        return np.stack([intensity(x[..., c], preset, mask, f"{name} channel {c}", **params)
                         for c in range(x.shape[-1])], axis=-1)
    nonzero = bool(params.pop("nonzero", False)) and preset in ("zscore", "percentile")
    if nonzero:
        inside = x != 0
        mask = inside if mask is None else np.asarray(mask, bool) & inside
        if not mask.any():  # an empty channel stays empty
            return np.zeros_like(x)
    sel = x
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != x.shape:
            raise ValueError(
                f"`mask` must have the shape of {name}. Received: mask.shape={mask.shape}, {name}.shape={x.shape}"
            )
        if not mask.any():
            raise ValueError(f"`mask` selects no voxels of {name}.")
        sel = x[mask]
    if preset == "none":
        return x.copy()
    if preset == "ct":
        missing = [k for k in ("low", "high", "mean", "std") if k not in params]
        if missing:
            raise ValueError(f"The 'ct' intensity preset needs the data set's foreground statistics {missing} (HU); "
                             "train_volumes(intensity=\"ct\") computes them from the training cases "
                             "(keras_medseg.data.scans.ct_normalization.ct_preset).")
        low, high, mean, std = (float(params[k]) for k in ("low", "high", "mean", "std"))
        return ((np.clip(x, low, high) - mean) / max(std, 1e-8)).astype(np.float32)
    if preset == "zscore":
        out = ((x - sel.mean()) / (sel.std() + 1e-6)).astype(np.float32)
        return np.where(inside, out, np.float32(0.0)) if nonzero else out
    if preset == "ct_window":
        low, high = float(params.get("low", -1000.0)), float(params.get("high", 1000.0))
    else:
        lo_p, hi_p = float(params.get("low", 0.5)), float(params.get("high", 99.5))
        if not 0 <= lo_p < hi_p <= 100:
            raise ValueError(
                f"percentile `low`/`high` must satisfy 0 <= low < high <= 100. Received: low={lo_p}, high={hi_p}"
            )
        low, high = (float(v) for v in np.percentile(sel, [lo_p, hi_p]))
        if high <= low:
            return np.zeros_like(x)
        if nonzero:
            return np.where(inside, (np.clip(x, low, high) - low) / (high - low), np.float32(0.0)).astype(np.float32)
    if high <= low:
        raise ValueError(f"`high` must be above `low`. Received: low={low}, high={high}")
    return ((np.clip(x, low, high) - low) / (high - low)).astype(np.float32)


# ---------------------------------------------------------------- cropping


def crop_to_foreground(array, foreground=None, margin=0):
    """Crop to the bounding box of the foreground, plus a margin in voxels.

    Args:
        array: `(*S)` or `(*S, C)`.
        foreground: bool array `(*S)`; default: voxels above the array's
            minimum (over channels), e.g. body vs. air/padding in CT.
        margin: int or sequence of int, voxels kept around the box (clipped
            at the border).

    Returns:
        `(cropped, box)`: the crop and the tuple of slices it came from (give
        it to `uncrop`). An array with no foreground is returned whole.
    """
    array = np.asarray(array)
    if foreground is None:
        ref = array if array.ndim <= 3 or array.shape[-1] > 4 else array.max(axis=-1)
        foreground = ref > ref.min()
    foreground = np.asarray(foreground, bool)
    d = foreground.ndim
    if array.shape[:d] != foreground.shape:
        raise ValueError(
            "`foreground` must have the spatial shape of `array`. "
            f"Received: foreground.shape={foreground.shape}, array.shape={array.shape}"
        )
    margins = [int(margin)] * d if np.isscalar(margin) else [int(m) for m in margin]
    if not foreground.any():
        box = tuple(slice(0, n) for n in foreground.shape)
        return array, box
    box = []
    for axis in range(d):
        hit = np.flatnonzero(foreground.any(axis=tuple(a for a in range(d) if a != axis)))
        box.append(
            slice(max(0, int(hit[0]) - margins[axis]), min(foreground.shape[axis], int(hit[-1]) + 1 + margins[axis]))
        )
    box = tuple(box)
    return array[box], box


def uncrop(cropped, box, shape, fill=0):
    """Put a crop back into an array of spatial `shape` (the rest filled with `fill`)."""
    cropped = np.asarray(cropped)
    out = np.full(tuple(shape) + cropped.shape[len(box) :], fill, dtype=cropped.dtype)
    out[tuple(box)] = cropped
    return out
