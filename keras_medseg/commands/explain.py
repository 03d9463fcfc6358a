"""`keras-medseg explain CHECKPOINT IMAGE --method gradcam --class N --out map.png`."""

import os

import numpy as np

METHODS = ("saliency", "smoothgrad", "gradcam", "occlusion", "lime")


def load_checkpoint(path):
    """Load a `.keras` checkpoint with `safe_mode=True` (`keras_medseg.utils.model_io.load_model`, not compiled)."""
    from keras_medseg.utils.model_io import load_model

    return load_model(path, compile=False)


def load_image(path):
    """Read one image/volume (`keras_medseg.data.io.read_array`): .npy, .npz, NIfTI, PNG/JPEG/TIFF."""
    from keras_medseg.data.io import read_array

    return read_array(path, "IMAGE file")


def prepare_input(image, model):
    """Add batch/channel axes and resize to the model's input grid when that is fixed."""
    from skimage.transform import resize

    shape = tuple(model.inputs[0].shape[1:])
    spatial, channels = shape[:-1], shape[-1]
    img = np.asarray(image, dtype="float32")
    if img.ndim == len(spatial):
        img = img[..., None]
    if img.ndim != len(spatial) + 1:
        raise ValueError(
            f"IMAGE must have {len(spatial)} spatial axes (and optionally channels) for this model "
            f"(input {shape}). Received an array of shape {image.shape}."
        )
    if channels is not None and img.shape[-1] != channels:
        if img.shape[-1] in (3, 4) and channels == 1:
            img = img[..., :3].mean(axis=-1, keepdims=True)
        elif img.shape[-1] == 1:
            img = np.repeat(img, channels, axis=-1)
        else:
            raise ValueError(f"IMAGE has {img.shape[-1]} channels, the model expects {channels}.")
    target = tuple(s if s is not None else img.shape[i] for i, s in enumerate(spatial))
    if img.shape[:-1] != target:
        img = resize(img, target + (img.shape[-1],), order=1, preserve_range=True).astype("float32")
    return img[None]


def add_parser(subparsers):
    p = subparsers.add_parser("explain", help="Explain a model's prediction on one image (heat map PNG).")
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
    import keras

    from keras_medseg import explain

    model = load_checkpoint(args.checkpoint)
    x = prepare_input(load_image(args.image), model)
    class_index = args.class_index
    if class_index is None:
        y = keras.ops.convert_to_numpy(model(x, training=False))
        y = y.reshape(-1, y.shape[-1]).sum(axis=0) if y.ndim > 2 else y[0]
        class_index = int(np.argmax(y))
    if args.method == "saliency":
        heat = explain.saliency(model, x, class_index)
    elif args.method == "smoothgrad":
        heat = explain.smoothgrad(model, x, class_index, samples=args.samples)
    elif args.method == "gradcam":
        heat = explain.gradcam(model, x, class_index, layer=args.layer)
    elif args.method == "occlusion":
        heat = explain.occlusion(model, x, class_index, patch=args.patch, stride=args.stride, progress=True)
    else:
        heat = explain.lime(model, x, class_index, samples=max(args.samples, 2), progress=True).maps
    ax = explain.overlay(x[0], heat[0], axis=args.axis, index=args.index, colorbar=True,
                         title=f"{args.method}, class {class_index}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    ax.figure.savefig(args.out, dpi=120, bbox_inches="tight")
    npy = os.path.splitext(args.out)[0] + ".npy"
    np.save(npy, heat[0])
    print(f"{args.method} map for class {class_index} written to {args.out} (array: {npy})")
    return 0
