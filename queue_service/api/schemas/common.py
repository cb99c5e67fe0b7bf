"""What every schema shares: timestamps that say they are UTC, the columns' integer bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def _as_utc(value: datetime) -> datetime:
    """The database stores naive UTC; an answer says so (``...Z``), as RFC 3339 and the OpenAPI format require."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]

# Integers a request carries are bounded by the column they meet (PostgreSQL INTEGER / BIGINT):
# past them the database raises instead of answering, so the schema refuses them with a 422.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
