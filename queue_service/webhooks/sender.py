"""The webhook sender: on new job events and when a delivery falls due, enqueue new events per hook, then deliver.

One pass (``run_once``):

1. in one short transaction: for each active hook, the job events after its
   cursor that match it become ``pending`` deliveries (unique per hook and
   event, so a pass run twice enqueues nothing twice), and the due ones are
   leased (``next_attempt_at`` pushed ``LEASE_S`` ahead, so a second replica
   does not send them too);
2. outside any transaction: POST each, signed, with a short timeout;
3. in a second transaction: delivered on a 2xx; otherwise retried with
   exponential backoff (``webhook_backoff_s`` × 2^attempt, at most
   ``MAX_BACKOFF_S``) until ``webhook_max_attempts``, then ``failed``.

No lock is held while a receiver answers, and a receiver that is down delays
only its own deliveries.

When passes run (``_loop``): a commit that adds a job event (or a hook) wakes
the sender (``wake``, a committed effect of ``lifecycle.effects``); passes are at least
``webhook_poll_s`` apart, so a burst of events is sent in one pass; otherwise
it sleeps until the first pending delivery falls due (a retry's backoff, a
lapsed lease), at most ``IDLE_TICK_S`` (events committed by another replica
are that replica's sender's to wake for; this tick is only for recovery). An
idle server runs no pass at all.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from queue_service.db.base import utcnow
from queue_service.db.models import Job, JobEvent, Project, Webhook, WebhookDelivery
from queue_service.settings import Settings
from queue_service.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

LEASE_S = 60.0  # a leased delivery is not picked again for this long (its sender may be slow or gone)
MAX_BACKOFF_S = 600.0
BATCH = 100
ENQUEUE_BATCH = 1000  # events per hook per pass
IDLE_TICK_S = 60.0  # nothing pending: the longest the sender sleeps without a wake (recovery only)
@dataclass(frozen=True, slots=True)
class Outgoing:
    """One leased delivery, with everything needed to send it outside the transaction."""

    delivery_id: int
    url: str
    secret: str
    event_id: int
    body: bytes


def body_of(event: JobEvent, job: Job, project: str) -> bytes:
    """The JSON a receiver gets: the event and a short view of its job (never its environment)."""
    payload = {
        "id": event.id, "type": f"job.{event.to_state}", "created": event.at.isoformat() + "Z",
        "data": {"job_id": job.id, "job_name": job.name, "project": project, "attempt": event.attempt,
                 "event": event.event, "from_state": event.from_state, "to_state": event.to_state,
                 "actor": event.actor, "cause": event.cause, "reason": event.reason, "exit_code": job.exit_code},
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class WebhookSender:
    """Runs passes when woken or due, in its own thread (``start`` / ``stop``), or one at a time (``run_once``)."""

    def __init__(self, *, sessions: sessionmaker[Session], settings: Settings,
                 http: httpx.Client | None = None) -> None:
        self.sessions = sessions
        self.settings = settings
        self.http = http or httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0  # passes the loop ran (tests: an idle server runs none)

    def wake(self) -> None:
        """A pass soon (at most one per ``webhook_poll_s``): new events may be due."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gpuq-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        """A first pass at start (events of a previous run), then one per wake or due delivery (module docstring)."""
        due = time.monotonic()
        while True:
            self._wake.wait(timeout=max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                return
            self._wake.clear()
            started = time.monotonic()
            try:
                next_s = self.pass_and_next_s()
            except Exception:  # a broken database or receiver must not stop the sender
                log.exception("webhook pass failed; trying again next interval")
                next_s = self.settings.webhook_poll_s
            self.passes += 1
            due = time.monotonic() + next_s
            # passes at least webhook_poll_s apart: the wakes of a burst of events wait for one pass
            if self._stop.wait(max(0.0, started + self.settings.webhook_poll_s - time.monotonic())):
                return

    def pass_and_next_s(self) -> float:
        """One pass; then seconds until the next is due without a wake (0: more is waiting now)."""
        now = utcnow()
        attempted, enqueued_all = self._pass(now)
        if attempted >= BATCH or not enqueued_all:
            return 0.0
        return self.next_due_s(now=utcnow())

    def next_due_s(self, *, now: datetime) -> float:
        """Seconds until the first pending delivery is due (a retry, a lapsed lease); ``IDLE_TICK_S`` without one."""
        with self.sessions() as session:
            first = session.scalar(select(func.min(WebhookDelivery.next_attempt_at))
                                   .where(WebhookDelivery.status == "pending"))
        if first is None:
            return IDLE_TICK_S
        return min(IDLE_TICK_S, max(0.0, (first - now).total_seconds()))

    def run_once(self, *, now: datetime | None = None) -> int:
        """One pass; returns how many deliveries were attempted."""
        return self._pass(now or utcnow())[0]

    def _pass(self, now: datetime) -> tuple[int, bool]:
        """One pass: (deliveries attempted, whether every new event was enqueued)."""
        with self.sessions.begin() as session:
            enqueued_all = self._enqueue(session, now)
            outgoing = self._lease(session, now)
        results = [(item, self._post(item)) for item in outgoing]
        with self.sessions.begin() as session:
            for item, (code, error) in results:
                self._record(session, item, code, error, now)
        return len(outgoing), enqueued_all

    def _enqueue(self, session: Session, now: datetime) -> bool:
        """New events per hook become pending deliveries; False if a hook had more than one batch of them."""
        enqueued_all = True
        for hook in session.scalars(select(Webhook).where(Webhook.active.is_(True)).order_by(Webhook.id)):
            query = (select(JobEvent.id, JobEvent.to_state, JobEvent.job_id)
                     .join(Job, Job.id == JobEvent.job_id)
                     .where(JobEvent.id > hook.after_event_id, Job.project_id == hook.project_id)
                     .order_by(JobEvent.id).limit(ENQUEUE_BATCH))
            if hook.job_id:
                query = query.where(JobEvent.job_id == hook.job_id)
            rows = session.execute(query).all()
            for event_id, to_state, _job_id in rows:
                if not hook.events or to_state in hook.events:
                    session.add(WebhookDelivery(webhook_id=hook.id, event_id=event_id, status="pending",
                                                next_attempt_at=now, last_error=""))
            if rows:
                hook.after_event_id = rows[-1][0]
            enqueued_all = enqueued_all and len(rows) < ENQUEUE_BATCH
        session.flush()
        return enqueued_all

    def _lease(self, session: Session, now: datetime) -> list[Outgoing]:
        due = session.execute(
            select(WebhookDelivery, Webhook, JobEvent, Job, Project.name)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .join(JobEvent, JobEvent.id == WebhookDelivery.event_id)
            .join(Job, Job.id == JobEvent.job_id).join(Project, Project.id == Job.project_id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.id).limit(BATCH)
        ).all()
        out = []
        for delivery, hook, job_event, job, project in due:
            delivery.next_attempt_at = now + timedelta(seconds=LEASE_S)
            out.append(Outgoing(delivery.id, hook.url, hook.secret, job_event.id, body_of(job_event, job, project)))
        return out

    def _post(self, item: Outgoing) -> tuple[int | None, str]:
        headers = {"content-type": "application/json", EVENT_ID_HEADER: str(item.event_id),
                   SIGNATURE_HEADER: sign(item.secret, item.body, timestamp=int(time.time())),
                   "user-agent": "gpuq-webhooks"}
        try:
            response = self.http.post(item.url, content=item.body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        return response.status_code, "" if response.is_success else f"HTTP {response.status_code}"

    def _record(self, session: Session, item: Outgoing, code: int | None, error: str, now: datetime) -> None:
        delivery = session.get(WebhookDelivery, item.delivery_id)
        if delivery is None:
            return  # its hook was deleted meanwhile
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = code, error
        if not error:
            delivery.status, delivery.delivered_at = "delivered", utcnow()
        elif delivery.attempts >= self.settings.webhook_max_attempts:
            delivery.status = "failed"
        else:
            wait_s = min(MAX_BACKOFF_S, self.settings.webhook_backoff_s * 2 ** (delivery.attempts - 1))
            delivery.next_attempt_at = now + timedelta(seconds=wait_s)
