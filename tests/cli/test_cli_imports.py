"""``gpuq`` commands that only talk HTTP import no heavy code: the CLI answers before numba could even load."""

from __future__ import annotations

import subprocess
import sys

from queue_service import bootstrap
from queue_service.cli import base

HEAVY = ("numba", "sqlalchemy", "matplotlib", "partitioner", "pydantic_settings", "queue_service.bootstrap")


def test_importing_the_cli_loads_no_heavy_module() -> None:
    code = ("import sys, queue_service.cli; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported by `import queue_service.cli`: {out}"


def test_the_cli_finds_the_admin_token_where_bootstrap_writes_it() -> None:
    assert base.ADMIN_TOKEN_FILE == bootstrap.ADMIN_TOKEN_FILE
