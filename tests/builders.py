"""Test builders: nodes, jobs and agent reports with one line each."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from workers.inventory import parse_simulation
from workers.messages import NodeInventory


def inventory(node_name: str, gpus: str = "", *, cpus: int = 32, memory_mib: int = 256 * 1024) -> NodeInventory:
    """A node with simulated GPUs, e.g. ``inventory("n1", "h100-80gb:2")``."""
    return NodeInventory(
        node_name=node_name, hostname=node_name, boot_id="boot-" + node_name, cpus=cpus, memory_mib=memory_mib,
        gpus=parse_simulation(gpus, node_name=node_name) if gpus else [],
        gpu_source="simulated" if gpus else "none", gpu_note="" if gpus else "no GPUs",
    )


def register(api: TestClient, agent_token: str, node_name: str, gpus: str = "", **kw: Any) -> dict:
    response = api.post(
        "/v1/agent/register", json={"inventory": inventory(node_name, gpus, **kw).to_dict()},
        headers={"Authorization": f"Bearer {agent_token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def job_body(**overrides: Any) -> dict:
    """A valid job body; ``resources`` defaults to one whole GPU."""
    body: dict[str, Any] = {"name": "t", "project": "default", "command": ["true"], "resources": {"gpus": 1}}
    body.update(overrides)
    return body
