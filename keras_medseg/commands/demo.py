"""`keras-medseg demo`: IMEXnet vs ResNet on Q-tips, side by side.

Trains `imexnet` and `resnet_seg` (the same network with explicit instead of
implicit steps) with `keras_medseg.training.demo.qtips_demo` (1024 Q-tips
images of 48 x 48 px, 10 epochs, settings in that module's docstring), prints
the per-class IoU/Dice table of both models side by side, their times and one
sentence comparing the result with the README headline, and writes the plots
(`predictions.png`: image, ground truth, both predictions, colour key;
`history.png`: training curves) and both models into `--out`.

`--fast` (or the environment variable `KERAS_MEDSEG_FAST=1`) runs a tiny
version for tests.
"""

import os


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="Train imexnet and resnet_seg on Q-tips; print the IoU table side by side.")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="output folder (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="tiny sizes (seconds; for tests)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs (default 10)")
    p.add_argument("--n-train", type=int, default=None, help="override the number of training images (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args):
    from keras_medseg.metrics import format_table
    from keras_medseg.training.demo import qtips_demo

    fast = args.fast or os.environ.get("KERAS_MEDSEG_FAST", "") == "1"
    result = qtips_demo(out_dir=args.out, seed=args.seed, fast=fast, epochs=args.epochs, n_train=args.n_train,
                        verbose=0 if args.quiet else 1,
                        on_model=lambda name, kwargs: print(f"\n== {name} {kwargs} =="))
    nets = result["nets"]
    data = result["settings"]["data"]
    print(f"\nQ-tips: {data['n_train']} training and {data['n_val']} validation images of "
          f"{data['size']}x{data['size']} px; validation IoU/Dice per class:")
    print(format_table({n: r["table"] for n, r in nets.items()}, class_names=result["class_names"]))
    print("\n" + "  ".join(f"{n}: {r['params']} parameters, {r['seconds']:.0f} s ({r['cpu_seconds']:.0f} CPU s)"
                           for n, r in nets.items()))
    print(f"\nplots       {'  '.join(result['plots'])}")
    print(f"checkpoints {'  '.join(r['checkpoint'] for r in nets.values())}")
    print(f"\n{result['sentence']}")
    return 0
