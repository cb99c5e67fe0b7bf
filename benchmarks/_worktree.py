"""The code of a baseline commit for a benchmark to measure beside this tree, the checkout left alone.

``checkout``: a ``git worktree`` of the commit (a whole tree, to run its server or CLI from), removed after.
``module_at``: one file of the commit loaded as a module of its own name, over this tree's other imports
(to time one function's old version in the same process, on the same data).

Scripts in this folder import it as ``_worktree`` (run as ``python benchmarks/x.py``, the folder is on the
path).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

__all__ = ["REPO", "checkout", "module_at"]

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def checkout(commit: str | None, *, prefix: str = "gpuq-base-") -> Iterator[Path | None]:
    """A ``git worktree`` of ``commit`` in a new temp folder named ``prefix...`` (removed after), or None."""
    if commit is None:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True,
                       capture_output=True)
        yield path
    finally:
        # --force: the run wrote bytecode and data into it
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def module_at(commit: str, path: str, name: str) -> ModuleType:
    """The file ``path`` (from the repository root) as it was at ``commit``, imported as module ``name``."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout
    where = Path(tempfile.mkdtemp(prefix="gpuq-bench-")) / f"{name}.py"
    where.write_text(source)
    spec = importlib.util.spec_from_file_location(name, where)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their class's module up while the class is built
    spec.loader.exec_module(module)
    return module
