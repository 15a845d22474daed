"""Several wasup nodes on one PostgreSQL."""
