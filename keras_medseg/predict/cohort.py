"""Cohort inference: a patch classifier over every slide of a folder, heatmaps, a scores table, lesion FROC.

`predict_cohort(model, "cohort/", "pred/")` writes, per slide, what
`keras-medseg slide predict` writes (`pred/<slide>/heatmap.npy`, `heatmap.png`,
`predictions.npz`, `summary.json`) plus, for an annotated slide, its tumour
mask on the heatmap's grid (`tumor_mask.npy`, one value per grid cell, taken
at the cell's centre); then `pred/scores.csv` (one row per slide: slide score,
patches, tumours) and, when the cohort is annotated (as in CAMELYON16, a slide
without an annotation file is then a normal slide; a cohort without any
annotation file is unlabelled), the lesion-level FROC under both protocols: the lecture's (patch level,
`keras_medseg.predict.slides.froc_from_predictions`) and CAMELYON16's
(`keras_medseg.evaluation.lesion_froc` on the heatmaps and masks).

Slides run one after another in this process (`workers=1`, the default: one
model, the backend's own threads), or one Dask task per slide on a local
cluster of `workers` processes or the cluster at `scheduler`
(`keras_medseg.data.slides.cohort.start_client`); each task loads the model
from its `.keras` file once per worker. A slide that fails is named in the
result and the others finish; a rerun skips the slides whose `summary.json`
exists.

Reference: the lecture "Convolutional networks - theory" (heatmaps, slide
score = best patch, FROC); Ehteshami Bejnordi et al., JAMA 2017 (CAMELYON16).
"""

import csv
import io
import json
import math
import os

import numpy as np

from keras_medseg.data.sources import find_slides
from keras_medseg.utils.atomic_io import atomic_write_text

__all__ = ["camelyon16_froc_from_predictions", "predict_cohort", "tumor_mask_on_grid"]

_MODELS = {}


def tumor_mask_on_grid(annotations, grid):
    """The tumour id of every heatmap cell of `grid` (a `PatchGrid`), sampled at the cell's centre.

    Cell `(i, j)` is the `stride x stride` square at the centre of patch `(i, j)`.

    Returns:
        `grid.grid_shape` int32 array, 0 outside every tumour.

    Example:

    >>> mask = keras_medseg.predict.cohort.tumor_mask_on_grid(read_annotations("t.xml"), result.grid)
    """
    off = (grid.size - grid.stride) / 2.0
    f = int(grid.stride // math.gcd(int(round(off)), int(grid.stride))) if off else 1
    down = tuple(d * grid.stride / f for d in grid.downsample)
    rows, cols = grid.grid_shape
    fine = annotations.label_window(down, (int(round(off * f / grid.stride)),) * 2, (rows * f, cols * f))
    return fine[f // 2::f, f // 2::f][:rows, :cols].astype(np.int32)


def _predict_one(model, case, out_dir, params):
    """One slide (the Dask task): heatmap, files, mask on the grid; returns its record or its error."""
    from keras_medseg.data.slides.annotations import Annotations, read_annotations
    from keras_medseg.data.slides.slide import open_slide
    from keras_medseg.predict.slides import predict_slide, write_slide_prediction
    from keras_medseg.utils.errors import one_line_message

    name = case["name"]
    try:
        if isinstance(model, (str, os.PathLike)):
            key = os.path.abspath(os.fspath(model))
            if key not in _MODELS:
                from keras_medseg.utils.model_io import load_model

                _MODELS[key] = load_model(key)
            model = _MODELS[key]
        ann = read_annotations(case["annotations"]) if case["annotations"] else None
        if ann is None and case.get("labelled"):  # CAMELYON layout: no annotation file = a normal slide
            ann = Annotations([], path="<normal slide>")
        slide_dir = os.path.join(out_dir, name)
        with open_slide(case["slide"]) as sl:
            res = predict_slide(model, sl, annotations=ann, slide_id=name, progress=False, **params)
            write_slide_prediction(res, sl, slide_dir, thumbnail_size=params.get("thumbnail_size", 1024))
            mpp = None if sl.mpp is None else float(sum(sl.level_mpp(res.grid.level)) / 2 * res.grid.stride)
        if ann is not None:
            np.save(os.path.join(slide_dir, "tumor_mask.npy"), tumor_mask_on_grid(ann, res.grid))
        return {"slide": name, "status": "done", "slide_score": res.slide_score, "num_patches": int(res.scores.size),
                "num_tumors": res.num_tumors, "map_mpp": mpp}
    except Exception as exc:  # noqa: BLE001 - one slide's failure is reported, the cohort goes on
        return {"slide": name, "status": "failed", "error": f"{type(exc).__name__}: {one_line_message(exc)}"}


def predict_cohort(model, cohort, out_dir, annotations=None, workers=1, scheduler=None, client=None, progress=True,
                   froc_box_size=8, **params):
    """Heatmaps, a slide scores table and the lesion FROC of every slide of a cohort.

    Args:
        model: a `.keras` path (needed with Dask workers) or a Keras model (`workers=1`).
        cohort: a folder of slides or a list of slide paths (`keras_medseg.data.sources.find_slides`).
        out_dir: output folder (`<slide>/` per slide, `scores.csv`, `cohort.json`).
        annotations: folder of `<slide>.xml` / `.geojson`, default beside the slides.
        workers: 1 (default: in this process) or the Dask worker processes.
        scheduler: a Dask scheduler address (tcp://host:8786) instead.
        client: a running `distributed.Client` to use.
        progress: tqdm bar over slides, default True.
        froc_box_size: int, non-maximum-suppression box of the CAMELYON16 FROC, in heatmap cells, default 8.
        **params: passed to `keras_medseg.predict.slides.predict_slide` (`level`, `size`,
            `inner_size`, `min_tissue`, `batch_size`, `rescale`, `thumbnail_size`).

    Returns:
        dict: `slides` (`{name: record}` with `slide_score`, `num_patches`,
        `num_tumors`, `map_mpp` (microns per heatmap cell)), `failed`
        (`{name: error}`), `skipped` (done before), `scores_csv`, and when
        every slide is annotated `froc_lecture` (the `froc_from_predictions`
        report) and `froc_camelyon16` (the `lesion_froc` result, None when a
        slide has no resolution or no lesion exists).

    Raises:
        ValueError: no slides; Dask workers with an in-memory model.

    Example:

    >>> res = keras_medseg.predict.cohort.predict_cohort("best.keras", "cohort/", "pred/", rescale=1 / 255)
    >>> res["froc_camelyon16"]["froc"], res["scores_csv"]

    Reference: the lecture "Convolutional networks - theory"; Ehteshami Bejnordi et al., JAMA 2017.
    """
    cases = find_slides(cohort, annotations)
    labelled = any(c["annotations"] for c in cases)
    cases = [dict(c, labelled=labelled) for c in cases]
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    parallel = client is not None or scheduler is not None or (workers or 1) > 1
    if parallel and not isinstance(model, (str, os.PathLike)):
        raise ValueError("Dask workers load the model from its file: pass the `.keras` path. "
                         f"Received: model={type(model).__name__}")
    records, failed, skipped = {}, {}, []
    todo = []
    for c in cases:
        summary = os.path.join(out_dir, c["name"], "summary.json")
        record = os.path.join(out_dir, c["name"], "cohort_record.json")
        if os.path.isfile(summary) and os.path.isfile(record):
            with open(record) as fh:
                records[c["name"]] = json.load(fh)
            skipped.append(c["name"])
        else:
            todo.append(c)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases), initial=len(skipped), unit="slide", desc="predict cohort")

    def finish(res):
        if res["status"] == "done":
            records[res["slide"]] = res
            atomic_write_text(os.path.join(out_dir, res["slide"], "cohort_record.json"), json.dumps(res))
        else:
            failed[res["slide"]] = res["error"]
        if bar is not None:
            bar.update(1)

    try:
        if not parallel:
            for c in todo:
                finish(_predict_one(model, c, out_dir, params))
        else:
            from distributed import as_completed

            from keras_medseg.data.slides.cohort import start_client

            own, cluster = (client, None) if client is not None else start_client(workers, scheduler)
            try:
                futures = [own.submit(_predict_one, os.path.abspath(model), c, out_dir, params, pure=False)
                           for c in todo]
                for fut in as_completed(futures):
                    finish(fut.result())
            finally:
                if client is None:
                    own.close()
                    if cluster is not None:
                        cluster.close()
    finally:
        if bar is not None:
            bar.close()
    names = [c["name"] for c in cases if c["name"] in records]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["slide", "slide_score", "num_patches", "num_tumors", "truth"])
    for n in names:
        r = records[n]
        truth = "unknown" if r["num_tumors"] is None else ("tumour" if r["num_tumors"] else "normal")
        writer.writerow([n, float(r["slide_score"]), r["num_patches"],
                         "" if r["num_tumors"] is None else r["num_tumors"], truth])
    scores_csv = os.path.join(out_dir, "scores.csv")
    atomic_write_text(scores_csv, table.getvalue())
    result = {"slides": records, "failed": failed, "skipped": skipped, "scores_csv": scores_csv,
              "froc_lecture": None, "froc_camelyon16": None}
    annotated = names and all(records[n]["num_tumors"] is not None for n in names)
    if annotated and any(records[n]["num_tumors"] for n in names):
        from keras_medseg.predict.slides import froc_from_predictions

        if any(not records[n]["num_tumors"] for n in names):  # the lecture's protocol needs a normal slide
            result["froc_lecture"] = froc_from_predictions([os.path.join(out_dir, n) for n in names])
        if all(records[n]["map_mpp"] is not None for n in names):
            try:
                result["froc_camelyon16"] = camelyon16_froc_from_predictions(
                    [os.path.join(out_dir, n) for n in names], box_size=froc_box_size)
            except ValueError:  # every lesion an isolated tumour cell at this resolution
                result["froc_camelyon16"] = None
    return result



def camelyon16_froc_from_predictions(directories, box_size=8, **kwargs):
    """CAMELYON16 lesion FROC over slide directories written by `predict_cohort` (`keras-medseg slide predict FOLDER`).

    Reads each directory's `heatmap.npy`, `tumor_mask.npy` (tumour slides),
    `summary.json` and `cohort_record.json` (microns per heatmap cell).

    Args:
        directories: the per-slide output directories.
        box_size: non-maximum-suppression box in heatmap cells, default 8.
        **kwargs: passed to `keras_medseg.evaluation.lesion_froc`.

    Returns:
        The `lesion_froc` dict.

    Raises:
        FileNotFoundError: a directory without those files (one written by a
            single-slide `slide predict`: predict the folder instead).
        ValueError: a slide without ground truth or without a resolution.
    """
    from keras_medseg.evaluation.lesion_froc import lesion_froc

    maps, masks, mpps = [], [], []
    for d in directories:
        d = os.fspath(d)
        files = {f: os.path.join(d, f) for f in ("heatmap.npy", "summary.json", "cohort_record.json")}
        for f, path in files.items():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{d!r} lacks {f}: the CAMELYON16 protocol reads directories written by "
                                        "`keras-medseg slide predict MODEL FOLDER` (predict_cohort).")
        with open(files["cohort_record.json"]) as fh:
            record = json.load(fh)
        if record.get("num_tumors") is None:
            raise ValueError(f"Slide {record.get('slide')!r} in {d!r} has no annotations: no ground truth for FROC.")
        if record.get("map_mpp") is None:
            raise ValueError(f"Slide {record.get('slide')!r} in {d!r} does not record its microns per pixel; the "
                             "CAMELYON16 protocol measures lesions in microns.")
        maps.append(np.load(files["heatmap.npy"]))
        masks.append(np.load(os.path.join(d, "tumor_mask.npy")) if record["num_tumors"] else None)
        mpps.append(record["map_mpp"])
    return lesion_froc(maps, masks, mpps, box_size=box_size, **kwargs)
