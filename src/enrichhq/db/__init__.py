"""Database access: engines, the HQ schema and the named queries for each database."""
