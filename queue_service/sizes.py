"""Human sizes for the CLI: ``10GiB`` -> 10240 MiB."""

from __future__ import annotations

import re

_UNITS_MIB = {
    "": 1, "m": 1, "mi": 1, "mib": 1, "mb": 1000**2 / 1024**2,
    "g": 1024, "gi": 1024, "gib": 1024, "gb": 1000**3 / 1024**2,
    "t": 1024**2, "ti": 1024**2, "tib": 1024**2, "tb": 1000**4 / 1024**2,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size_mib(text: str) -> int:
    """Parse ``512``, ``512MiB``, ``10GiB``, ``1.5G``, ``8GB`` to whole MiB (no unit = MiB)."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS_MIB:
        raise ValueError(f"cannot read size {text!r} (examples: 512MiB, 10GiB, 1.5G)")
    value = float(match.group(1)) * _UNITS_MIB[match.group(2).lower()]
    mib = round(value)
    if mib < 1:
        raise ValueError(f"size {text!r} is less than 1 MiB")
    return mib
