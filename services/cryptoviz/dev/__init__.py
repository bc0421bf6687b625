"""dev service."""
