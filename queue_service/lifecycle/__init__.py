"""The job lifecycle: the only code that changes a Job, an Attempt or an Allocation.

Everything a job goes through once it is submitted — admit, start, finish,
requeue, lose, cancel, stop (preempt, reclaim, time limit, gang), hold and
release — is one function, reached through
:mod:`queue_service.lifecycle.transitions`. Each checks the written table in
:mod:`~queue_service.lifecycle.table` (from-state, event, to-state, who may
cause it), writes the rows, appends one
:class:`~queue_service.db.models.JobEvent` (:mod:`~.events`) and queues what
must happen after the commit (:mod:`~.effects`: launches, stops, waking the
admitter), which one session hook sends once the transaction committed and
drops if it rolled back.

Modules, one concept each:

- ``states``       the state and cause enums (no imports: the DB models use them)
- ``table``        the transition table and ``check``; an illegal move is ``IllegalTransition``
- ``events``       the append-only event rows
- ``effects``      effects after commit, in one place
- ``grace``        a job's grace period (its class's value, database first)
- ``stops``        the one fan-out that builds every stop request
- ``allocations``  releasing allocations (and closing their ledger intervals) in the same transaction
- ``moves``        ``move``: check the table, set the state, append the event (the one assignment of a state)
- ``submit``       queued jobs: submit, hold, release, wait reasons
- ``approval``     pending jobs: approve, deny, approvals that expire
- ``admit``        queued → admitted in bulk, with attempt, allocation and event rows
- ``reports``      what agents report, fenced by attempt: start claims, exits
- ``stopping``     cancel, stop (preempt, reclaim, gang), lost attempts
- ``gates``        what keeps a queued job out of a cycle: dependencies, array limits
- ``transitions``  the front door: every writer above, by name

This ``__init__`` imports nothing, so ``db.models`` can import ``states``
without a cycle.
"""
