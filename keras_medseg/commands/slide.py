"""`keras-medseg slide predict MODEL SLIDE --out DIR`: probability heatmap and slide score of a whole slide.

    keras-medseg slide predict best.keras tumor_001.tif --out pred/tumor_001 --annotations tumor_001.xml
    keras-medseg evaluate --froc --predictions pred/*      # lesion-level FROC over the predicted slides
    keras-medseg slide predict best.keras cohort/ --out pred --workers 2   # a folder: every slide, scores.csv, FROC

Writes `heatmap.npy`, `heatmap.png` (overlay on the thumbnail),
`predictions.npz` and `summary.json` into DIR
(`keras_medseg.predict.slides.predict_slide_to_dir`). On a FOLDER of slides
(annotations `<slide>.xml` / `.geojson` beside them or in `--annotations DIR`)
every slide gets its own `DIR/<slide>/`, then `DIR/scores.csv` and, when every
slide is annotated, the lesion FROC under the lecture's and the CAMELYON16
protocol (`keras_medseg.predict.cohort.predict_cohort`; `--workers N` / `--scheduler`
run the slides as Dask tasks); exit code 1 when a slide failed.
"""

from keras_medseg.commands._options import report_failed_slides


def add_parser(subparsers):
    p = subparsers.add_parser("slide", help="Whole-slide inference: probability heatmap and slide score.")
    sub = p.add_subparsers(dest="slide_command", metavar="ACTION")
    pr = sub.add_parser("predict", help="Score a slide's tissue grid with a patch classifier.")
    pr.add_argument("model", help="a .keras patch classifier (loaded with safe_mode=True)")
    pr.add_argument("slide", help="slide: pyramidal TIFF/SVS/NDPI/MRXS or PNG/JPEG/TIFF; or a folder of slides")
    pr.add_argument("--out", required=True, help="output directory")
    pr.add_argument("--annotations", default=None,
                    help="tumour polygons (ASAP XML / GeoJSON) for FROC; an empty file marks a normal slide; "
                         "for a folder of slides, the folder of <slide>.xml/.geojson (default: beside the slides)")
    pr.add_argument("--workers", type=int, default=1,
                    help="folder of slides: Dask worker processes, one slide per task (default 1: in this process)")
    pr.add_argument("--scheduler", default=None, help="folder of slides: address of a running Dask scheduler")
    pr.add_argument("--level", type=int, default=0, help="pyramid level the patches are read at (default 0)")
    pr.add_argument("--size", type=int, default=None, help="patch side (default: the model's input size)")
    pr.add_argument("--inner-size", type=int, default=None, help="inner square side (default size/2)")
    pr.add_argument("--stride", type=int, default=None, help="grid step (default: the inner size)")
    pr.add_argument("--min-tissue", type=float, default=0.1,
                    help="skip patches with a smaller tissue fraction; 0 scores every patch (default 0.1)")
    pr.add_argument("--batch-size", type=int, default=32, help="patches per forward pass (default 32)")
    pr.add_argument("--rescale", type=float, default=1.0, help="multiply pixels by this first (default 1)")
    pr.add_argument("--thumbnail-size", type=int, default=1024, help="thumbnail long side (default 1024)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args):
    if args.slide_command != "predict":
        print("usage: keras-medseg slide predict MODEL SLIDE --out DIR (see keras-medseg slide --help)")
        return 2
    import os

    from keras_medseg.predict.slides import predict_slide_to_dir

    if os.path.isdir(args.slide):
        return _predict_cohort(args)
    result, paths = predict_slide_to_dir(
        args.model, args.slide, args.out, thumbnail_size=args.thumbnail_size, level=args.level, size=args.size,
        inner_size=args.inner_size, stride=args.stride, annotations=args.annotations,
        min_tissue=None if args.min_tissue == 0 else args.min_tissue, batch_size=args.batch_size,
        rescale=args.rescale, progress=not args.quiet)
    print(f"{result.slide_id}: slide score {result.slide_score:.4f} (max of {result.scores.size} patch "
          f"probabilities, heatmap {result.heatmap.shape[0]}x{result.heatmap.shape[1]})")
    for key in ("png", "heatmap", "predictions", "summary"):
        print(f"  {key:12s}{paths[key]}")
    return 0


def _predict_cohort(args):
    from keras_medseg.predict.cohort import predict_cohort

    res = predict_cohort(
        args.model, args.slide, args.out, annotations=args.annotations, workers=args.workers,
        scheduler=args.scheduler, progress=not args.quiet, thumbnail_size=args.thumbnail_size, level=args.level,
        size=args.size, inner_size=args.inner_size, stride=args.stride,
        min_tissue=None if args.min_tissue == 0 else args.min_tissue, batch_size=args.batch_size,
        rescale=args.rescale)
    print(f"{len(res['slides'])} slides predicted ({len(res['skipped'])} already done); scores: {res['scores_csv']}")
    for name, r in sorted(res["slides"].items()):
        print(f"  {name:24s} slide score {r['slide_score']:.4f}  {r['num_patches']} patches")
    if res["froc_lecture"] is not None:
        print(f"FROC (lecture protocol, patch level): {res['froc_lecture']['froc']:.4f}")
    if res["froc_camelyon16"] is not None:
        print(f"FROC (CAMELYON16 protocol, lesion level): {res['froc_camelyon16']['froc']:.4f} "
              f"({res['froc_camelyon16']['num_lesions']} lesions, {res['froc_camelyon16']['num_itc']} isolated "
              "tumour cells excluded)")
    return report_failed_slides(res["failed"])
