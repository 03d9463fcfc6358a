"""Small shared utilities (validation, serialisation, backend-specific gradients)."""

# Nothing is re-exported here: import the modules themselves.
__all__: list[str] = []
