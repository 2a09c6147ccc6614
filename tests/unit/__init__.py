"""Fast tests with no external services."""
