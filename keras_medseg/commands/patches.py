"""`keras-medseg patches`: build and inspect HDF5 patch stores of whole-slide images.

    keras-medseg patches extract SLIDE.tif [MASK.png] --out patches.h5 --size 512 --slide-id s01
    keras-medseg patches info patches.h5 [--json]

`extract` appends to an existing store (same patch size) or creates it; the
mask is optional (no mask = a normal slide, all patches negative). Images are
read with `keras_medseg.data.io.read_array` (scikit-image), so PNG, JPEG and TIFF work.
"""

import json
import os


def add_parser(subparsers):
    p = subparsers.add_parser("patches", help="Extract whole-slide-image patches into an HDF5 store; show a store.")
    sub = p.add_subparsers(dest="patches_command", metavar="ACTION")
    ex = sub.add_parser("extract", help="Cut a slide (and its annotation mask) into labelled patches.")
    ex.add_argument("image", help="slide image (PNG/JPEG/TIFF, RGB or grey)")
    ex.add_argument("mask", nargs="?", default=None,
                    help="annotation mask, same height/width (non-zero = tumour); omit for a normal slide")
    ex.add_argument("--out", required=True, help="HDF5 patch store to create or append to")
    ex.add_argument("--size", type=int, default=512, help="patch side in pixels (default 512)")
    ex.add_argument("--inner-size", type=int, default=None,
                    help="side of the inner square that decides the label (default size/2)")
    ex.add_argument("--stride", type=int, default=None, help="grid step (default: the inner size)")
    ex.add_argument("--slide-id", default=None, help="slide name stored with every patch (default: image file name)")
    ex.add_argument("--min-tissue", type=float, default=0.0,
                    help="drop negative patches with a smaller tissue fraction (default 0: keep all)")
    ex.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                    help="compression of a new store (default gzip)")
    info = sub.add_parser("info", help="Summarise a patch store.")
    info.add_argument("file", help="HDF5 patch store")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _mask_from_image(mask):
    import numpy as np

    if mask.ndim == 3:  # an RGB(A) drawing: any non-black pixel is tumour
        return mask[..., :3].max(axis=-1) > 0
    if mask.dtype == bool or np.isin(mask, (0, 1)).all():
        return mask.astype(bool)
    if np.issubdtype(mask.dtype, np.integer) and np.unique(mask).size <= 2:
        return mask > 0  # a binary 0/255 mask
    return mask  # an integer label map: one id per tumour


def _extract(args):
    from keras_medseg.data.io import read_array
    from keras_medseg.data.wsi import PatchStore

    image = read_array(args.image, "image file")
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]  # drop alpha
    mask = _mask_from_image(read_array(args.mask, "mask file")) if args.mask else None
    slide_id = args.slide_id or os.path.splitext(os.path.basename(args.image))[0]
    compression = None if args.compression == "none" else args.compression
    channels = 1 if image.ndim == 2 else image.shape[-1]
    with PatchStore(args.out, "a", patch_size=args.size, channels=channels, dtype=str(image.dtype),
                    compression=compression) as store:
        before = len(store)
        added = store.add_slide(image, mask, slide_id, size=args.size, stride=args.stride,
                                inner_size=args.inner_size, min_tissue=args.min_tissue)
        labels = store.labels[before:]
        total = len(store)
    print(f"{args.out}: added {added} patches of slide {slide_id!r} "
          f"({int(labels.sum())} positive); the store now holds {total} patches")
    return 0


def _info(args):
    from keras_medseg.data.wsi import PatchStore

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
    print("usage: keras-medseg patches {extract,info} ... (see keras-medseg patches --help)")
    return 2
