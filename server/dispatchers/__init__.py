"""Dispatchers: where decoded records go (one module per backend)."""
