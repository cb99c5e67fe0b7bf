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

The ``GPUQ_*`` variables are read here rather than through ``queue_service.settings``: pydantic-settings and
pydantic take about 0.4 s to import, longer than a whole ``gpuq jobs`` may (tests/cli/test_cli_config.py
keeps the two readings equal).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

CLIENT_FILE = "client.json"

# Settings.host and Settings.port, the address `gpuq serve` listens on when nothing is configured.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8421

# The admin token's file name in the data dir (bootstrap.ADMIN_TOKEN_FILE; bootstrap imports SQLAlchemy).
ADMIN_TOKEN_FILE = "admin.token"


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


def env(name: str) -> str | None:
    """``GPUQ_<NAME>`` from the environment, any case (as pydantic-settings reads it); empty counts as unset."""
    wanted = f"GPUQ_{name}".upper()
    value = os.environ.get(wanted)
    if value is None:
        value = next((v for k, v in os.environ.items() if k.upper() == wanted), None)
    return value or None


def default_data_dir() -> Path:
    """``GPUQ_DATA_DIR``, else ``~/.local/share/gpuq`` (Settings.data_dir)."""
    given = env("DATA_DIR")
    return Path(given) if given else Path.home() / ".local" / "share" / "gpuq"


def local_url() -> str:
    """The URL of a server started with this environment: ``GPUQ_HOST``/``GPUQ_PORT``, https with a certificate."""
    port = env("PORT") or str(DEFAULT_PORT)
    if not port.isdigit():
        raise ValueError(f"GPUQ_PORT={port!r} is not a port number")
    return f"{'https' if env('TLS_CERT') else 'http'}://{env('HOST') or DEFAULT_HOST}:{port}"


@dataclass(frozen=True)
class Target:
    """The server a command talks to and the token it sends (None: no token found)."""

    server_url: str
    token: str | None


def resolve(server: str | None, token: str | None) -> Target:
    """The server and token, in the order the module's docstring gives (``server``/``token``: the flags)."""
    found = None
    url = server or env("SERVER_URL")
    if url is None:
        found = find(default_data_dir() if env("DATA_DIR") else None)
        url = found.server_url if found else local_url()
    return Target(server_url=url.rstrip("/"), token=token or env("TOKEN") or local_token(found))


def local_token(found: ServerRecord | None) -> str | None:
    """The token file the record names (the one for its server), else the data dir's admin token."""
    path = Path(found.token_file) if found is not None and found.token_file else default_data_dir() / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
