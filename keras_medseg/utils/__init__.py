"""Small shared utilities (validation, serialisation, backend-specific gradients)."""
