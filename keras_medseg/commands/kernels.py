"""`keras-medseg kernels CHECKPOINT --out DIR`: kernel clusters and spectral labels per layer.

The labels are `keras_medseg.kernels.identify_model`'s; the clusters `keras_medseg.kernels.cluster_kernels`'.
"""

import os


def add_parser(subparsers):
    p = subparsers.add_parser("kernels", help="Identify a model's convolution kernels (CSV table + plots).")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .keras model file")
    p.add_argument("--out", default="kernels", help="output directory")
    p.add_argument("--grid", type=int, default=8, help="grid size of the convolution operator per axis")
    p.add_argument("--tolerance", type=float, default=0.1, help="spectral tolerance (see kernels.identify)")
    p.add_argument("--clusters", type=int, default=8, help="k-means clusters per layer")
    p.add_argument("--max-cluster-kernels", type=int, default=5000,
                   help="kernels sampled per layer for k-means/PCA plots")
    return p


def run(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from keras_medseg import kernels
    from keras_medseg.utils.model_io import load_model

    model = load_model(args.checkpoint, compile=False)
    os.makedirs(args.out, exist_ok=True)
    layers = kernels.extract_kernels(model)
    if not layers:
        raise ValueError(f"CHECKPOINT {args.checkpoint!r} has no convolution kernels of size >= 2.")
    records = kernels.identify_model(model, grid_shape=args.grid, tolerance=args.tolerance, progress=True)
    if not records:
        raise ValueError(f"CHECKPOINT {args.checkpoint!r} has no odd square kernels (3x3, 5x5, ...) to identify.")
    identified = {r["layer"] for r in records}
    rng = np.random.default_rng(0)
    for lk in layers:
        stack = lk.kernels
        if lk.layer not in identified or len(stack) < 2:
            continue
        if len(stack) > args.max_cluster_kernels:
            stack = stack[rng.choice(len(stack), args.max_cluster_kernels, replace=False)]
        res = kernels.cluster_kernels(stack, n_clusters=args.clusters, title=lk.layer)
        res.figure.savefig(os.path.join(args.out, f"clusters_{lk.layer}.png"), dpi=100, bbox_inches="tight")
        plt.close(res.figure)
    csv_path = kernels.write_csv(records, os.path.join(args.out, "kernels.csv"))
    ax = kernels.plot_label_counts(records)
    ax.figure.savefig(os.path.join(args.out, "labels.png"), dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"{len(records)} layers, {sum(r['n_kernels'] for r in records)} kernels -> {csv_path}, "
          f"{os.path.join(args.out, 'labels.png')} and clusters_<layer>.png")
    return 0
