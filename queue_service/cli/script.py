"""Job scripts for ``gpuq submit job.sh``: ``#GPUQ`` directives, the script's argv, durations.

Like ``#SBATCH``: the directives are the comment lines at the top of the
script (after the ``#!`` line), each ``#GPUQ`` followed by ``gpuq submit``
flags exactly as on the command line (``#GPUQ --gpus 1 --time-limit 2h``).
The first line that is neither blank nor a comment ends them; a ``#GPUQ``
below it is ordinary text. Flags given to ``gpuq submit`` win over the
script's.

The job runs the script through its ``#!`` interpreter (``/bin/sh`` when it
has none), so it need not be executable; it is read on the node when the
job starts, from the path it had at submit (absolute), as on a shared
filesystem.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DIRECTIVE = "#GPUQ"
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # a job name the API takes (schemas.jobs.NAME)
MAX_HEADER_LINES = 1000  # directives are at the top; a huge file is not read to its end


class ScriptError(ValueError):
    """A job script that cannot be read, or a directive line that does not parse."""


@dataclass(frozen=True)
class Directive:
    """One ``#GPUQ`` line: where it is and its flags, split as a shell would."""

    line_no: int
    text: str
    args: list[str]


def is_script(first_arg: str) -> bool:
    """True if ``first_arg`` is a job script: an existing file that starts with ``#!`` or has ``#GPUQ`` lines."""
    path = Path(first_arg)
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return False
    return head.startswith(b"#!") or any(line.lstrip().startswith(DIRECTIVE.encode())
                                         for line in head.splitlines())


def directives(path: Path) -> list[Directive]:
    """The ``#GPUQ`` lines of the script's header, each split into its flags."""
    try:
        lines = path.read_text(errors="replace").splitlines()[:MAX_HEADER_LINES]
    except OSError as exc:
        raise ScriptError(f"cannot read job script {path}: {exc.strerror or exc}") from exc
    found = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if number == 1 and line.startswith("#!"):
            continue
        if not line:
            continue
        if not line.startswith("#"):
            break  # the script proper begins: no directives below it
        if line.startswith(DIRECTIVE) and (len(line) == len(DIRECTIVE) or line[len(DIRECTIVE)].isspace()):
            rest = line[len(DIRECTIVE):]
            try:
                args = shlex.split(rest, comments=True)
            except ValueError as exc:
                raise ScriptError(f"{path}:{number}: {line!r}: {exc}") from exc
            found.append(Directive(number, line, args))
    return found


def argv(path: Path, args: list[str]) -> list[str]:
    """The job's command: the script's interpreter (from ``#!``, else ``/bin/sh``), its absolute path, ``args``."""
    script = str(path.resolve())
    try:
        with path.open("rb") as handle:
            first = handle.readline(4096).decode(errors="replace").strip()
    except OSError as exc:
        raise ScriptError(f"cannot read job script {path}: {exc.strerror or exc}") from exc
    interpreter = shlex.split(first[2:]) if first.startswith("#!") else []
    return [*(interpreter or ["/bin/sh"]), script, *args]


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?$")
_UNIT_S = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> int:
    """Seconds from ``3600``, ``90s``, ``30m``, ``2h``, ``1.5h``, ``1d``, ``MM:SS``, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    value = text.strip().lower()
    match = _DURATION.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        days, _, clock = value.rpartition("-") if "-" in value else ("", "", value)
        parts = clock.split(":")
        if not (2 <= len(parts) <= 3) or not all(p.isdigit() for p in parts) or (days and not days.isdigit()):
            raise ValueError(f"{text!r} is not a duration (e.g. 3600, 90s, 30m, 2h, 1d, 1:30:00, 2-00:00:00)")
        numbers = [int(p) for p in parts]
        if len(numbers) == 2:
            numbers.insert(0, 0)
        seconds = (int(days or 0) * 24 + numbers[0]) * 3600 + numbers[1] * 60 + numbers[2]
    if seconds < 1:
        raise ValueError(f"{text!r}: a time limit is at least 1 second")
    return round(seconds)
