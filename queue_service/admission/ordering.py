"""The total order of pending jobs. This module is the written-down rule.

A job ranks before another when, in this order of precedence:

1. its effective priority is higher (an operator override if set, else its
   priority class's value);
2. its project's fair-share standing is lower (the project's recent usage in
   GPU-equivalent seconds, decayed with a half-life, divided by the project's
   weight: a team that used less lately goes first among equals);
3. it was submitted earlier;
4. its id sorts first (ids are random, so this is an arbitrary but
   deterministic tie-break: two admitters given the same queue agree).

Fair-share standings are rounded to 1e-9 so float noise never reorders jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from queue_service.admission.snapshot import PendingJob


def sort_key(job: PendingJob) -> tuple[int, float, datetime, str]:
    """Ascending key: the first job in sorted order is admitted first."""
    return (-job.effective_priority, round(job.fair_share, 9), job.submitted_at, job.job_id)


def ordered(jobs: Iterable[PendingJob]) -> list[PendingJob]:
    """The pending jobs in admission order."""
    return sorted(jobs, key=sort_key)
