"""The layers of docs/architecture.md, checked.

The rules are the import-linter contracts in pyproject.toml
(``[tool.importlinter]``); ``.ci/run`` and pre-commit run ``lint-imports`` on
them. The suite runs them too, so crossing a layer fails ``pytest`` locally,
and each contract gets a canary: the real import graph plus one import that
crosses its layer must break it. Without the canaries a contract whose module
names went stale (a package renamed, an ``ignore_imports`` line too wide)
would pass forever while checking nothing.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import configuration
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.protected import ProtectedContract

ROOT = Path(__file__).resolve().parents[1]
CONFIG: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
SESSION = {key: value for key, value in CONFIG.items() if key != "contracts"}
CONTRACTS: dict[str, dict[str, Any]] = {contract["id"]: contract for contract in CONFIG["contracts"]}
CONTRACT_TYPES = {"forbidden": ForbiddenContract, "protected": ProtectedContract}

# (contract id, importer, imported): one import per rule that must break it.
CROSSINGS = [
    ("partitioner-pure", "partitioner.place", "sqlalchemy"),
    ("partitioner-pure", "partitioner.types", "queue_service.db"),
    ("partitioner-pure", "partitioner.kernels", "workers.messages"),
    ("workers-below-service", "workers.runtime", "queue_service.db"),
    ("workers-below-service", "workers.messages", "sqlalchemy"),
    ("service-uses-wire-contract-only", "queue_service.services", "workers.runtime"),
    ("service-uses-wire-contract-only", "queue_service.api", "workers.gpu"),
    ("wire-contract-is-a-leaf", "workers.messages", "workers.runtime"),
    ("wire-contract-is-a-leaf", "workers.protocol", "docker"),
    ("admission-pure", "queue_service.admission", "sqlalchemy"),
    ("admission-pure", "queue_service.admission", "fastapi"),
    ("admission-pure", "queue_service.admission", "queue_service.db"),
    ("admission-pure", "queue_service.admission", "queue_service.services"),
    ("only-app-imports-api", "queue_service.db", "queue_service.api"),
    ("only-app-imports-api", "queue_service.cli", "queue_service.api"),
    ("services-below-api", "queue_service.services", "queue_service.api"),
    ("lifecycle-below-services", "queue_service.lifecycle", "queue_service.services"),
    ("lifecycle-below-services", "queue_service.lifecycle", "queue_service.api"),
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*SESSION["root_packages"], include_external_packages=True, cache_dir=None)


def _kept(contract_id: str, graph: grimp.ImportGraph) -> bool:
    configuration.configure()
    options = CONTRACTS[contract_id]
    contract = CONTRACT_TYPES[options["type"]](
        name=options["name"], session_options=SESSION, contract_options=options
    )
    return contract.check(copy.deepcopy(graph), verbose=False).kept


def test_lint_imports_passes() -> None:
    """The command CI runs: every contract kept, no contract invalid."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("contract_id", sorted(CONTRACTS))
def test_contract_kept(contract_id: str, graph: grimp.ImportGraph) -> None:
    assert _kept(contract_id, graph), f"{contract_id}: run `lint-imports` for the offending import chain"


@pytest.mark.parametrize(("contract_id", "importer", "imported"), CROSSINGS)
def test_crossing_a_layer_breaks_its_contract(
    contract_id: str, importer: str, imported: str, graph: grimp.ImportGraph
) -> None:
    assert importer in graph.modules and imported in graph.modules, "the canary names a module that moved"
    crossed = copy.deepcopy(graph)
    crossed.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert not _kept(contract_id, crossed)


def test_every_contract_has_a_canary() -> None:
    assert {contract_id for contract_id, _, _ in CROSSINGS} == set(CONTRACTS)


def test_entry_points_may_build_an_agent(graph: grimp.ImportGraph) -> None:
    """The one exception is the entry points: an agent import elsewhere still breaks the rule."""
    allowed = copy.deepcopy(graph)
    allowed.add_import(importer="queue_service.cli.server", imported="workers.runtime", line_number=1, line_contents="")
    assert _kept("service-uses-wire-contract-only", allowed)
    allowed.add_import(importer="queue_service.dispatch", imported="workers.runtime", line_number=1, line_contents="")
    assert not _kept("service-uses-wire-contract-only", allowed)
