"""`keras-medseg explain CHECKPOINT IMAGE --method gradcam --class N --out map.png`."""

import os

# Kept equal to `keras_medseg.explain.image.METHODS` (tested); spelled out here so that `--help` needs no backend.
METHODS = ("saliency", "smoothgrad", "gradcam", "occlusion", "lime")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "explain", help="Explain a model's prediction on one image (heat map PNG).",
        description="The image is normalised with the intensity preset stored with the model (the one training "
                    "used and predict repeats); a model saved without one sees the image as given.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .keras model file")
    p.add_argument("image", metavar="IMAGE", help=".npy/.npz array, PNG/JPEG/TIFF image or NIfTI volume")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--class", dest="class_index", type=int, default=None,
                   help="class index to explain (default: the predicted class)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer name (default: the last convolution)")
    p.add_argument("--samples", type=int, default=32, help="SmoothGrad / LIME samples")
    p.add_argument("--patch", type=int, default=16, help="occlusion patch size")
    p.add_argument("--stride", type=int, default=None, help="occlusion stride (default: patch)")
    p.add_argument("--axis", type=int, default=0, help="slice axis for 3D volumes")
    p.add_argument("--index", type=int, default=None, help="slice index for 3D volumes (default: middle)")
    p.add_argument("--out", default="map.png", help="output PNG (the raw map goes next to it as .npy)")
    return p


def run(args):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from keras_medseg.explain import overlay
    from keras_medseg.explain.image import explain_file

    result = explain_file(args.checkpoint, args.image, method=args.method, class_index=args.class_index,
                          layer=args.layer, samples=args.samples, patch=args.patch, stride=args.stride)
    ax = overlay(result.x[0], result.heat, axis=args.axis, index=args.index, colorbar=True,
                 title=f"{args.method}, {result.label}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    ax.figure.savefig(args.out, dpi=120, bbox_inches="tight")
    npy = os.path.splitext(args.out)[0] + ".npy"
    np.save(npy, result.heat)
    print(f"{args.method} map for {result.label} written to {args.out} (array: {npy}); "
          f"input intensity: {result.normalisation}")
    return 0
