"""Persistence: SQLAlchemy models, engine/session set-up and repositories."""
