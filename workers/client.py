"""The agent's HTTP client for the service's /v1/agent routes, with bounded retries.

Every body is a model of the wire contract (:mod:`workers.protocol`), the
same model the route takes, and every answer is validated with the contract's
answer model, so the agent never reads a field the service does not send.

Errors: ``ServiceUnavailable`` (no answer after the retries: the report may be
re-sent later), its subclass ``BadAnswer`` (an answer that does not fit the
contract: treated as no answer, so a heartbeat that cannot be read does not
extend the lease) and ``Refused`` (a 4xx: stale or not allowed, never re-sent).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from workers.messages import LaunchSpec, NodeInventory
from workers.protocol import (
    AdoptAnswer,
    AdoptBody,
    AttemptRef,
    ExitBody,
    ExitedAnswer,
    ExitReason,
    HeartbeatAnswer,
    HeartbeatBody,
    LogBody,
    LogsAnswer,
    RegisterAnswer,
    RegisterBody,
    SampleBody,
    SamplesAnswer,
    SamplesBody,
    StartedAnswer,
)

log = logging.getLogger(__name__)

_Answer = TypeVar("_Answer", bound=BaseModel)
MESSAGE_MAX_CHARS = 4000  # ExitBody.message's limit: a longer message is cut, not refused


class ServiceUnavailable(Exception):
    """The service could not be reached after retries."""


class BadAnswer(ServiceUnavailable):
    """The service answered 2xx with a body that does not fit the wire contract."""


class Refused(Exception):
    """The service answered 4xx: the report is stale or not allowed; do not retry it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


_Body = TypeVar("_Body", bound=BaseModel)


def _body(model: type[_Body], data: dict[str, Any]) -> _Body:
    """The request model for ``data``; a body the route would refuse (422) is refused here, unsent."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refused(422, f"not a valid {model.__name__}: {exc}") from exc


def _keys(keys: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    return [{"job_id": j, "attempt": a, "replica": r} for j, a, r in keys]


def _ref(spec: LaunchSpec) -> dict[str, Any]:
    return {"node_name": spec.node_name, "job_id": spec.job_id, "attempt": spec.attempt, "replica": spec.replica}


class ServiceClient:
    """One agent's connection to the service (token of role ``agent``).

    ``http``: an ``httpx.Client`` to use instead of a new one (tests pass a
    FastAPI ``TestClient`` to talk to an app in-process).
    """

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0, attempts: int = 5,
                 http: httpx.Client | None = None) -> None:
        self.http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"}
        self.attempts = attempts

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: BaseModel, answer: type[_Answer], *, attempts: int | None = None,
              timeout_s: float | None = None) -> _Answer:
        payload = body.model_dump(mode="json")
        delay = 0.1
        last: Exception | None = None
        for _ in range(attempts or self.attempts):
            try:
                if timeout_s is None:
                    response = self.http.post(path, json=payload, headers=self._headers)
                else:
                    response = self.http.post(path, json=payload, headers=self._headers, timeout=timeout_s)
            except httpx.TransportError as exc:
                last = exc
            else:
                if response.status_code < 400:
                    try:
                        return answer.model_validate(response.json())
                    except (ValueError, ValidationError) as exc:
                        raise BadAnswer(f"POST {path}: the answer is not a {answer.__name__}: {exc}") from exc
                if response.status_code < 500:
                    try:
                        detail = response.json().get("detail", response.text)
                    except ValueError:
                        detail = response.text
                    raise Refused(response.status_code, str(detail))
                last = RuntimeError(f"{response.status_code}: {response.text[:200]}")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise ServiceUnavailable(f"POST {path} failed: {last}")

    def register(self, inventory: NodeInventory) -> RegisterAnswer:
        return self._post("/v1/agent/register", _body(RegisterBody, {"inventory": inventory.to_dict()}),
                          RegisterAnswer)

    def heartbeat(self, node_name: str, *, running: list[tuple[str, int, int]] | None = None,
                  mps: dict[str, str] | None = None, timeout_s: float | None = None) -> HeartbeatAnswer:
        """One try, no retries: a late heartbeat is worth less than the next one (the agent fences on time).

        ``mps``: each shared device's MPS status (``ready`` / ``failed: …``); None: the agent runs no MPS.
        """
        body = _body(HeartbeatBody, {"node_name": node_name, "running": None if running is None else _keys(running),
                                     "mps": mps})
        return self._post("/v1/agent/heartbeat", body, HeartbeatAnswer, attempts=1, timeout_s=timeout_s)

    def adopt(self, node_name: str, attempts: list[tuple[str, int, int]]) -> AdoptAnswer:
        """After a restart: which of these attempts (found in the runtimes) to keep, which to stop."""
        body = _body(AdoptBody, {"node_name": node_name, "attempts": _keys(attempts)})
        return self._post("/v1/agent/adopt", body, AdoptAnswer)

    def claim(self, spec: LaunchSpec) -> StartedAnswer:
        """The start claim: the answer means start it; ``Refused`` (409) means do not."""
        return self._post("/v1/agent/started", _body(AttemptRef, _ref(spec)), StartedAnswer)

    def exited(self, spec: LaunchSpec, *, exit_code: int | None, reason: ExitReason | str,
               message: str = "", stop_cause: str | None = None, node_fault: bool = False) -> ExitedAnswer:
        body = _body(ExitBody, {**_ref(spec), "exit_code": exit_code, "reason": reason,
                                "message": message[:MESSAGE_MAX_CHARS], "stop_cause": stop_cause,
                                "node_fault": node_fault})
        return self._post("/v1/agent/exited", body, ExitedAnswer)

    def logs(self, spec: LaunchSpec, *, stream: str, offset: int, data: bytes) -> LogsAnswer:
        body = _body(LogBody, {**_ref(spec), "stream": stream, "offset": offset,
                               "data_b64": base64.b64encode(data).decode()})
        return self._post("/v1/agent/logs", body, LogsAnswer)

    def samples(self, node_name: str, samples: list[SampleBody]) -> SamplesAnswer:
        """NVML samples of this node's jobs; the answer names the idle ones."""
        body = _body(SamplesBody, {"node_name": node_name, "samples": samples})
        return self._post("/v1/agent/samples", body, SamplesAnswer)
