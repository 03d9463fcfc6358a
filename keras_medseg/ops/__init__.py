"""Pure functions on `keras.ops` (TensorFlow and JAX), channels-last `(N, *spatial, C)`.

Boundary convention: every finite-difference op replicates the edge value
(zero flux, Neumann) except `implicit_conv_solve`, which is periodic because it
works in the Fourier domain.
"""

# -- one import line per op module; keep alphabetical --
