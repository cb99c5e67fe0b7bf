"""Admission: pure domain logic (no FastAPI, SQLAlchemy or broker imports).

``snapshot`` describes the cluster at one instant, ``ordering`` is the total
order of pending work, ``cycle`` walks that order and decides. The database
side (``queue_service.admitter``) builds snapshots and persists decisions.
"""
