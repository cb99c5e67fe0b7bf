"""The agent's HTTP client for the service's /v1/agent routes, with bounded retries.

Errors: ``ServiceUnavailable`` (no answer after the retries: the report may be
re-sent later) and ``Refused`` (a 4xx: stale or not allowed, never re-sent).
"""

from __future__ import annotations

import base64
import logging
import time

import httpx

from workers.messages import LaunchSpec, NodeInventory

log = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The service could not be reached after retries."""


class Refused(Exception):
    """The service answered 4xx: the report is stale or not allowed; do not retry it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ServiceClient:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0, attempts: int = 5) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
        self.attempts = attempts

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict, *, attempts: int | None = None, timeout_s: float | None = None) -> dict:
        delay = 0.1
        last: Exception | None = None
        for _ in range(attempts or self.attempts):
            try:
                if timeout_s is None:
                    response = self.http.post(path, json=body)
                else:
                    response = self.http.post(path, json=body, timeout=timeout_s)
            except httpx.TransportError as exc:
                last = exc
            else:
                if response.status_code < 400:
                    return response.json()
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

    def register(self, inventory: NodeInventory) -> dict:
        return self._post("/v1/agent/register", {"inventory": inventory.to_dict()})

    def heartbeat(self, node_name: str, *, running: list[tuple[str, int, int]] | None = None,
                  timeout_s: float | None = None) -> dict:
        """One try, no retries: a late heartbeat is worth less than the next one (the agent fences on time)."""
        body: dict = {"node_name": node_name}
        if running is not None:
            body["running"] = [{"job_id": j, "attempt": a, "replica": r} for j, a, r in running]
        return self._post("/v1/agent/heartbeat", body, attempts=1, timeout_s=timeout_s)

    def adopt(self, node_name: str, attempts: list[tuple[str, int, int]]) -> dict:
        """After a restart: which of these attempts (found in the runtimes) to keep, which to stop."""
        body = {"node_name": node_name,
                "attempts": [{"job_id": j, "attempt": a, "replica": r} for j, a, r in attempts]}
        return self._post("/v1/agent/adopt", body)

    @staticmethod
    def _ref(spec: LaunchSpec) -> dict:
        return {"node_name": spec.node_name, "job_id": spec.job_id, "attempt": spec.attempt, "replica": spec.replica}

    def claim(self, spec: LaunchSpec) -> dict:
        return self._post("/v1/agent/started", self._ref(spec))

    def exited(self, spec: LaunchSpec, *, exit_code: int | None, reason: str, message: str = "") -> dict:
        body = {**self._ref(spec), "exit_code": exit_code, "reason": reason, "message": message[:4000]}
        return self._post("/v1/agent/exited", body)

    def logs(self, spec: LaunchSpec, *, stream: str, offset: int, data: bytes) -> dict:
        body = {**self._ref(spec), "stream": stream, "offset": offset, "data_b64": base64.b64encode(data).decode()}
        return self._post("/v1/agent/logs", body)
