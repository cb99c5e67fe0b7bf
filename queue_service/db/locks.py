"""The service's PostgreSQL advisory lock keys, in one place: two features that picked the same number would
silently exclude each other (the elected leader's session lock once took the reconciler's key, and with
``--api-processes`` > 1 no launch was ever re-sent and no lost node recovered).

Keys are distinct by construction (:data:`KEYS` is checked at import); per-row locks (a job's usage rows,
``billing.rollups``) use ``hashtext`` of a prefixed string, a different key space (one ``int4`` argument
is an ``int4``, these are ``int8`` values above ``2**31``).
"""

from __future__ import annotations

_BASE = 0x67707571 << 8  # "gpuq", shifted: every key is above 2**31, out of hashtext's int4 range

ADMISSION_CYCLE = _BASE + 1  # one admission cycle's transaction (``admitter.loop``)
RECONCILE = _BASE + 2  # one reconciliation pass's transaction (``admitter.loop``)
LEADER = _BASE + 3  # the elected admitter's session lock (``admitter.leader``)

KEYS = {"admission_cycle": ADMISSION_CYCLE, "reconcile": RECONCILE, "leader": LEADER}
if len(set(KEYS.values())) != len(KEYS):  # pragma: no cover - a programming error, caught by any import
    raise RuntimeError(f"advisory lock keys collide: {KEYS}")
