"""The agent's side of MPS: one owner for every runtime, its status on each heartbeat, jobs of a dead daemon.

The daemons themselves are :class:`workers.gpu.mps.MpsDaemons` (the runtimes
start a device's daemon at its first block job). This piece wires them to
the agent:

- **preflight** (at start): on NVML GPUs without ``nvidia-cuda-mps-control``
  every GPU and MIG device is ``failed: … not found`` at once, so the service
  places no block job there (rather than failing the first one);
- **leaving shared mode**: a whole-device job (no ``blocks``) about to start
  on a GPU or MIG instance whose daemon runs, with no block job left on it,
  stops that daemon first; so does MIG carving on a GPU, for the idle
  daemons of its instances (an instance may be destroyed and re-made);
- **check** (every ``CHECK_S``): a daemon that died is restarted, and each
  block job that ran on it is stopped and reported ``lost`` with the reason
  ("the MPS daemon of … died"): the job is requeued, never left hanging on a
  server that is gone; failed starts are retried every ``retry_s``;
- **status**: ``{uuid: "ready" | "failed: <reason>"}`` for each heartbeat
  (``GET /v1/nodes`` shows it; the admitter places no block job on a device
  whose daemon is not ready);
- **shutdown**: every daemon is stopped, but those of devices whose block
  jobs are left running for the next agent (``shutdown(stop_jobs=False)``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from workers.agent.runs import RunBook
from workers.gpu.mps import MpsDaemons, binary_missing
from workers.messages import LaunchSpec, NodeInventory
from workers.runtime.base import ExitReason

log = logging.getLogger(__name__)

CHECK_S = 2.0  # how often daemons are checked for life
DIED_GRACE_S = 5.0  # stop grace for the block jobs of a dead daemon


class MpsKeeper:
    """The agent's MPS wiring (see the module docstring); a no-op without an MPS owner."""

    def __init__(self, *, mps: MpsDaemons | None, book: RunBook, inventory: Callable[[], NodeInventory]) -> None:
        self.mps = mps
        self.book = book
        self._inventory = inventory

    def status(self) -> dict[str, str] | None:
        """What each heartbeat carries: every known device's MPS status (None: this node runs no MPS)."""
        return None if self.mps is None else self.mps.status()

    def preflight(self) -> None:
        """NVML GPUs without the control binary: mark every device failed before any job is placed."""
        inventory = self._inventory()
        if self.mps is None or inventory.gpu_source != "nvml" or not inventory.gpus:
            return
        why = binary_missing(self.mps.control.binary)
        if why:
            devices = [g.uuid for g in inventory.gpus if not g.mig_enabled]
            devices += [m.uuid for g in inventory.gpus for m in g.mig_devices]
            log.warning("MPS unavailable on this node: %s (no block jobs here)", why)
            self.mps.mark_failed(devices, why)

    def block_holders(self, uuid: str) -> int:
        """How many live block runs use ``uuid``."""
        return sum(1 for run in self.book.runs()
                   if not run.done.is_set() and run.spec.blocks is not None and uuid in run.spec.gpu_uuids)

    def before_launch(self, spec: LaunchSpec) -> None:
        """A whole-device job: the devices it takes leave shared mode, so their idle daemons stop first."""
        if self.mps is None or spec.blocks is not None:
            return
        running = self.mps.running()
        for uuid in spec.gpu_uuids:
            if uuid in running and self.block_holders(uuid) == 0:
                log.info("%s leaves shared mode: stopping its MPS daemon", uuid)
                self.mps.stop(uuid)

    def before_carve(self, spec: LaunchSpec) -> None:
        """MIG carving on a GPU: its instances' idle daemons stop first (a busy server keeps an instance in use)."""
        if self.mps is None or not spec.mig_slices:
            return
        parents = {item["gpu_uuid"] for item in spec.mig_slices}
        devices = {m.uuid for g in self._inventory().gpus if g.uuid in parents for m in g.mig_devices}
        for uuid in sorted(devices & self.mps.running()):
            if self.block_holders(uuid) == 0:
                log.info("carving MIG instances on its GPU: stopping the idle MPS daemon of %s", uuid)
                self.mps.stop(uuid)

    def check(self) -> dict[str, str]:
        """Restart dead daemons and fail their block jobs with the reason; ``{uuid: why}`` of the dead."""
        if self.mps is None:
            return {}
        died = self.mps.check()
        for uuid, why in died.items():
            for run in self.book.runs():
                if run.spec.blocks is not None and uuid in run.spec.gpu_uuids:
                    run.request_stop(why, min(run.spec.grace_s, DIED_GRACE_S), as_reason=ExitReason.LOST)
        return died

    def start(self, stopping: threading.Event) -> threading.Thread | None:
        """The check loop, until ``stopping`` is set (None without an MPS owner)."""
        if self.mps is None:
            return None

        def loop() -> None:
            while not stopping.wait(CHECK_S):
                try:
                    self.check()
                except Exception:
                    log.exception("MPS check failed")

        thread = threading.Thread(target=loop, name="gpuq-agent-mps", daemon=True)
        thread.start()
        return thread

    def left_running(self) -> set[str]:
        """The devices of the live block runs (read before a shutdown that leaves them running)."""
        return {u for run in self.book.runs() if run.spec.blocks is not None and not run.done.is_set()
                for u in run.spec.gpu_uuids}

    def after_adoption(self) -> None:
        """Take over the daemons of re-adopted block runs; a daemon gone meanwhile: restart it, fail its runs."""
        if self.mps is None:
            return
        for uuid in sorted(self.left_running()):
            was_running = self.mps.control.is_running(uuid)
            try:
                self.mps.ensure(uuid)
            except Exception as exc:  # noqa: BLE001 - MpsUnavailable or an I/O error: the runs cannot go on
                log.error("MPS for adopted runs on %s: %s", uuid, exc)
            if not was_running:
                why = f"the MPS daemon of {uuid} was gone when the agent came back"
                for run in self.book.runs():
                    if run.spec.blocks is not None and uuid in run.spec.gpu_uuids:
                        run.request_stop(why, min(run.spec.grace_s, DIED_GRACE_S), as_reason=ExitReason.LOST)

    def shutdown(self, *, keep: set[str]) -> None:
        """Stop every daemon but those in ``keep`` (devices whose block jobs go on for the next agent)."""
        if self.mps is not None:
            self.mps.stop_all(keep=keep)
