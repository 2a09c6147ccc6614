"""Alembic environment and revisions of the gateway schema (driven by gateway.schema_migrations)."""
