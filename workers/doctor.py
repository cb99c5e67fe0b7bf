"""The GPU acceptance check (``gpuq doctor``, ``pytest -m gpu``): does this host give block jobs what gpuq promises?

Run once on a new GPU host, and wherever a real GPU is at hand. One line per
check: ``ok``, ``FAIL`` or ``not available here: <why>`` (a tool or a GPU this
host lacks is not a failure, but nothing it would have verified is claimed):

1. ``nvml-inventory``: what NVML reports (the agent's probe) matches
   ``nvidia-smi -q -x``: the same GPUs by UUID, names, memory, MIG mode;
2. ``mps-daemon``: an MPS control daemon starts for one GPU (or MIG device)
   with its own pipe and log directories, and stops again;
3. ``mps-compute``: a CUDA client (numba.cuda, CuPy or PyTorch, whichever is
   installed) limited to 25 % of the threads runs a compute-bound kernel at
   most ``MAX_SPEED_AT_25`` (~35 %) of the speed of one at 100 %, both under
   that daemon;
4. ``mps-memory``: under a pinned device memory limit an allocation below it
   succeeds and one above it fails (and both succeed without the limit);
5. ``docker-isolation``: with Docker and the NVIDIA container toolkit, a
   container given one GPU by UUID sees only that GPU.

It never changes MIG mode, never resets a GPU and leaves nothing running:
the daemon it starts is stopped (``finally``), clients run with a timeout and
are killed past it, the container is removed. The whole run stays under
``BUDGET_S`` (8 minutes); each check has its own timeout. No service code is
imported: it runs on any agent host.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.gpu.mps import DEFAULT_BINARY, MpsControl, MpsError, binary_missing
from workers.gpu.nvml import probe
from workers.messages import GpuInfo

__all__ = [
    "BUDGET_S",
    "CHECKS",
    "FAIL",
    "MAX_SPEED_AT_25",
    "NOT_AVAILABLE",
    "OK",
    "CheckResult",
    "Host",
    "check_docker_isolation",
    "check_mps_compute",
    "check_mps_daemon",
    "check_mps_memory",
    "check_nvml_inventory",
    "format_result",
    "run_checks",
]

OK = "ok"
FAIL = "FAIL"
NOT_AVAILABLE = "not available here"
BUDGET_S = 480.0  # the whole run
CLIENT_TIMEOUT_S = 120.0  # one CUDA client process
MAX_SPEED_AT_25 = 0.35  # a 25 % client may run at most this fraction of a 100 % one's speed
MEMORY_LIMIT_MIB = 1024  # the pinned memory limit of the memory check
MIB = 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict: ``ok``, ``FAIL`` or ``not available here``, and what it saw."""

    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def format_result(result: CheckResult) -> str:
    """``<name>  ok: …`` / ``<name>  FAIL: …`` / ``<name>  not available here: <why>``: one line."""
    return f"{result.name:<17} {result.status}: {result.detail}"


@dataclass
class Host:
    """What the checks share: the probe, the device to test, the CUDA backend, one MPS daemon (lazily)."""

    mps_binary: str = DEFAULT_BINARY
    nvidia_smi: str = "nvidia-smi"
    deadline: float = field(default_factory=lambda: time.monotonic() + BUDGET_S)
    _gpus: list[GpuInfo] | None = None
    _note: str = ""
    _backend: str | None = None

    @property
    def gpus(self) -> list[GpuInfo]:
        if self._gpus is None:
            result = probe()
            self._gpus, self._note = list(result.gpus), result.note
        return self._gpus

    def no_gpu(self) -> str:
        """Why there is nothing to test ("" when NVML sees a GPU)."""
        return "" if self.gpus else f"no GPU ({self._note or 'NVML reports none'})"

    def device(self) -> str:
        """The UUID the MPS checks use: the first GPU not in MIG mode, else the first MIG device ("" if none)."""
        for gpu in self.gpus:
            if not gpu.mig_enabled:
                return gpu.uuid
        for gpu in self.gpus:
            if gpu.mig_devices:
                return gpu.mig_devices[0].uuid
        return ""

    def sm_count(self, uuid: str) -> int:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu.sm_count
            for mig in gpu.mig_devices:
                if mig.uuid == uuid:
                    return mig.sm_count
        return 0

    def backend(self) -> str:
        """The first CUDA client library importable here ("" if none)."""
        if self._backend is None:  # found, not imported (a client process imports it; its errors are reported)
            self._backend = next((n for n in ("numba", "cupy", "torch") if importlib.util.find_spec(n)), "")
        return self._backend

    def left_s(self) -> float:
        return self.deadline - time.monotonic()


def _na(name: str, why: str) -> CheckResult:
    return CheckResult(name, NOT_AVAILABLE, why)


# -- 1. NVML vs nvidia-smi -----------------------------------------------------------------------


def smi_inventory(xml_text: str) -> list[dict[str, Any]]:
    """The GPUs of ``nvidia-smi -q -x`` output: uuid, name, memory_mib, mig_enabled (None: not MIG-capable)."""
    root = ET.fromstring(xml_text)
    out = []
    for gpu in root.findall("gpu"):
        total = (gpu.findtext("fb_memory_usage/total") or "0").split()[0]
        mig = (gpu.findtext("mig_mode/current_mig") or "N/A").strip()
        out.append({
            "uuid": (gpu.findtext("uuid") or "").strip(),
            "name": (gpu.findtext("product_name") or "").strip(),
            "memory_mib": int(total) if total.isdigit() else 0,
            "mig_enabled": None if mig in ("N/A", "") else mig.lower() == "enabled",
        })
    return out


def compare_inventory(nvml: list[GpuInfo], smi: list[dict[str, Any]]) -> list[str]:
    """What differs between the NVML probe and nvidia-smi (empty: they agree)."""
    problems = []
    by_uuid = {g["uuid"]: g for g in smi}
    if len(nvml) != len(smi):
        problems.append(f"NVML sees {len(nvml)} GPUs, nvidia-smi {len(smi)}")
    for gpu in nvml:
        other = by_uuid.get(gpu.uuid)
        if other is None:
            problems.append(f"{gpu.uuid} is not in nvidia-smi's list")
            continue
        if other["name"] and other["name"] != gpu.name:
            problems.append(f"{gpu.uuid}: name {gpu.name!r} (NVML) vs {other['name']!r} (nvidia-smi)")
        if other["memory_mib"] and abs(other["memory_mib"] - gpu.memory_mib) > 0.02 * other["memory_mib"]:
            problems.append(f"{gpu.uuid}: memory {gpu.memory_mib} MiB (NVML) vs {other['memory_mib']} MiB (nvidia-smi)")
        if other["mig_enabled"] is not None and other["mig_enabled"] != gpu.mig_enabled:
            problems.append(f"{gpu.uuid}: MIG mode {gpu.mig_enabled} (NVML) vs {other['mig_enabled']} (nvidia-smi)")
    return problems


def check_nvml_inventory(host: Host) -> CheckResult:
    name = "nvml-inventory"
    if host.no_gpu():
        found = "found" if shutil.which(host.nvidia_smi) or os.path.exists(host.nvidia_smi) else "not found"
        return _na(name, f"{host.no_gpu()}; {host.nvidia_smi}: {found}")
    if shutil.which(host.nvidia_smi) is None and os.sep not in host.nvidia_smi:
        return _na(name, f"{host.nvidia_smi} not found on PATH")
    try:
        proc = subprocess.run([host.nvidia_smi, "-q", "-x"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult(name, FAIL, f"nvidia-smi -q -x did not run: {exc}")
    if proc.returncode != 0:
        return CheckResult(name, FAIL, f"nvidia-smi -q -x exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    try:
        smi = smi_inventory(proc.stdout)
    except ET.ParseError as exc:
        return CheckResult(name, FAIL, f"nvidia-smi -q -x printed no valid XML: {exc}")
    problems = compare_inventory(host.gpus, smi)
    if problems:
        return CheckResult(name, FAIL, "; ".join(problems))
    summary = ", ".join(f"{g.name} {g.uuid} {g.memory_mib} MiB{' MIG' if g.mig_enabled else ''}" for g in host.gpus)
    return CheckResult(name, OK, f"{len(host.gpus)} GPU(s) agree: {summary}")


# -- 2. the MPS daemon -----------------------------------------------------------------------------


@contextlib.contextmanager
def mps_daemon(host: Host, uuid: str) -> Iterator[tuple[MpsControl, Path]]:
    """A daemon for ``uuid`` under a temporary root, stopped (and the root removed) on the way out."""
    root = Path(tempfile.mkdtemp(prefix="gpuq-doctor-mps-"))
    os.chmod(root, 0o755)
    control = MpsControl(root=root, binary=host.mps_binary, isolate_shm=False, start_timeout_s=20.0)
    try:
        control.ensure_started(uuid)
        yield control, root
    finally:
        try:
            control.stop(uuid)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _mps_unavailable(host: Host) -> str:
    if host.no_gpu():
        return f"{host.no_gpu()}; {binary_missing(host.mps_binary) or host.mps_binary + ': found'}"
    if not host.device():
        return "no GPU outside MIG mode and no MIG device to run a daemon for"
    return binary_missing(host.mps_binary)


def check_mps_daemon(host: Host) -> CheckResult:
    name = "mps-daemon"
    why = _mps_unavailable(host)
    if why:
        return _na(name, why)
    uuid = host.device()
    try:
        with mps_daemon(host, uuid) as (control, _root):
            if not control.is_running(uuid):
                return CheckResult(name, FAIL, f"started for {uuid} but its control pipe is not up")
            pipe = control.daemon(uuid).pipe_dir
        if control.is_running(uuid):
            return CheckResult(name, FAIL, f"the daemon of {uuid} still runs after quit")
    except MpsError as exc:
        return CheckResult(name, FAIL, str(exc))
    return CheckResult(name, OK, f"started and stopped for {uuid} (own pipe dir {pipe.name} under a temp root)")


# -- 3. and 4. CUDA clients under MPS ------------------------------------------------------------

# One client process: compute-bound kernel timing, then allocations. Prints one JSON line.
CLIENT = r'''
import json, sys, time
backend, iters, blocks, probes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
out = {"backend": backend}
MIB = 1024 * 1024
if backend == "numba":
    import numpy as np
    from numba import cuda, float32
    @cuda.jit
    def burn(a, n):
        i = cuda.grid(1)
        x = float32(i % 7) * float32(1e-3)
        y = float32(1.0)
        for _ in range(n):
            x = x * float32(0.9999) + float32(0.5)
            y = y * float32(1.0001) - x * float32(1e-7)
        a[i] = x + y
    threads = 256
    arr = cuda.device_array(blocks * threads, dtype=np.float32)
    burn[blocks, threads](arr, 16); cuda.synchronize()
    def run(n):
        t = time.perf_counter(); burn[blocks, threads](arr, n); cuda.synchronize(); return time.perf_counter() - t
    def alloc(mib):
        try:
            b = cuda.device_array(mib * MIB, dtype=np.uint8); b[:1].copy_to_host(); del b; return True
        except Exception as exc:
            return str(exc)[:200]
elif backend == "cupy":
    import cupy as cp
    k = cp.RawKernel(r"""
    extern "C" __global__ void burn(float* a, int n) {
        int i = blockDim.x * blockIdx.x + threadIdx.x; float x = (i % 7) * 1e-3f, y = 1.0f;
        for (int k = 0; k < n; k++) { x = x * 0.9999f + 0.5f; y = y * 1.0001f - x * 1e-7f; }
        a[i] = x + y; }""", "burn")
    threads = 256
    arr = cp.zeros(blocks * threads, dtype=cp.float32)
    k((blocks,), (threads,), (arr, cp.int32(16))); cp.cuda.Device().synchronize()
    def run(n):
        t = time.perf_counter(); k((blocks,), (threads,), (arr, cp.int32(n))); cp.cuda.Device().synchronize()
        return time.perf_counter() - t
    def alloc(mib):
        try:
            b = cp.empty(mib * MIB, dtype=cp.uint8); b[:1].get(); del b
            cp.get_default_memory_pool().free_all_blocks(); return True
        except Exception as exc:
            return str(exc)[:200]
else:
    import torch
    dev = torch.device("cuda:0")
    m = torch.randn(4096, 4096, device=dev)
    torch.cuda.synchronize()
    def run(n):
        t = time.perf_counter()
        for _ in range(max(1, n // 20000)):
            m2 = m @ m
        torch.cuda.synchronize(); return time.perf_counter() - t
    def alloc(mib):
        try:
            b = torch.empty(mib * MIB, dtype=torch.uint8, device=dev); b[:1].cpu(); del b
            torch.cuda.empty_cache(); return True
        except Exception as exc:
            return str(exc)[:200]
if iters:
    run(iters)
    out["seconds"] = min(run(iters) for _ in range(2))
out["alloc"] = {str(mib): alloc(mib) for mib in probes}
print(json.dumps(out))
'''


def run_client(host: Host, env: dict[str, str], *, iters: int, blocks: int, probes: list[int]) -> dict[str, Any]:
    """One CUDA client in its own process with ``env``; its JSON answer, or ``{"error": …}``."""
    timeout = max(10.0, min(CLIENT_TIMEOUT_S, host.left_s() - 5))
    full = {**os.environ, **env}
    try:
        proc = subprocess.run([sys.executable, "-c", CLIENT, host.backend(), str(iters), str(blocks),
                               json.dumps(probes)], env=full, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"the CUDA client did not finish in {timeout:.0f}s"}
    line = (proc.stdout.strip().splitlines() or [""])[-1]
    try:
        answer = json.loads(line)
    except ValueError:
        return {"error": f"the CUDA client exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"}
    return answer if isinstance(answer, dict) else {"error": f"unexpected answer {line[:200]}"}


def _client_env(control: MpsControl, uuid: str, *, percent: int, limit_mib: int | None = None) -> dict[str, str]:
    d = control.daemon(uuid)
    env = {"CUDA_VISIBLE_DEVICES": uuid, "CUDA_MPS_PIPE_DIRECTORY": str(d.pipe_dir),
           "CUDA_MPS_LOG_DIRECTORY": str(d.log_dir), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(percent)}
    if limit_mib is not None:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={limit_mib}M"
    return env


def _client_unavailable(host: Host) -> str:
    library = f"CUDA client library: {host.backend() or 'none (numba.cuda, cupy, torch)'}"
    if host.no_gpu():
        return f"{_mps_unavailable(host)}; {library}"
    return _mps_unavailable(host) or ("" if host.backend() else library)


def check_mps_compute(host: Host) -> CheckResult:
    name = "mps-compute"
    why = _client_unavailable(host)
    if why:
        return _na(name, why)
    uuid = host.device()
    blocks = max(1, host.sm_count(uuid)) * 32  # many blocks per SM: the kernel fills every SM it may use
    try:
        with mps_daemon(host, uuid) as (control, _root):
            iters = 2000
            full: dict[str, Any] = {}
            for _ in range(6):  # calibrate: the unlimited run takes about half a second
                full = run_client(host, _client_env(control, uuid, percent=100), iters=iters, blocks=blocks, probes=[])
                if "error" in full:
                    return CheckResult(name, FAIL, f"{host.backend()} client at 100 %: {full['error']}")
                if full["seconds"] >= 0.3:
                    break
                iters = int(iters * min(50.0, 0.5 / max(full["seconds"], 1e-4)))
            part = run_client(host, _client_env(control, uuid, percent=25), iters=iters, blocks=blocks, probes=[])
            if "error" in part:
                return CheckResult(name, FAIL, f"{host.backend()} client at 25 %: {part['error']}")
    except MpsError as exc:
        return CheckResult(name, FAIL, str(exc))
    speed = full["seconds"] / part["seconds"]  # relative speed of the 25 % client
    detail = (f"{host.backend()}: {blocks} blocks x {iters} iterations, 100 % {full['seconds']:.3f}s, "
              f"25 % {part['seconds']:.3f}s: {speed:.0%} of the unlimited speed (at most {MAX_SPEED_AT_25:.0%})")
    return CheckResult(name, OK if speed <= MAX_SPEED_AT_25 else FAIL, detail)


def check_mps_memory(host: Host) -> CheckResult:
    name = "mps-memory"
    why = _client_unavailable(host)
    if why:
        return _na(name, why)
    uuid = host.device()
    below, above = MEMORY_LIMIT_MIB // 2, MEMORY_LIMIT_MIB * 2
    try:
        with mps_daemon(host, uuid) as (control, _root):
            capped = run_client(host, _client_env(control, uuid, percent=100, limit_mib=MEMORY_LIMIT_MIB), iters=0,
                                blocks=1, probes=[below, above])
            free = run_client(host, _client_env(control, uuid, percent=100), iters=0, blocks=1, probes=[above])
    except MpsError as exc:
        return CheckResult(name, FAIL, str(exc))
    for answer in (capped, free):
        if "error" in answer:
            return CheckResult(name, FAIL, f"{host.backend()} client: {answer['error']}")
    got_below, got_above = capped["alloc"][str(below)], capped["alloc"][str(above)]
    unlimited = free["alloc"][str(above)]
    detail = (f"limit {MEMORY_LIMIT_MIB} MiB: {below} MiB {'ok' if got_below is True else got_below}, "
              f"{above} MiB {'allocated' if got_above is True else 'refused'}; without the limit {above} MiB "
              f"{'ok' if unlimited is True else unlimited}")
    passed = got_below is True and got_above is not True and unlimited is True
    return CheckResult(name, OK if passed else FAIL, detail)


# -- 5. Docker + the NVIDIA container toolkit ----------------------------------------------------


def check_docker_isolation(host: Host) -> CheckResult:
    name = "docker-isolation"
    if host.no_gpu():
        return _na(name, f"{host.no_gpu()}; a container cannot be given a GPU")
    try:
        import docker
        from docker.types import DeviceRequest
    except ImportError:
        return _na(name, "the docker SDK is not installed")
    try:
        client = docker.from_env(timeout=10)
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - any engine error: not here
        return _na(name, f"no Docker engine answers ({exc.__class__.__name__})")
    runtimes = set((info.get("Runtimes") or {}).keys())
    if "nvidia" not in runtimes and not info.get("CDISpecDirs"):
        return _na(name, f"no NVIDIA container toolkit (runtimes: {', '.join(sorted(runtimes)) or 'none'})")
    image = os.environ.get("GPUQ_DOCTOR_IMAGE") or next(
        (tag for img in client.images.list() for tag in img.tags), "")
    if not image:
        return _na(name, "no local image to run (set GPUQ_DOCTOR_IMAGE)")
    uuid = next((g.uuid for g in host.gpus if not g.mig_enabled), host.gpus[0].uuid)
    container = None
    try:
        container = client.containers.run(
            image, ["nvidia-smi", "-L"], detach=True, network_mode="none",
            environment={"NVIDIA_VISIBLE_DEVICES": uuid, "NVIDIA_DRIVER_CAPABILITIES": "utility"},
            device_requests=[DeviceRequest(device_ids=[uuid], capabilities=[["gpu", "utility"]])])
        status = container.wait(timeout=60)
        output = container.logs().decode(errors="replace")
    except Exception as exc:  # noqa: BLE001 - report whatever the engine said
        return CheckResult(name, FAIL, f"a container with {uuid} did not run in {image}: {exc}")
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)
    seen = [line.split("UUID:")[1].strip(" )") for line in output.splitlines() if "UUID: GPU-" in line]
    if status.get("StatusCode") != 0:
        return CheckResult(name, FAIL, f"nvidia-smi -L in {image} exited {status.get('StatusCode')}: {output[-200:]}")
    if seen != [uuid]:
        return CheckResult(name, FAIL, f"the container was given {uuid} but sees {seen or 'no GPU'}")
    return CheckResult(name, OK, f"a container given {uuid} sees only it ({image})")


CHECKS: tuple[Callable[[Host], CheckResult], ...] = (
    check_nvml_inventory, check_mps_daemon, check_mps_compute, check_mps_memory, check_docker_isolation,
)


def run_checks(host: Host | None = None, *, emit: Callable[[str], None] | None = None) -> list[CheckResult]:
    """Every check in order, each line emitted as it finishes; a check past the budget is not run."""
    host = host or Host()
    results = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", "-")
        if host.left_s() <= 10:
            result = _na(name, f"the {BUDGET_S:.0f}s budget ran out")
        else:
            try:
                result = check(host)
            except Exception as exc:  # noqa: BLE001 - one broken check does not hide the others
                result = CheckResult(name, FAIL, f"the check itself failed: {exc.__class__.__name__}: {exc}")
        results.append(result)
        if emit is not None:
            emit(format_result(result))
    return results
