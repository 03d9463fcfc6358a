"""Plugin layers: thin `keras.layers.Layer`s that own the weights and call `keras_medseg.ops`."""

# -- one import line per layer module; keep alphabetical --
