"""``gpuq doctor`` without a GPU says, check by check, what it could not verify; its checks against stand-ins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from queue_service.cli import app
from workers.doctor import FAIL, NOT_AVAILABLE, OK, Host, check_mps_daemon, check_nvml_inventory, run_client
from workers.messages import GpuInfo

STUB_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "bin"
NAMES = ["nvml-inventory", "mps-daemon", "mps-compute", "mps-memory", "docker-isolation"]
GPU = GpuInfo(uuid="GPU-11111111-2222-3333-4444-555555555555", index=0, name="NVIDIA H100 80GB HBM3",
              model="h100-80gb", memory_mib=81559, sm_count=132)
SMI_XML = """<?xml version="1.0" ?>
<nvidia_smi_log><driver_version>580.65</driver_version><attached_gpus>1</attached_gpus>
<gpu id="00000000:19:00.0"><product_name>NVIDIA H100 80GB HBM3</product_name>
<uuid>GPU-11111111-2222-3333-4444-555555555555</uuid>
<mig_mode><current_mig>Disabled</current_mig><pending_mig>Disabled</pending_mig></mig_mode>
<fb_memory_usage><total>{total} MiB</total><reserved>500 MiB</reserved><used>1 MiB</used></fb_memory_usage>
</gpu></nvidia_smi_log>
"""


def _has_gpu() -> bool:
    from workers.gpu.nvml import probe

    return bool(probe().gpus)


@pytest.mark.skipif(_has_gpu(), reason="this host has a GPU: tests/gpu checks it for real")
def test_doctor_without_a_gpu_says_check_by_check_what_it_could_not_verify() -> None:
    result = CliRunner().invoke(app, ["doctor"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 0, result.output  # nothing failed: nothing could be checked
    assert [line.split()[0] for line in lines[:-1]] == NAMES, result.output
    for line in lines[:-1]:
        assert f" {NOT_AVAILABLE}: no GPU (" in line, line  # and why
    assert lines[-1] == "5 checks: 5 without failure"


def test_nvml_inventory_is_compared_with_nvidia_smi(tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    for total, status in ((81559, OK), (40960, FAIL)):
        smi.write_text(f"#!/bin/sh\ncat <<'XML'\n{SMI_XML.format(total=total)}XML\n")
        smi.chmod(0o755)
        result = check_nvml_inventory(Host(nvidia_smi=str(smi), _gpus=[GPU]))
        assert result.status == status, result
    assert "memory 81559 MiB (NVML) vs 40960 MiB (nvidia-smi)" in result.detail
    other = GpuInfo(**{**GPU.to_dict(), "uuid": "GPU-99999999-2222-3333-4444-555555555555"})
    result = check_nvml_inventory(Host(nvidia_smi=str(smi), _gpus=[other]))
    assert result.status == FAIL and "not in nvidia-smi's list" in result.detail


def test_mps_daemon_check_starts_and_stops_one_daemon(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", f"{STUB_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GPUQ_MPS_STUB_LOG", str(tmp_path / "calls.log"))
    result = check_mps_daemon(Host(_gpus=[GPU]))
    assert result.status == OK, result
    calls = (tmp_path / "calls.log").read_text()
    assert calls.count("args=[-d]") == 1 and "cmd=quit" in calls, "started once, stopped: nothing left running"
    missing = check_mps_daemon(Host(mps_binary="/nonexistent/nvidia-cuda-mps-control", _gpus=[GPU]))
    assert missing.status == NOT_AVAILABLE and "not found" in missing.detail


def test_the_cuda_client_runs_its_kernel_and_allocations_in_numbas_simulator() -> None:
    pytest.importorskip("numba")
    answer = run_client(Host(_backend="numba"), {"NUMBA_ENABLE_CUDASIM": "1"}, iters=3, blocks=1, probes=[1, 2])
    assert "error" not in answer, answer
    assert answer["backend"] == "numba" and answer["seconds"] > 0 and answer["alloc"] == {"1": True, "2": True}
