"""dashboard service."""
