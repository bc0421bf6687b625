"""ingester service."""
