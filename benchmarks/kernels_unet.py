"""Identification of kernels of the UNet trained by lse_lsn_unet.py (issue 7, item 4).

    python benchmarks/lse_lsn_unet.py                 # first: trains and saves results/lse_lsn_unet/unet.keras
    python benchmarks/kernels_unet.py                 # --preset cpu (well under a minute)
    python benchmarks/kernels_unet.py --model-path other_unet.keras

For every convolution layer of the saved fold-0 UNet with 3x3 kernels
(encoder, bottleneck and decoder; the 2x2 transposed convolutions and the
1x1 head are skipped), each (input channel, output channel) kernel is

* entrywise: flattened to R^9, normalised to unit length, clustered with
  k-means and projected on the first two principal axes together with the
  reference kernels (finite differences, Laplacian, identity, Gaussian blur,
  local mean, sharpen, Sobel; `keras_medseg.kernels.cluster_kernels`), and
* spectrally: labelled with the reference family whose singular values of
  the periodic convolution operator are nearest, or "indeterminate" when
  some singular value is more than 10% of the largest off
  (`keras_medseg.kernels.identify_model`).

J. Actor's lecture showed these clusters for convolution layer 11 (encoder) and 14
(decoder) of a liver UNet (LiTS 2017) and the spectral labels per layer as
figures only (no numbers survive in its text), so this script reports the
counts and leaves the comparison qualitative.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import RESULTS_DIR, benchmark_main, markdown_table  # noqa: E402

NAME = "kernels_unet"

PRESETS = {
    "smoke": {"n_clusters": 3, "grid_shape": [8, 8], "tolerance": 0.1, "seed": 0, "max_plot_layers": 8},
    "cpu": {"n_clusters": 6, "grid_shape": [8, 8], "tolerance": 0.1, "seed": 0, "max_plot_layers": 16},
    "paper": {"n_clusters": 8, "grid_shape": [16, 16], "tolerance": 0.1, "seed": 0, "max_plot_layers": 16},
}

INDETERMINATE = "indeterminate"
_FIXED = ("layer", "layer_type", "kernel_size", "n_kernels", "median_deviation")


def default_model_path(preset=None):
    """Where `benchmarks/lse_lsn_unet.py` saves its fold-0 UNet with the default output directory.

    The same for every preset: a smoke run of lse_lsn_unet into the default directory overwrites it, so
    smoke runs (tests, run_all's CI check) should pass `model_path` explicitly.
    """
    return os.path.join(RESULTS_DIR, "lse_lsn_unet", "unet.keras")


def _resolve(preset, out_dir, model_path):
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    model_path = model_path or default_model_path(preset)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(
            f"No trained UNet at model_path={model_path!r}: run benchmarks/lse_lsn_unet.py first "
            f"(it saves results/lse_lsn_unet/unet.keras)."
        )
    out_dir = out_dir or os.path.join(RESULTS_DIR, NAME)
    os.makedirs(out_dir, exist_ok=True)
    return dict(PRESETS[preset]), out_dir, model_path


def label_fractions(records):
    """`(labels, fractions (layers, labels))` from `identify_model` records; labels in record order."""
    labels = []
    for rec in records:
        labels += [k for k in rec if k not in _FIXED and k not in labels]
    frac = np.array([[rec.get(lab, 0) / max(rec["n_kernels"], 1) for lab in labels] for rec in records])
    return labels, frac


def run(preset="cpu", out_dir=None, progress=True, model_path=None):
    """Cluster and spectrally label the 3x3 kernels of a trained UNet; returns a JSON-serialisable dict."""
    s, out_dir, model_path = _resolve(preset, out_dir, model_path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import keras_medseg  # noqa: F401  (registers the layers)
    import keras_medseg.metrics  # noqa: F401  (MeanDice, compiled into saved zoo UNets; not imported by keras_medseg)
    from keras_medseg import kernels as kn

    start = time.perf_counter()
    keras.utils.set_random_seed(s["seed"])
    model = keras.saving.load_model(model_path)
    layers = [lk for lk in kn.extract_kernels(model) if tuple(lk.kernel_size) == (3, 3) and len(lk.kernels) >= 2]
    if not layers:
        raise ValueError(f"The model at {model_path!r} has no convolution layers with 3x3 kernels.")

    # entrywise: k-means + PCA per layer, one grid figure
    # plotted: the second convolution of every level (encoder, bottleneck, decoder), to keep the PNG small
    plot_layers = [lk for lk in layers if lk.layer.endswith("conv2")] or layers
    plot_layers = plot_layers[: s["max_plot_layers"]]
    plot_names = [lk.layer for lk in plot_layers]
    ncol = min(4, len(plot_layers))
    nrow = int(np.ceil(len(plot_layers) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.7 * nrow), squeeze=False)
    clusters = []
    iterator = layers
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(layers, desc="cluster kernels", unit="layer")
    for lk in iterator:
        i = plot_names.index(lk.layer) if lk.layer in plot_names else None
        ax = axes.flat[i] if i is not None else None
        res = kn.cluster_kernels(lk, n_clusters=s["n_clusters"], seed=s["seed"], plot=ax is not None, ax=ax,
                                 title=lk.layer)
        if ax is not None:
            ax.collections[0].set_sizes([2])
            ax.collections[0].set_linewidths(0)
            ax.title.set_fontsize(8)
            for t in ax.texts:
                t.set_fontsize(5)
        sizes = np.bincount(res.labels, minlength=len(res.centers))
        clusters.append({
            "layer": lk.layer, "n_kernels": int(len(lk.kernels)),
            "cluster_sizes": [int(v) for v in sizes],
            "nearest_reference": [str(n) for n in res.nearest_reference],
            "explained_variance_ratio": [float(v) for v in res.explained_variance_ratio],
        })
    for ax in list(axes.flat)[len(plot_layers):]:
        ax.axis("off")
    fig.suptitle("k-means clusters of normalised 3x3 kernels, PCA plane; stars: reference kernels", fontsize=10)
    fig.tight_layout()
    figures = ["clusters.png"]
    fig.savefig(os.path.join(out_dir, figures[0]), dpi=100)
    plt.close(fig)

    # spectral labels per layer
    records = [r for r in kn.identify_model(model, grid_shape=tuple(s["grid_shape"]), tolerance=s["tolerance"],
                                            progress=progress) if r["kernel_size"] == "3x3"]
    csv_path = "kernel_labels.csv"
    kn.write_csv(records, os.path.join(out_dir, csv_path))
    ax = kn.plot_label_counts(records)
    ax.set_title("spectral labels of the 3x3 kernels per layer")
    ax.figure.tight_layout()
    figures.append("label_counts.png")
    ax.figure.savefig(os.path.join(out_dir, figures[1]), dpi=100)
    plt.close(ax.figure)

    labels, frac = label_fractions(records)
    counts = {lab: int(sum(r.get(lab, 0) for r in records)) for lab in labels}
    total = int(sum(r["n_kernels"] for r in records))
    nearest_counts = {}
    for c in clusters:
        for name, size in zip(c["nearest_reference"], c["cluster_sizes"]):
            nearest_counts[name] = nearest_counts.get(name, 0) + size
    return {
        "preset": preset, "settings": s, "seconds": time.perf_counter() - start, "figures": figures,
        "model_path": os.path.relpath(os.path.abspath(model_path), os.path.dirname(os.path.abspath(out_dir))),
        "csv": csv_path,
        "layers": [r["layer"] for r in records], "labels": labels, "plotted_layers": plot_names,
        "fractions": [[float(v) for v in row] for row in frac],
        "records": [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()}
                    for r in records],
        "label_counts": counts, "n_kernels": total,
        "indeterminate_share": counts.get(INDETERMINATE, 0) / max(total, 1),
        "clusters": clusters, "cluster_nearest_reference_counts": nearest_counts,
    }


def headline(result):
    """One line for the top of RESULTS.md and the README, computed from `result`."""
    counts = {k: v for k, v in result["label_counts"].items() if k != INDETERMINATE}
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:2]
    named = ", ".join(f"{k} {100 * v / max(result['n_kernels'], 1):.1f}%" for k, v in top if v)
    return (f"{100 * result['indeterminate_share']:.1f}% of the UNet's {result['n_kernels']} 3x3 kernels match no "
            f"reference spectrum" + (f"; most common labels: {named}." if named else "."))


def markdown(result, fig_prefix=""):
    """Section body for RESULTS.md: layer x label fractions, indeterminate share, most common references."""
    labels = result["labels"]
    short = [lab.replace("_", " ") for lab in labels]
    rows = [[layer] + [round(v, 2) for v in row] for layer, row in zip(result["layers"], result["fractions"])]
    total = result["n_kernels"]
    rows.append(["all layers"] + [round(result["label_counts"][lab] / max(total, 1), 2) for lab in labels])
    named = {k: v for k, v in result["label_counts"].items() if k != INDETERMINATE and v > 0}
    top = sorted(named.items(), key=lambda kv: -kv[1])[:3]
    top_txt = ", ".join(f"{k} ({v} kernels, {v / max(total, 1):.1%})" for k, v in top) or "none"
    near = sorted(result["cluster_nearest_reference_counts"].items(), key=lambda kv: -kv[1])[:3]
    near_txt = ", ".join(f"{k} ({v} kernels)" for k, v in near)
    ind = result["indeterminate_share"]
    per_layer_ind = [row[labels.index(INDETERMINATE)] for row in result["fractions"]] if INDETERMINATE in labels else []
    most = result["layers"][int(np.argmin(per_layer_ind))] if per_layer_ind else "-"
    s = result["settings"]
    verdict = ("most learned kernels are not close, spectrally, to any classical stencil" if ind > 0.5
               else "most learned kernels act like a classical stencil")
    text = [
        f"The {total} 3x3 kernels of the {len(result['layers'])} convolution layers of the fold-0 UNet trained by "
        f"`lse_lsn_unet` (`{os.path.basename(result['model_path'])}`), each labelled with the reference family of "
        f"nearest singular-value spectrum on a {s['grid_shape'][0]}x{s['grid_shape'][1]} periodic grid, "
        f"\"indeterminate\" when a singular value is off by more than {s['tolerance']:.0%} of the largest; and "
        f"clustered entrywise (k-means, {s['n_clusters']} clusters, PCA plane). All kernels: "
        f"`{result['csv']}`. Preset `{result['preset']}`, {result['seconds']:.0f} s.",
        "",
        "### Fraction of kernels per spectral label and layer",
        "",
        markdown_table(["layer"] + short, rows),
        "",
        f"Cluster plots (second convolution of each level): {', '.join(result['plotted_layers'])}.",
        "",
        f"![k-means clusters and PCA projection of the kernels, with the reference kernels]"
        f"({fig_prefix}{result['figures'][0]})",
        "",
        f"![Spectral labels per layer]({fig_prefix}{result['figures'][1]})",
        "",
        "### What this shows",
        "",
        f"{ind:.1%} of the kernels are indeterminate ({'most' if ind > 0.5 else 'a minority'} of them): "
        f"{verdict}; "
        f"the layer with the largest identified share is `{most}`. "
        f"Most common identified families: {top_txt}. "
        f"Entrywise, the k-means cluster centres lie nearest to {near_txt} (kernels per cluster summed). "
        "Spectra ignore shifts, reflections and sign, so a family (e.g. one-sided difference) covers forward and "
        "backward differences along either axis; a label says the kernel acts like that stencil up to those "
        "symmetries, not that it equals it. The lecture gives its per-layer labels only as a figure, so the "
        "comparison with it is qualitative: the same analysis, on white matter instead of liver.",
    ]
    return "\n".join(text)


def main(argv=None):
    return benchmark_main(sys.modules[__name__], argv, extra_arguments=[(("--model-path",), dict(
        default=None, help="trained UNet (.keras); default results/lse_lsn_unet/unet.keras"))])


if __name__ == "__main__":
    sys.exit(main())
