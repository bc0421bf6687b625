"""scraper service."""
