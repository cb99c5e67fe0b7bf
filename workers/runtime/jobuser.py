"""The user host-process jobs run as: never the agent's root.

Why: a job that runs as root reads the data directory (tokens, the SQLite
database), other jobs' logs and ``/proc/<pid>/environ``, and can kill them.
When the agent runs as root, process jobs run as ``GPUQ_JOB_USER`` (default
``nobody``), with its primary group and no supplementary groups. An agent
that is not root cannot switch users: jobs run as the agent's own user
(a single-user host's owner), and ``resolve`` says so.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

DEFAULT_JOB_USER = "nobody"


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


def resolve(name: str | None = None) -> JobUser:
    """The job user for this agent (``GPUQ_JOB_USER`` when ``name`` is None)."""
    wanted = name or os.environ.get("GPUQ_JOB_USER") or DEFAULT_JOB_USER
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return JobUser(me.pw_name, me.pw_uid, me.pw_gid, switch=False,
                       note=f"agent is not root: jobs run as {me.pw_name}, the agent's own user")
    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        raise JobUserError(f"job user {wanted!r} (GPUQ_JOB_USER) does not exist on this host") from None
    if entry.pw_uid == 0:
        raise JobUserError(f"job user {wanted!r} is root; choose an unprivileged user")
    return JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True, note=f"jobs run as {entry.pw_name}")
