"""The writers of job, attempt and allocation state: one function per transition of ``table.TABLE``.

Each function checks the table first (an illegal move raises
``IllegalTransition`` before anything is written), then writes the job, its
attempt and its allocations, appends one event (``events.record``) and
queues what must happen after the commit (``effects.queue``). The caller
holds the job row (``FOR UPDATE`` on PostgreSQL) and commits; nothing here
commits, sends or sleeps.

Why a job is stopping is ``jobs.stop_cause`` (a ``StopCause``) and what it
ends as is ``jobs.stop_action`` (``requeue`` or ``cancel``); ``jobs.reason``
is only ever the words a person reads, never read back.
"""

from __future__ import annotations

from queue_service.lifecycle.admit import ALLOCATION_COLUMNS, Admitted, ReplicaRows, admit
from queue_service.lifecycle.approval import approve, deny, expire
from queue_service.lifecycle.moves import ADMITTER, CANCEL, REQUEUE, SERVICE, Who, agent
from queue_service.lifecycle.reports import ExitOutcome, claim_start, fenced, record_exit
from queue_service.lifecycle.stopping import LOST, cancel, lose_attempt, request_stop, resend_stops, stop_leftovers
from queue_service.lifecycle.submit import hold, release_hold, set_wait_reasons, submit

__all__ = [
    "ADMITTER", "ALLOCATION_COLUMNS", "CANCEL", "LOST", "REQUEUE", "SERVICE", "Admitted", "ExitOutcome",
    "ReplicaRows", "Who", "admit", "agent", "approve", "cancel", "claim_start", "deny", "expire", "fenced", "hold",
    "lose_attempt", "record_exit", "release_hold", "request_stop", "resend_stops", "set_wait_reasons",
    "stop_leftovers", "submit",
]
