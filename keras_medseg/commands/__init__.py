"""Sub-commands of the `keras-medseg` command line (one module each)."""

# Nothing is re-exported here: import the command modules themselves.
__all__: list[str] = []
