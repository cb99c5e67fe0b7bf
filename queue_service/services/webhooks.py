"""Webhook subscriptions and their delivery log (the sending is ``queue_service.webhooks.sender``).

A member may subscribe their own project; operators and admins any. The
secret is made here and shown once, at creation. Only ``http(s)`` URLs, and
only to ``Settings.webhook_allowed_hosts`` when an admin set that list.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.models import Job, JobEvent, Project, Role, Webhook, WebhookDelivery
from queue_service.errors import Forbidden, InvalidRequest, NotFound
from queue_service.lifecycle import effects
from queue_service.lifecycle.states import JobState
from queue_service.services import audit
from queue_service.services import projects as project_service
from queue_service.settings import Settings


def _project(session: Session, *, name: str, principal: Principal, write: bool) -> Project:
    project = project_service.require(session, name=name)
    if not principal.can_see_project(project.name):
        raise NotFound(f"project {name} not found")
    if write and not (principal.role in (Role.ADMIN, Role.OPERATOR) or
                      (principal.role is Role.MEMBER and project.name in principal.projects)):
        raise Forbidden(f"role {principal.role.value} may not change the webhooks of project {name!r}")
    return project


def check_url(url: str, *, settings: Settings) -> str:
    """``http(s)`` with a host, and the host on the allow-list when there is one; InvalidRequest otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"a webhook URL is http:// or https:// with a host, not {url!r}", field="url")
    allowed = settings.webhook_allowed_hosts
    if allowed is not None and parts.hostname not in allowed:
        raise InvalidRequest(f"webhooks may only go to {', '.join(sorted(allowed)) or 'no host'} "
                             f"(GPUQ_WEBHOOK_ALLOWED_HOSTS), not {parts.hostname}", field="url")
    return url


def create(session: Session, *, project: str, url: str, events: Sequence[str], job_id: str | None,
           principal: Principal, settings: Settings) -> tuple[Webhook, str]:
    """Subscribe; returns the hook and its secret (shown this once). Events already recorded are not sent."""
    row = _project(session, name=project, principal=principal, write=True)
    check_url(url, settings=settings)
    known = {s.value for s in JobState}
    for index, state in enumerate(events):
        if state not in known:
            raise InvalidRequest(f"events[{index}]: {state!r} is not a job state ({', '.join(sorted(known))})",
                                 field=f"events.{index}")
    if job_id is not None and session.scalar(
            select(Job.id).where(Job.id == job_id, Job.project_id == row.id)) is None:
        raise InvalidRequest(f"project {project} has no job {job_id}", field="job_id")
    secret = "whsec_" + secrets.token_urlsafe(32)
    # From now on: the cursor starts after the last event that exists.
    last = session.scalar(select(func.max(JobEvent.id))) or 0
    hook = Webhook(project_id=row.id, url=url, secret=secret, events=sorted(set(events)), job_id=job_id,
                   after_event_id=last, created_by=principal.label, active=True)
    session.add(hook)
    session.flush()
    effects.queue(session, job_events=True)  # the sender looks at once (committed effect)
    audit.record(session, actor=principal, action="webhook.create", target=hook.id,
                 after={"project": project, "url": url, "events": hook.events, "job_id": job_id})
    return hook, secret


def visible(session: Session, *, project: str, principal: Principal) -> list[Webhook]:
    row = _project(session, name=project, principal=principal, write=False)
    return list(session.scalars(select(Webhook).where(Webhook.project_id == row.id).order_by(Webhook.created_at)))


def _hook(session: Session, *, project: str, hook_id: str, principal: Principal, write: bool) -> Webhook:
    row = _project(session, name=project, principal=principal, write=write)
    hook = session.get(Webhook, hook_id)
    if hook is None or hook.project_id != row.id:
        raise NotFound(f"webhook {hook_id} not found")
    return hook


def delete(session: Session, *, project: str, hook_id: str, principal: Principal) -> None:
    hook = _hook(session, project=project, hook_id=hook_id, principal=principal, write=True)
    audit.record(session, actor=principal, action="webhook.delete", target=hook.id,
                 before={"project": project, "url": hook.url})
    session.delete(hook)


def deliveries(session: Session, *, project: str, hook_id: str, principal: Principal,
               limit: int = 100) -> list[WebhookDelivery]:
    """The hook's delivery log, newest first."""
    hook = _hook(session, project=project, hook_id=hook_id, principal=principal, write=False)
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
                                .order_by(WebhookDelivery.id.desc()).limit(limit)))
