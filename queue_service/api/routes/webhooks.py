"""/v1/projects/{project}/webhooks: subscribe, list, delete, and read the delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.schemas.webhooks import (
    DeliveriesPublic,
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
)
from queue_service.db.models import Webhook
from queue_service.services import webhooks as webhook_service

router = APIRouter(prefix="/projects/{project}/webhooks", tags=["webhooks"])


def _public(hook: Webhook, project: str) -> WebhookPublic:
    return WebhookPublic(id=hook.id, project=project, url=hook.url, events=hook.events, job_id=hook.job_id,
                         created_by=hook.created_by, created_at=hook.created_at, active=hook.active)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def create_webhook(project: str, body: WebhookCreate, principal: CurrentPrincipal, session: SessionDep,
                   ctx: ContextDep) -> WebhookCreated:
    """Job events of this project are POSTed to ``url``, signed with the secret in the answer (shown once)."""
    hook, secret = webhook_service.create(session, project=project, url=body.url, events=body.events,
                                          job_id=body.job_id, principal=principal, settings=ctx.settings)
    return WebhookCreated(**_public(hook, project).model_dump(), secret=secret)


@router.get("", response_model=list[WebhookPublic])
def list_webhooks(project: str, principal: CurrentPrincipal, session: SessionDep) -> list[WebhookPublic]:
    return [_public(h, project) for h in webhook_service.visible(session, project=project, principal=principal)]


@router.delete("/{hook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(project: str, hook_id: str, principal: CurrentPrincipal, session: SessionDep) -> None:
    webhook_service.delete(session, project=project, hook_id=hook_id, principal=principal)


@router.get("/{hook_id}/deliveries", response_model=DeliveriesPublic)
def list_deliveries(project: str, hook_id: str, principal: CurrentPrincipal, session: SessionDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeliveriesPublic:
    """Newest first: each event's status (pending, delivered, failed), tries, last answer."""
    rows = webhook_service.deliveries(session, project=project, hook_id=hook_id, principal=principal, limit=limit)
    data = [DeliveryPublic.model_validate(r, from_attributes=True) for r in rows]
    return DeliveriesPublic(data=data, count=len(data))
