"""Per-tenant usage accounting."""
