"""Webhook bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class WebhookCreate(BaseModel):
    """Subscribe a URL to the project's job events (``events``: the to-states to send; empty: every event)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2048)
    events: list[str] = Field(default_factory=list, max_length=16)
    job_id: str | None = Field(default=None, max_length=32, description="only this job's events")


class WebhookPublic(BaseModel):
    id: str
    project: str
    url: str
    events: list[str]
    job_id: str | None
    created_by: str
    created_at: datetime
    active: bool


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="the HMAC-SHA256 key receivers verify with; shown this once")


class DeliveryPublic(BaseModel):
    id: int
    event_id: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str
    delivered_at: datetime | None


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int
