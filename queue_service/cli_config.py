"""Where the CLI finds its server: the client config that ``gpuq serve`` writes and ``gpuq`` reads.

``gpuq serve`` records the URL it listens on and its admin token file in two
places: ``DATA_DIR/client.json`` (so ``GPUQ_DATA_DIR=... gpuq jobs`` talks to
the server of that data dir) and ``$XDG_CONFIG_HOME/gpuq/client.json``
(default ``~/.config/gpuq/client.json``: the server started last, for a plain
``gpuq jobs`` in another shell). ``GPUQ_CLIENT_CONFIG`` names another file for
the second.

The CLI resolves, first match wins:

1. the server: ``--server``, ``GPUQ_SERVER_URL``, the data dir's config (when
   ``GPUQ_DATA_DIR`` is set), the user's config, ``http://127.0.0.1:8421``;
2. the token: ``--token``, ``GPUQ_TOKEN``, the token file named by the config
   that gave the server, the admin token of the data dir.

A token file is only read for the server its config names, so a token never
goes to a server it was not made by.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

CLIENT_FILE = "client.json"


@dataclass(frozen=True)
class ServerRecord:
    """One running server as ``gpuq serve`` recorded it."""

    server_url: str
    token_file: str | None = None
    data_dir: str | None = None


def user_config_path() -> Path:
    """``GPUQ_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/gpuq/client.json`` (``~/.config`` by default)."""
    explicit = os.environ.get("GPUQ_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpuq" / CLIENT_FILE


def client_url(host: str, port: int, scheme: str = "http") -> str:
    """The URL a client on this host uses for a server listening on ``host`` (a wildcard is loopback)."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in reach and not reach.startswith("["):
        reach = f"[{reach}]"
    return f"{scheme}://{reach}:{port}"


def record(data_dir: Path, server_url: str, token_file: Path | None) -> list[Path]:
    """Write the record to the data dir and to the user's config; return where it went (best effort)."""
    body = {"server_url": server_url, "token_file": str(token_file) if token_file else None,
            "data_dir": str(data_dir)}
    written = []
    for path in (data_dir / CLIENT_FILE, user_config_path()):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(body, indent=2) + "\n")
            tmp.replace(path)
            written.append(path)
        except OSError:  # a read-only home must not stop the server
            continue
    return written


def read(path: Path) -> ServerRecord | None:
    """The record at ``path``, or None if there is none or it is not one."""
    try:
        data = json.loads(path.read_text())
        return ServerRecord(server_url=str(data["server_url"]), token_file=data.get("token_file"),
                            data_dir=data.get("data_dir"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find(data_dir: Path | None) -> ServerRecord | None:
    """The record that names the server: the data dir's (if one was given), else the user's."""
    if data_dir is not None:
        found = read(data_dir / CLIENT_FILE)
        if found is not None:
            return found
    return read(user_config_path())
