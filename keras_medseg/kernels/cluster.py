"""Entrywise kernel analysis: k-means clusters and a PCA plane with the references."""

import dataclasses

import numpy as np

from keras_medseg.kernels.reference import reference_kernels
from keras_medseg.utils.validation import check_positive_int


@dataclasses.dataclass
class KernelClusters:
    """Result of `cluster_kernels`.

    Attributes:
        labels: int `(M,)` k-means cluster of each kernel.
        centers: `(n_clusters, *k)` cluster centres (in the normalised space).
        points: `(M, 2)` kernels projected on the first two principal axes.
        reference_points: dict name -> `(2,)`, the references in that plane.
        explained_variance_ratio: `(2,)` of the PCA.
        nearest_reference: list, for each cluster centre the closest
            reference name (Euclidean, normalised space).
        figure: the matplotlib figure (None with `plot=False`).
    """

    labels: np.ndarray
    centers: np.ndarray
    points: np.ndarray
    reference_points: dict
    explained_variance_ratio: np.ndarray
    nearest_reference: list
    figure: object = None


def _unit(v):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def cluster_kernels(kernels, n_clusters=8, references=None, normalize=True, seed=0, plot=True, ax=None,
                    title=None):
    """k-means on flattened kernels, PCA to 2D, references projected into the same plane.

    Args:
        kernels: `(M, *k)` array or a `LayerKernels` from `extract_kernels`.
        n_clusters: int, k-means clusters (capped at M). Defaults to 8.
        references: dict name -> kernel; default `reference_kernels(k, d)`
            when the kernels are odd and square, else none.
        normalize: bool, divide every flattened kernel (and reference) by its
            L2 norm so that shape, not scale, is compared. Defaults to True.
        seed: int, k-means and PCA seed. Defaults to 0.
        plot: bool, draw the PCA scatter. Defaults to True.
        ax: matplotlib Axes to draw into.
        title: plot title (default: the layer name if known).

    Returns:
        `KernelClusters`.

    Raises:
        ValueError: fewer than 2 kernels, or kernels not `(M, k, k[, k])`.

    Example:

    >>> layer = keras_medseg.kernels.extract_kernels(model)[0]
    >>> res = keras_medseg.kernels.cluster_kernels(layer, n_clusters=4)
    >>> res.figure.savefig("clusters.png")

    Reference:
        J. Actor, "Identification of Kernels in a Convolutional Neural Network"
        (entrywise comparison: flatten, k-means, PCA).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if hasattr(kernels, "kernels"):
        title = title or kernels.layer
        kernels = kernels.kernels
    kernels = np.asarray(kernels, dtype="float64")
    if kernels.ndim not in (3, 4) or kernels.shape[0] < 2:
        raise ValueError(
            f"`kernels` must be a stack of at least 2 kernels (M, k, k) or (M, k, k, k). "
            f"Received: kernels.shape={kernels.shape}"
        )
    n_clusters = min(check_positive_int(n_clusters, "n_clusters"), len(kernels))
    k = kernels.shape[1:]
    if references is None:
        references = (reference_kernels(k[0], spatial_dims=len(k))
                      if len(set(k)) == 1 and k[0] % 2 == 1 and k[0] >= 3 else {})
    flat = kernels.reshape(len(kernels), -1)
    ref_names = list(references)
    ref_flat = np.stack([np.asarray(references[n], dtype="float64").ravel() for n in ref_names]) \
        if ref_names else np.zeros((0, flat.shape[1]))
    if ref_flat.shape[1:] != flat.shape[1:]:
        raise ValueError(f"`references` must have the kernels' shape {k}.")
    if normalize:
        flat, ref_flat = _unit(flat), _unit(ref_flat)
    km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(flat)
    pca = PCA(n_components=2, random_state=seed).fit(flat)
    points = pca.transform(flat)
    ref_points = pca.transform(ref_flat) if len(ref_flat) else np.zeros((0, 2))
    nearest = []
    for c in km.cluster_centers_:
        nearest.append(ref_names[int(np.argmin(np.linalg.norm(ref_flat - c, axis=1)))] if ref_names else None)
    fig = None
    if plot:
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 5))
        else:
            fig = ax.figure
        ax.scatter(points[:, 0], points[:, 1], c=km.labels_, cmap="tab10", s=8, alpha=0.6)
        for name, p in zip(ref_names, ref_points):
            ax.scatter(p[0], p[1], marker="*", s=120, c="k")
            ax.annotate(name, p, fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%})")
        ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
        ax.set_title(title or "kernels")
    return KernelClusters(
        labels=km.labels_.astype("int64"),
        centers=km.cluster_centers_.reshape((n_clusters,) + k),
        points=points,
        reference_points={n: p for n, p in zip(ref_names, ref_points)},
        explained_variance_ratio=pca.explained_variance_ratio_,
        nearest_reference=nearest,
        figure=fig,
    )
