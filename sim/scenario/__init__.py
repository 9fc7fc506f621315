"""The scenario: its schema (frozen pydantic, one-line errors) and its names resolved to specs."""
