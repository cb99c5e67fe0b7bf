"""The user host-process jobs run as: never the agent's root.

Why: a job that runs as root reads the data directory (tokens, the SQLite
database), other jobs' logs and ``/proc/<pid>/environ``, and can kill them.
When the agent runs as root, process jobs never run as root:

- by default each attempt gets **its own uid** from ``GPUQ_JOB_UIDS``
  (default ``900000000-900099999``, no passwd entry needed) with ``nobody``'s
  group: one job cannot read another's 0700 work directory, its
  ``/proc/<pid>/environ``, or signal it, since they never share a uid;
- with ``GPUQ_JOB_USER=name`` every job runs as that one user (simpler to
  audit, but jobs of different people can then see and signal each other).

Either way no supplementary groups. An agent that is not root cannot switch
users: jobs run as the agent's own user (a single-user host's owner), and
``resolve`` says so.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

DEFAULT_JOB_USER = "nobody"
DEFAULT_JOB_UIDS = "900000000-900099999"


class JobUserError(Exception):
    """The configured job user does not exist on this host."""


@dataclass(frozen=True)
class JobUser:
    """Who a job runs as; ``switch`` False: the agent's own user (not root)."""

    name: str
    uid: int
    gid: int
    switch: bool
    note: str = ""
    uids: range | None = None  # one uid per attempt from this range (None: every job is ``uid``)


def _uid_range(text: str) -> range:
    try:
        low, _, high = text.partition("-")
        uids = range(int(low), int(high or low) + 1)
    except ValueError:
        raise JobUserError(f"GPUQ_JOB_UIDS must be FIRST-LAST, got {text!r}") from None
    if not uids or uids.start < 1000:
        raise JobUserError(f"GPUQ_JOB_UIDS {text!r} must be a non-empty range of unprivileged uids (>= 1000)")
    return uids


def resolve(name: str | None = None, *, uids: str | None = None) -> JobUser:
    """The job user for this agent: ``name`` (``GPUQ_JOB_USER``) for all jobs, else one uid per attempt."""
    wanted = name or os.environ.get("GPUQ_JOB_USER")
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return JobUser(me.pw_name, me.pw_uid, me.pw_gid, switch=False,
                       note=f"agent is not root: jobs run as {me.pw_name}, the agent's own user")
    if not wanted:
        group = pwd.getpwnam(DEFAULT_JOB_USER).pw_gid if _exists(DEFAULT_JOB_USER) else 65534
        span = _uid_range(uids or os.environ.get("GPUQ_JOB_UIDS") or DEFAULT_JOB_UIDS)
        return JobUser("gpuq-job", span.start, group, switch=True, uids=span,
                       note=f"each attempt runs as its own uid ({span.start}-{span.stop - 1})")
    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        raise JobUserError(f"job user {wanted!r} (GPUQ_JOB_USER) does not exist on this host") from None
    if entry.pw_uid == 0:
        raise JobUserError(f"job user {wanted!r} is root; choose an unprivileged user")
    return JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True, note=f"jobs run as {entry.pw_name}")


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
