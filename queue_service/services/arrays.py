"""Job arrays (Slurm's ``--array``): ``0-99%8`` is tasks 0..99, at most 8 admitted or running at once.

Grammar: comma-separated items, each ``N`` or ``A-B`` or ``A-B:STEP``,
then optionally ``%LIMIT``. Indices are 0..``MAX_INDEX``, an array has at
most ``MAX_TASKS`` tasks, and a limit is at least 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TASKS = 1000  # like a batch: validated and created in one transaction
MAX_INDEX = 1_000_000
_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


class ArraySpecError(ValueError):
    """An ``--array`` spec that does not parse or is out of range (the message says which part)."""


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """The task indices, ascending, and the most tasks live at once (None: no limit)."""

    indices: tuple[int, ...]
    limit: int | None


def parse(spec: str) -> ArraySpec:
    """Parse ``0-99%8``-style specs; raises ``ArraySpecError`` naming what is wrong."""
    text, _, limit_text = spec.strip().partition("%")
    limit: int | None = None
    if limit_text:
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise ArraySpecError(f"array limit {limit_text!r} must be a whole number of at least 1 (as in 0-99%8)")
        limit = int(limit_text)
    indices: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item.strip())
        if match is None:
            raise ArraySpecError(f"array item {item!r} is not N, A-B or A-B:STEP")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3)) if match.group(3) is not None else 1
        if end < start or step < 1:
            raise ArraySpecError(f"array item {item!r}: the end must not be below the start, the step at least 1")
        if end > MAX_INDEX:
            raise ArraySpecError(f"array index {end} is above {MAX_INDEX}")
        if (end - start) // step + 1 + len(indices) > MAX_TASKS:
            raise ArraySpecError(f"an array has at most {MAX_TASKS} tasks")
        indices.update(range(start, end + 1, step))
    return ArraySpec(tuple(sorted(indices)), limit)
