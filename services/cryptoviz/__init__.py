"""CryptoViz: crypto prices scraped to NATS JetStream, stored in DuckDB, shown with Panel."""

__version__ = "0.1.0"
