"""How a webhook body is signed, Stripe's way: ``Gpuq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The HMAC covers ``f"{t}.{body}"`` with the hook's secret, so a receiver that
checks it (``verify``) knows the body came from gpuq and is recent (a replay
of an old request fails the tolerance). ``Gpuq-Event-Id`` carries the event
id for de-duplication: a delivery may arrive more than once.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Gpuq-Signature"
EVENT_ID_HEADER = "Gpuq-Event-Id"


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: the header parses, is within ``tolerance_s`` of ``now``, and the MAC matches."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp=timestamp).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))
