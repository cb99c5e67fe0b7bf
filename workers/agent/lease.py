"""Registration, heartbeats and self-fencing: the agent's side of the node lease.

- The service sets the lease (``lease_s``, counted from its receipt of a
  heartbeat) and the heartbeat interval in every answer; the agent beats at
  least four times per lease.
- **Self-fencing**: from the *sending* of the last answered heartbeat the
  agent has at least ``lease_s`` before the service may requeue its jobs
  elsewhere. After ``fence_after_s`` (half the lease) without an answer it
  calls ``on_fence`` (the agent stops every job, stop grace capped at
  ``FENCE_GRACE_FRACTION`` of the lease), so they are gone before the lease
  runs out: one job never runs twice at once.
- Once the service answers again (or says it does not know the node) the
  agent registers again and is no longer fenced.

The lease knows nothing of runs: ``running`` says what to report and
``on_answer`` gets each answered heartbeat (stale attempts to stop,
unreported exits to re-send).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from workers.agent.runs import RunKey
from workers.client import Refused, ServiceClient, ServiceUnavailable
from workers.messages import GpuInfo, NodeInventory
from workers.protocol import AdoptAnswer, HeartbeatAnswer, RegisterAnswer

log = logging.getLogger(__name__)

FENCE_FRACTION = 0.5  # of the lease: silence after which the agent stops its jobs
FENCE_GRACE_FRACTION = 0.25  # of the lease: the most a self-fencing stop waits before SIGKILL
MIN_HEARTBEAT_S = 0.05
REGISTER_RETRY_S = 1.0
MIN_FENCE_CHECK_S = 0.01  # the fence loop's shortest sleep (it wakes just after the deadline, not before)


class Lease:
    """Keeps this node registered and its lease alive; fences the node when the service falls silent."""

    def __init__(
        self,
        *,
        client: ServiceClient,
        inventory: NodeInventory,
        heartbeat_s: float,
        lease_s: float,
        running: Callable[[], list[RunKey]],
        on_answer: Callable[[HeartbeatAnswer], None],
        on_fence: Callable[[float], None],
        mps_status: Callable[[], dict[str, str] | None] = lambda: None,
    ) -> None:
        self.client = client
        self.inventory = inventory
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self._running = running
        self._on_answer = on_answer
        self._on_fence = on_fence  # called with the stop grace cap, in seconds
        self._mps_status = mps_status  # a heartbeat carries the devices' MPS status when it changed
        self._mps_sent: dict[str, str] | None = None  # what the service last took (None: send it)
        self._wake = threading.Event()  # set: heartbeat now (an MPS status changed), or stop
        self._last_contact = time.monotonic()
        self._inventory_lock = threading.Lock()
        self.fenced = False  # True from a self-fence until the service answers again
        self.fences = 0  # how many times this agent fenced itself (tests, logs)
        # False for the agent inside the server process (``gpuq serve``): a slow answer from its own server is
        # load, not a partition, and the server is alive as long as this agent is; it never fences.
        self.self_fence = True

    @property
    def node_name(self) -> str:
        return self.inventory.node_name

    @property
    def fence_after_s(self) -> float:
        return self.lease_s * FENCE_FRACTION

    def apply_timing(self, answer: RegisterAnswer | HeartbeatAnswer | AdoptAnswer) -> None:
        """The service sets the lease; heartbeat at least four times per lease."""
        self.lease_s = answer.lease_s
        self.heartbeat_s = max(MIN_HEARTBEAT_S, min(answer.heartbeat_s, self.lease_s / 4))

    def register(self, *, timeout_s: float = 60.0) -> None:
        """Register, retrying while the service is unreachable for up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            sent = time.monotonic()
            try:
                self.apply_timing(self.client.register(self.inventory))
                break
            except ServiceUnavailable:
                if time.monotonic() > deadline:
                    raise
                log.warning("service unreachable; retrying registration")
                time.sleep(REGISTER_RETRY_S)
        self._last_contact = sent

    def report_gpus(self, gpus: list[GpuInfo]) -> None:
        """Re-register with re-probed GPUs (after MIG carving); an empty probe keeps the GPUs known."""
        with self._inventory_lock:
            if gpus:
                self.inventory = replace(self.inventory, gpus=gpus)
            inventory = self.inventory
        self.client.register(inventory)
        self._mps_sent = None  # new devices (MIG UUIDs) the service now knows: their status goes again

    def start(self, stopping: threading.Event) -> list[threading.Thread]:
        """The heartbeat and fence threads, until ``stopping`` is set."""
        threads = []
        for target, name in ((self._heartbeat_loop, "hb"), (self._fence_loop, "fence")):
            thread = threading.Thread(target=target, args=(stopping,), name=f"gpuq-agent-{name}-{self.node_name}",
                                      daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def wake(self) -> None:
        """Heartbeat now rather than at the next tick (the service should hear a changed MPS status soon)."""
        self._wake.set()

    def _heartbeat_loop(self, stopping: threading.Event) -> None:
        while True:
            self._wake.wait(self.heartbeat_s)
            if stopping.is_set():
                return
            self._wake.clear()
            self.heartbeat_once()

    def heartbeat_once(self) -> bool:
        """One heartbeat, re-registering if the service forgot the node or this node fenced. True if answered."""
        sent = time.monotonic()
        try:
            mps = self._mps_status()
            # Only a change is sent (and the first after registering): the service keeps what it took.
            # An agent without MPS sends what it always sent.
            extra = {} if mps is None or mps == self._mps_sent else {"mps": mps}
            answer = self.client.heartbeat(self.node_name, running=self._running(), **extra,
                                           timeout_s=max(0.5, min(5.0, self.fence_after_s / 2)))
        except (ServiceUnavailable, Refused) as exc:
            log.warning("heartbeat failed: %s", exc)
            return False
        self._last_contact = sent
        self.apply_timing(answer)
        if "mps" in extra:
            self._mps_sent = mps
        if not answer.known or self.fenced:
            self._mps_sent = None  # registering again: the next heartbeat says it all again
            try:
                self.apply_timing(self.client.register(self.inventory))
                if self.fenced:
                    log.warning("contact with the service is back: registered again")
                self.fenced = False
            except (ServiceUnavailable, Refused) as exc:
                log.warning("re-registration failed: %s", exc)
        self._on_answer(answer)
        return True

    def _fence_loop(self, stopping: threading.Event) -> None:
        """Fence once the silence passes ``fence_after_s``: sleep until that deadline, not in short ticks.

        An answered heartbeat moves the deadline on, so the loop wakes, sees it
        moved and sleeps again; the sleep is capped at one heartbeat interval so
        a shorter lease from the service (``apply_timing``) takes effect soon.
        """
        while not stopping.wait(self._until_fence_s()):
            if self.self_fence and not self.fenced and time.monotonic() - self._last_contact > self.fence_after_s:
                self.fence()

    def _until_fence_s(self) -> float:
        """Seconds until the silence would pass ``fence_after_s`` (at least ``MIN_FENCE_CHECK_S``, at most a beat)."""
        if self.fenced or not self.self_fence:
            return self.heartbeat_s  # no deadline to meet: only look again now and then
        until_s = self._last_contact + self.fence_after_s - time.monotonic() + MIN_FENCE_CHECK_S
        return min(self.heartbeat_s, max(MIN_FENCE_CHECK_S, until_s))

    def fence(self) -> None:
        """No word from the service for too long: stop every job before its lease can run out."""
        self.fenced = True
        self.fences += 1
        self._on_fence(self.lease_s * FENCE_GRACE_FRACTION)
