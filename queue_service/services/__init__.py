"""Use cases over the database: keyword-only functions taking a session; no HTTP here."""
