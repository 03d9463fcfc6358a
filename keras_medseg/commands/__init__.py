"""Sub-commands of the `keras-medseg` command line (one module each)."""
