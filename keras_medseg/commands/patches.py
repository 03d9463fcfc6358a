"""`keras-medseg patches`: build, merge and inspect HDF5 patch stores of whole-slide images.

    keras-medseg patches extract SLIDE.tif --annotations SLIDE.xml --level 0 --size 512 --inner-size 128 \
        --out store.h5 --workers 2
    keras-medseg patches extract SLIDES_DIR --out cohort.h5 --mpp 0.5 --workers 8   # a cohort, on Dask
    keras-medseg patches extract SLIDES_DIR --out cohort.h5 --scheduler tcp://head:8786   # on a Dask cluster
    keras-medseg patches extract IMAGE.png MASK.png --out patches.h5 --size 512   # small image + mask array
    keras-medseg patches merge all.h5 a.h5 b.h5
    keras-medseg patches info patches.h5 [--json]

`extract` appends to an existing store (same patch size) or creates it.
Without a MASK image the slide is streamed tile by tile
(`keras_medseg.data.slides.extract_slide`): tissue grid from a thumbnail,
polygon annotations (ASAP XML / GeoJSON; none = a normal slide), several
worker processes, a progress bar, and resumable after an interruption. With
a FOLDER of slides (a cohort) every slide is a Dask task writing its own shard
(`keras_medseg.data.slides.cohort.extract_cohort`): a local cluster of `--workers`
processes, or the cluster of `--scheduler`; a bar over slides; a rerun does only the
unfinished slides; a slide that cannot be read is named in the summary and the exit
code is 1. With a MASK image (same height/width, non-zero = tumour, read by the one mask rule of
`keras_medseg.data.cases`: an RGB drawing's colours are tumours alike) the image is read whole
(`PatchStore.add_slide`), for small images.
"""

import json
import os

from keras_medseg.commands._options import report_failed_slides


def add_parser(subparsers):
    p = subparsers.add_parser("patches", help="Extract whole-slide-image patches into an HDF5 store; show a store.")
    sub = p.add_subparsers(dest="patches_command", metavar="ACTION")
    ex = sub.add_parser("extract", help="Cut a slide (and its annotation mask) into labelled patches.")
    ex.add_argument("image", help="slide: pyramidal TIFF/SVS/NDPI/MRXS (read tile by tile) or PNG/JPEG/TIFF; or a "
                                  "folder of slides (a cohort, extracted on Dask)")
    ex.add_argument("mask", nargs="?", default=None,
                    help="optional annotation mask image, same height/width (non-zero = tumour): reads the image "
                         "whole; use --annotations for polygons instead")
    ex.add_argument("--out", required=True, help="HDF5 patch store to create or append to")
    ex.add_argument("--size", type=int, default=512, help="patch side in pixels (default 512)")
    ex.add_argument("--inner-size", type=int, default=None,
                    help="side of the inner square that decides the label (default size/2)")
    ex.add_argument("--stride", type=int, default=None, help="grid step (default: the inner size)")
    ex.add_argument("--slide-id", default=None, help="slide name stored with every patch (default: image file name)")
    ex.add_argument("--min-tissue", type=float, default=None,
                    help="drop negative patches with a smaller tissue fraction; 0 keeps every patch "
                         "(default: 0.1 when streaming a slide, 0 with a MASK image)")
    ex.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                    help="compression of a new store (default gzip)")
    ex.add_argument("--annotations", default=None,
                    help="tumour polygons: ASAP/Camelyon XML or GeoJSON (QuPath), level-0 pixels; for a folder of "
                         "slides, the folder of <slide>.xml/.geojson files (default: beside the slides)")
    ex.add_argument("--level", type=int, default=0, help="pyramid level the patches are cut at (default 0)")
    ex.add_argument("--mpp", type=float, default=None,
                    help="cut at the level nearest to this many microns per pixel (e.g. 0.5 ~ 20x) instead of --level")
    ex.add_argument("--workers", type=int, default=None,
                    help="processes: readers of one slide (default 1), or Dask workers of a cohort (default: CPUs)")
    ex.add_argument("--scheduler", default=None,
                    help="cohort: address of a running Dask scheduler (tcp://host:8786) instead of a local cluster")
    ex.add_argument("--tissue-threshold", default="otsu",
                    help="'otsu' (default) or a saturation threshold in [0, 1] for the tissue mask")
    ex.add_argument("--thumbnail-size", type=int, default=1024,
                    help="long side of the thumbnail used for tissue detection (default 1024)")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    mg = sub.add_parser("merge", help="Merge patch stores (e.g. one per slide) into one.")
    mg.add_argument("out", help="the merged HDF5 store (created)")
    mg.add_argument("sources", nargs="+", help="the stores to merge")
    mg.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                    help="compression of the merged store (default gzip)")
    mg.add_argument("--quiet", action="store_true", help="no progress bar")
    info = sub.add_parser("info", help="Summarise a patch store.")
    info.add_argument("file", help="HDF5 patch store")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _extract_mask(args):
    from keras_medseg.data.cases import mask_ids, standardize_labels
    from keras_medseg.data.scans.io import read_array
    from keras_medseg.data.slides import PatchStore

    image = read_array(args.image, "image file")
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]  # drop alpha
    # The one mask rule: an RGB(A) drawing becomes one id per colour, a 0/255 editor mask 0/1 (then split into
    # connected tumours by the store), any other ids one tumour each; no limit on the number of tumours.
    name = repr(args.mask)
    mask, _ = standardize_labels(mask_ids(read_array(args.mask, "mask file"), 2, name=name), names=name,
                                 max_classes=None)
    slide_id = args.slide_id or os.path.splitext(os.path.basename(args.image))[0]
    compression = None if args.compression == "none" else args.compression
    channels = 1 if image.ndim == 2 else image.shape[-1]
    with PatchStore(args.out, "a", patch_size=args.size, channels=channels, dtype=str(image.dtype),
                    compression=compression) as store:
        before = len(store)
        added = store.add_slide(image, mask, slide_id, size=args.size, stride=args.stride,
                                inner_size=args.inner_size, min_tissue=args.min_tissue or 0.0,
                                progress=not args.quiet)
        positive = int(store.labels[before:].sum())
        total = len(store)
    print(f"{args.out}: added {added} patches of slide {slide_id!r} "
          f"({positive} positive); the store now holds {total} patches")
    return 0


def _extract_cohort(args, source, min_tissue, threshold):
    from keras_medseg.data.slides.cohort import extract_cohort

    res = extract_cohort(source.path, args.out, annotations=args.annotations, level=args.level, mpp=args.mpp,
                         size=args.size, inner_size=args.inner_size, stride=args.stride, min_tissue=min_tissue,
                         tissue_threshold=threshold, thumbnail_size=args.thumbnail_size,
                         compression=None if args.compression == "none" else args.compression, workers=args.workers,
                         scheduler=args.scheduler, progress=not args.quiet)
    print(f"{args.out}: {res['num_patches']} patches from {res['num_slides']} slides ({len(res['done'])} extracted "
          f"now, {len(res['skipped'])} already done; shards in {res['shards']})")
    for sid in res["done"]:
        rec = res["slides"][sid]
        where = f"level {rec['level']}" + (f" ({rec['mpp'][0]:.3g} um/px)" if rec.get("mpp") else "")
        print(f"  {sid:24s} {rec['patches']:8d} patches {rec['positive']:6d} positive  {where}")
    return report_failed_slides(res["failed"], "the others are in the store; rerun to retry only these")


def _extract(args):
    if args.mask:
        return _extract_mask(args)
    from keras_medseg.data.slides import PatchStore, extract_slide
    from keras_medseg.data.sources import CohortFolderSource, resolve_source

    min_tissue = 0.1 if args.min_tissue is None else (None if args.min_tissue == 0 else args.min_tissue)
    threshold = args.tissue_threshold if args.tissue_threshold == "otsu" else float(args.tissue_threshold)
    if os.path.isdir(args.image):
        source = resolve_source(args.image)
        if not isinstance(source, CohortFolderSource):
            raise ValueError(f"`image` folder {args.image!r} holds no whole-slide files (.tif, .svs, .ndpi, .mrxs, "
                             f"...). Received: image={args.image!r}")
        return _extract_cohort(args, source, min_tissue, threshold)
    if args.scheduler:
        raise ValueError(f"`--scheduler` needs a folder of slides (a cohort). Received: image={args.image!r}")
    res = extract_slide(args.image, args.out, annotations=args.annotations, level=args.level, mpp=args.mpp,
                        size=args.size, inner_size=args.inner_size, stride=args.stride, slide_id=args.slide_id,
                        min_tissue=min_tissue, tissue_threshold=threshold, workers=args.workers or 1,
                        compression=None if args.compression == "none" else args.compression,
                        progress=not args.quiet, thumbnail_size=args.thumbnail_size)
    with PatchStore(args.out) as store:
        total = len(store)
    where = f"level {res['level']}" + (f" ({res['mpp'][0]:.3g} um/px)" if res["mpp"] else "")
    print(f"{args.out}: added {res['added']} patches of slide {res['slide_id']!r} at {where} "
          f"({res['skipped']} already there, {res['positive']} positive on the grid); "
          f"the store now holds {total} patches")
    return 0


def _merge(args):
    from keras_medseg.data.slides import merge_stores

    n = merge_stores(args.sources, args.out, compression=None if args.compression == "none" else args.compression,
                     progress=not args.quiet)
    print(f"{args.out}: {n} patches from {len(args.sources)} stores")
    return 0


def _info(args):
    from keras_medseg.data.slides import PatchStore

    with PatchStore(args.file) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}: {info['num_patches']} patches ({info['num_positive']} positive) "
          f"from {info['num_slides']} slides")
    print(f"patch size {info['patch_size']}x{info['patch_size']}x{info['channels']} {info['dtype']}, "
          f"compression {info['compression']}, {info['file_bytes'] / 1e6:.1f} MB")
    for name, s in info["slides"].items():
        print(f"  {name:24s} {s['patches']:8d} patches {s['positive']:8d} positive {s['tumors']:4d} tumours")
    return 0


def run(args):
    if args.patches_command == "extract":
        return _extract(args)
    if args.patches_command == "info":
        return _info(args)
    if args.patches_command == "merge":
        return _merge(args)
    print("usage: keras-medseg patches {extract,merge,info} ... (see keras-medseg patches --help)")
    return 2
