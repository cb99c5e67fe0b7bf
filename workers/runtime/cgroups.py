"""Cgroups for bare processes: one group per attempt, its limits, its OOM count, and killing all of it.

Why: an environment variable limits nothing. A host-process attempt gets a
cgroup under ``GPUQ_CGROUP_PARENT`` (default ``gpuq``) with

- memory = ``memory_mib``, swap off (v2 ``memory.swap.max = 0``, v1
  ``memory.memsw.limit_in_bytes`` = the memory limit, where swap accounting exists);
- CPU quota = ``cpus`` (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``) per 100 ms;
- a pids limit (``GPUQ_PIDS_MAX``, default 4096): a fork bomb stops there.

Two layouts are supported: **v2** (``/sys/fs/cgroup`` is cgroup2: controllers
enabled in the parents' ``cgroup.subtree_control``) and **v1/hybrid**
(``memory``, ``cpu``, ``pids`` hierarchies, plus the v2 ``unified`` mount when
there is one, for ``cgroup.kill`` and a single list of the group's processes).
The whole group is killed at the end (``cgroup.kill``, or SIGKILL to every
member until none is left), so a daemon the job forked with ``setsid`` dies too.

Where nothing can be written (not root, no delegation), ``probe`` says why
and the agent runs with environment limits only (``limits: env-only``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PARENT = "gpuq"
DEFAULT_PIDS_MAX = 4096
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "pids")
ENFORCED = "enforced"
ENV_ONLY = "env-only"


class CgroupError(Exception):
    """A cgroup could not be created, limited, joined or removed."""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from exc


def _read_key(path: Path, key: str) -> int:
    """``key N`` from a flat-keyed cgroup file (``memory.events``, ``memory.oom_control``); 0 if absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True)
class Limits:
    """What one attempt may use; None: no limit of that kind."""

    memory_mib: int | None = None
    cpus: float | None = None
    pids_max: int | None = DEFAULT_PIDS_MAX


@dataclass
class Layout:
    """Where this host's cgroups are: v2 (``unified`` only) or v1 (one dir per controller, ``unified`` optional)."""

    version: int  # 2 or 1
    unified: Path | None  # the cgroup2 mount (v2: the root; hybrid: /sys/fs/cgroup/unified)
    v1: dict[str, Path] = field(default_factory=dict)  # controller -> its v1 hierarchy's root


def detect(root: Path = CGROUP_ROOT) -> Layout | None:
    """The host's cgroup layout, or None when there is no usable hierarchy."""
    if (root / "cgroup.controllers").exists():
        return Layout(version=2, unified=root)
    v1 = {c: root / c for c in V1_CONTROLLERS if (root / c / "cgroup.procs").exists()}
    if "cpu" not in v1 and (root / "cpu,cpuacct" / "cgroup.procs").exists():
        v1["cpu"] = root / "cpu,cpuacct"
    unified = root / "unified" if (root / "unified" / "cgroup.procs").exists() else None
    if not v1:
        return Layout(version=2, unified=unified) if unified else None
    return Layout(version=1, unified=unified, v1=v1)


@dataclass
class JobCgroup:
    """One attempt's group: a directory per hierarchy (the same relative path in each)."""

    layout: Layout
    name: str  # relative path, e.g. "gpuq/job-1.1.0"

    def dirs(self) -> list[Path]:
        """Every directory of the group (v1 controllers first, the unified one last)."""
        out = [root / self.name for root in self.layout.v1.values()]
        if self.layout.unified is not None:
            out.append(self.layout.unified / self.name)
        return out

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes itself into to join the group."""
        return [str(d / "cgroup.procs") for d in self.dirs()]

    def _v1(self, controller: str) -> Path | None:
        root = self.layout.v1.get(controller)
        return None if root is None else root / self.name

    def create(self, limits: Limits) -> None:
        """Make the directories and set the limits; on any failure nothing is left behind."""
        try:
            for d in self.dirs():
                d.mkdir(parents=True, exist_ok=True)
            if self.layout.version == 2:
                self._limit_v2(limits)
            else:
                self._limit_v1(limits)
        except (CgroupError, OSError) as exc:
            self.remove()
            raise CgroupError(str(exc)) from exc

    def _limit_v2(self, limits: Limits) -> None:
        assert self.layout.unified is not None
        group = self.layout.unified / self.name
        wanted = {"memory", "cpu", "pids"}
        # Enable the controllers on the way down (root -> parent), as v2 requires.
        cursor = self.layout.unified
        for part in Path(self.name).parts[:-1]:
            available = set((cursor / "cgroup.controllers").read_text().split())
            missing = wanted - available
            if missing:
                raise CgroupError(f"cgroup controllers {sorted(missing)} not available in {cursor}")
            _write(cursor / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
            cursor = cursor / part
        if limits.memory_mib is not None:
            _write(group / "memory.max", str(limits.memory_mib * 1024 * 1024))
            if (group / "memory.swap.max").exists():
                _write(group / "memory.swap.max", "0")
        if limits.cpus is not None:
            _write(group / "cpu.max", f"{max(1000, round(limits.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        if limits.pids_max is not None:
            _write(group / "pids.max", str(limits.pids_max))

    def _limit_v1(self, limits: Limits) -> None:
        memory, cpu, pids = self._v1("memory"), self._v1("cpu"), self._v1("pids")
        if limits.memory_mib is not None:
            if memory is None:
                raise CgroupError("no v1 memory controller")
            limit = str(limits.memory_mib * 1024 * 1024)
            _write(memory / "memory.limit_in_bytes", limit)
            if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: memory + swap = memory
                _write(memory / "memory.memsw.limit_in_bytes", limit)
            with contextlib.suppress(CgroupError):
                _write(memory / "memory.swappiness", "0")
        if limits.cpus is not None:
            if cpu is None:
                raise CgroupError("no v1 cpu controller")
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(max(1000, round(limits.cpus * CPU_PERIOD_US))))
        if limits.pids_max is not None:
            if pids is None:
                raise CgroupError("no v1 pids controller")
            _write(pids / "pids.max", str(limits.pids_max))

    def oom_kills(self) -> int:
        """How many processes of the group the kernel killed for memory."""
        if self.layout.version == 2:
            assert self.layout.unified is not None
            return _read_key(self.layout.unified / self.name / "memory.events", "oom_kill")
        memory = self._v1("memory")
        return 0 if memory is None else _read_key(memory / "memory.oom_control", "oom_kill")

    def pids(self) -> set[int]:
        """Every process in the group (any hierarchy)."""
        out: set[int] = set()
        for d in self.dirs():
            with contextlib.suppress(OSError, ValueError):
                out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return out

    def kill(self, *, timeout_s: float = 5.0) -> bool:
        """SIGKILL the whole group (``cgroup.kill`` where there is one); True once it is empty."""
        kill_file = None if self.layout.unified is None else self.layout.unified / self.name / "cgroup.kill"
        deadline = time.monotonic() + timeout_s
        while True:
            members = self.pids()
            if not members:
                return True
            if kill_file is not None and kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the directories (idempotent)."""
        if not any(d.exists() for d in self.dirs()):
            return
        self.kill()
        for d in self.dirs():
            for _ in range(50):  # a killed process leaves the group a moment after it is reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


@dataclass(frozen=True)
class Probe:
    """Whether this host can limit attempts with cgroups; ``note`` says why not (or which layout)."""

    mode: str  # ENFORCED or ENV_ONLY
    note: str
    layout: Layout | None = None
    parent: str = DEFAULT_PARENT


def probe(parent: str = DEFAULT_PARENT, root: Path = CGROUP_ROOT) -> Probe:
    """Try to create (and remove) a test group with every limit under ``parent``."""
    layout = detect(root)
    if layout is None:
        return Probe(ENV_ONLY, f"no cgroup hierarchy under {root}")
    test = JobCgroup(layout, f"{parent}/probe-{os.getpid()}")
    try:
        test.create(Limits(memory_mib=64, cpus=0.5, pids_max=64))
    except CgroupError as exc:
        return Probe(ENV_ONLY, f"cannot write cgroups ({exc})", parent=parent)
    test.remove()
    kind = "v2" if layout.version == 2 else "v1" + ("+unified" if layout.unified else "")
    return Probe(ENFORCED, f"cgroup {kind} under {parent}", layout=layout, parent=parent)
