"""Kernel identification: are learned convolution kernels finite-difference stencils?

Entrywise comparison (`extract_kernels` -> `cluster_kernels`: k-means + PCA
with the reference stencils projected) and spectral comparison
(`conv_singular_values` of the periodic operator `A[K]`, `identify`,
`identify_model`), after J. Actor, "Identification of Kernels in a
Convolutional Neural Network" (Rice University, 2020).
"""

from keras_medseg.kernels.cluster import KernelClusters, cluster_kernels
from keras_medseg.kernels.extract import LayerKernels, extract_kernels
from keras_medseg.kernels.reference import SPECTRAL_FAMILIES, reference_kernels, spectral_family
from keras_medseg.kernels.spectral import (
    INDETERMINATE,
    Identification,
    conv_singular_values,
    identify,
    identify_many,
    identify_model,
    normalized_spectrum,
    plot_label_counts,
    write_csv,
)

__all__ = [
    "INDETERMINATE",
    "Identification",
    "KernelClusters",
    "LayerKernels",
    "SPECTRAL_FAMILIES",
    "cluster_kernels",
    "conv_singular_values",
    "extract_kernels",
    "identify",
    "identify_many",
    "identify_model",
    "normalized_spectrum",
    "plot_label_counts",
    "reference_kernels",
    "spectral_family",
    "write_csv",
]
