"""The total order of pending jobs. This module is the written-down rule.

A job ranks before another when, in this order of precedence:

1. its effective priority is higher (an operator override if set, else its
   priority class's value);
2. it was submitted earlier;
3. its id sorts first (ids are random, so this is an arbitrary but
   deterministic tie-break: two admitters given the same queue agree).

Fair-share standing slots in between 1 and 2 in the admission issue.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from queue_service.admission.snapshot import PendingJob


def sort_key(job: PendingJob) -> tuple[int, datetime, str]:
    """Ascending key: the first job in sorted order is admitted first."""
    return (-job.effective_priority, job.submitted_at, job.job_id)


def ordered(jobs: Iterable[PendingJob]) -> list[PendingJob]:
    """The pending jobs in admission order."""
    return sorted(jobs, key=sort_key)
