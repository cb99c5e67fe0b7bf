"""Webhooks: a project's job events, POSTed to its URLs, signed, retried, with a delivery log.

- ``signing``   the signature a receiver checks (HMAC-SHA256 over ``timestamp.body``), pure
- ``sender``    the thread that enqueues new events per hook and delivers due ones, outside any lock

Subscriptions and their delivery log are ``services/webhooks.py``; the
events are the lifecycle's ``job_events`` rows, read after they committed.
"""
