"""Where the service-level tests import their builders from; they live in :mod:`tests.support.builders`.

Kept so ``from tests import builders`` / ``from tests.builders import register`` keep working;
new tests import from ``tests.support.builders``.
"""

from tests.support.builders import inventory, job_body, register

__all__ = ["inventory", "job_body", "register"]
