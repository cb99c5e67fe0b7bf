"""What makes ``gpuq jobs`` answer fast keeps every behaviour: the stdlib client's errors, the env reading
that replaced Settings, one command module per command, options converted without pydantic."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import typer
from typer.testing import CliRunner

from queue_service import cli, cli_config
from queue_service.cli import base, coercion, transport
from queue_service.settings import Settings

SLOW = ("httpx", "pydantic", "pydantic_settings", "sqlalchemy", "numba", "matplotlib", "partitioner", "rich")


def _run_gpuq(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``gpuq ARGS`` in a fresh interpreter; its last stdout line lists the slow modules it imported."""
    code = ("import atexit, sys; atexit.register(lambda: print('LOADED:' + ','.join(m for m in "
            f"{SLOW!r} if m in sys.modules))); sys.argv = ['gpuq', *{args!r}]; "
            "from queue_service.cli import main; main()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gpuq_jobs_loads_no_slow_module_and_says_why_it_cannot_connect() -> None:
    done = _run_gpuq(["jobs", "--server", f"http://127.0.0.1:{_free_port()}", "--limit", "5"])
    assert done.returncode == 1
    assert "connection refused" in done.stderr and "is `gpuq serve` running?" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED:", done.stdout


def test_a_bad_option_value_is_a_usage_error_without_pydantic() -> None:
    done = _run_gpuq(["jobs", "--limit", "many"])
    assert done.returncode == 2 and "'many' is not a valid integer" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED:rich"  # typer's error panel; no pydantic


def _module_of(app: typer.Typer) -> str:
    """The module a group's commands come from (one of them; a group lives in one module)."""
    for info in app.registered_commands:
        assert info.callback is not None
        return str(info.callback.__module__)
    inner = app.registered_groups[0].typer_instance
    assert inner is not None
    return _module_of(inner)


def test_routes_name_the_module_of_every_command() -> None:
    registered: dict[str, str] = {}
    assert cli.app is base.app  # cli.app: every module loaded
    for info in base.app.registered_commands:
        assert info.callback is not None
        registered[info.name or info.callback.__name__.replace("_", "-")] = info.callback.__module__
    for group in base.app.registered_groups:
        assert group.name and group.typer_instance
        registered[group.name] = _module_of(group.typer_instance)
    assert {name: f"queue_service.cli.{module}" for name, module in cli.ROUTES.items()} == registered
    assert set(cli.ROUTES.values()) == set(cli.COMMANDS)


def test_a_module_of_one_command_still_routes(tmp_path: Path) -> None:
    """``gpuq doctor`` loads doctor.py alone: the app stays a group, ``doctor`` is the command's name."""
    done = _run_gpuq(["doctor", "--help"])
    assert done.returncode == 0, done.stderr
    assert "Usage: gpuq doctor" in done.stdout


@pytest.mark.parametrize("env", [
    {},
    {"GPUQ_HOST": "10.1.2.3", "GPUQ_PORT": "9000"},
    {"GPUQ_TLS_CERT": "/etc/c.pem", "GPUQ_TLS_KEY": "/etc/k.pem", "GPUQ_PORT": "443"},
    {"GPUQ_SERVER_URL": "http://q.example:1/", "GPUQ_TOKEN": "t0k", "GPUQ_DATA_DIR": "/srv/gpuq"},
    {"gpuq_data_dir": "/lower/case"},
])
def test_env_read_as_settings_reads_it(env: dict[str, str], monkeypatch) -> None:
    for key in [k for k in os.environ if k.upper().startswith("GPUQ_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert cli_config.default_data_dir() == settings.data_dir
    assert cli_config.env("TOKEN") == settings.token
    assert cli_config.env("SERVER_URL") == settings.server_url
    assert cli_config.local_url() == f"{settings.scheme}://{settings.host}:{settings.port}"
    defaults = (Settings.model_fields["host"].default, Settings.model_fields["port"].default)
    assert defaults == (cli_config.DEFAULT_HOST, cli_config.DEFAULT_PORT)


def test_a_bad_port_is_a_cli_message(monkeypatch) -> None:
    monkeypatch.setenv("GPUQ_PORT", "eighty")
    monkeypatch.setenv("GPUQ_CLIENT_CONFIG", "/nonexistent/client.json")
    monkeypatch.delenv("GPUQ_SERVER_URL", raising=False)
    with pytest.raises(typer.Exit):
        base.Api(None, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn
    seen: ClassVar[list[tuple[str, str, bytes, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, *, chunked: bool = False, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if chunked:
            for part in (body[:3], body[3:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)
        if close:
            self.close_connection = True

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b"", self.headers.get("Authorization", "")))
        if self.path.startswith("/v1/missing"):
            self._answer(404, json.dumps({"detail": "no such job"}).encode())
        elif self.path.startswith("/v1/broken"):
            self._answer(500, b"Internal Server Error")
        elif self.path.startswith("/v1/chunked"):
            self._answer(200, json.dumps({"data": [1, 2, 3]}).encode(), chunked=True)
        elif self.path.startswith("/v1/closing"):
            self._answer(200, b'{"ok": true}', close=True)
        elif self.path.startswith("/v1/dropping"):  # says keep-alive, then drops it (an idle timeout)
            self._answer(200, b'{"ok": true}')
            self.close_connection = True
        elif self.path.startswith("/v1/slow"):
            threading.Event().wait(2)
        else:
            self._answer(200, b'{"ok": true}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, body, self.headers.get("Content-Type", "")))
        self._answer(200, body)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _error(api: base.Api, path: str, capsys) -> str:
    with pytest.raises(typer.Exit) as ended:
        api.call("GET", path)
    assert ended.value.exit_code == 1
    return str(capsys.readouterr().err)


def test_the_client_speaks_json_sends_the_token_and_keeps_params(server: str) -> None:
    api = base.Api(server + "/", "secret")
    assert api.base == server
    assert api.call("GET", "/v1/jobs", params={"state": "queued", "limit": 5, "all": True, "x": None}) == {"ok": True}
    assert api.call("POST", "/v1/jobs", json={"name": "é"}) == {"name": "é"}
    assert api.call("GET", "/v1/chunked") == {"data": [1, 2, 3]}
    assert api.call("GET", "/v1/closing") == {"ok": True}  # the server closed: the next call opens anew
    assert api.call("GET", "/v1/jobs") == {"ok": True}
    assert api.call("GET", "/v1/projects/my team/usage") == {"ok": True}
    get, post = _Handler.seen[0], _Handler.seen[1]
    assert _Handler.seen[-1][1] == "/v1/projects/my%20team/usage"
    assert get[:2] == ("GET", "/v1/jobs?state=queued&limit=5&all=true&x=") and get[3] == "Bearer secret"
    assert json.loads(post[2]) == {"name": "é"} and post[3] == "application/json"


def test_errors_are_cli_messages(server: str, capsys) -> None:
    api = base.Api(server, "secret")
    assert "gpuq: 404: no such job" in _error(api, "/v1/missing", capsys)
    assert "gpuq: 500: Internal Server Error" in _error(api, "/v1/broken", capsys)
    api.http = transport.Client(server, timeout=0.3)
    timed_out = _error(api, "/v1/slow", capsys)
    assert "no answer within 0.3 s" in timed_out and "running?" not in timed_out  # it runs: it is slow


def test_a_connection_the_server_dropped_is_opened_again(server: str) -> None:
    client = transport.Client(server)
    assert client.get("/v1/dropping").status_code == 200
    assert client._socket is not None  # the answer said keep-alive
    assert client.get("/v1/jobs").json() == {"ok": True}
    assert [path for _method, path, _body, _auth in _Handler.seen] == ["/v1/dropping", "/v1/jobs"]


def test_a_server_that_does_not_speak_http_is_a_cli_message(capsys) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        threading.Thread(target=answer, daemon=True).start()
        api = base.Api(f"http://127.0.0.1:{listener.getsockname()[1]}", None)
        assert "not an HTTP answer: b'SSH-2.0" in _error(api, "/v1/jobs", capsys)


def test_not_an_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        transport.Client("ftp://host/")


@pytest.mark.parametrize(("annotation", "given", "expected"), [
    (int, "42", 42), (float, "2.5", 2.5), (str, "x", "x"), (bool, "yes", True), (bool, "off", False),
    (list[str], ("a", "b"), ["a", "b"]), (list[int], ["1"], [1]),
])
def test_plain_conversions(annotation: object, given: object, expected: object) -> None:
    found = coercion.converter(annotation)
    assert found is not None
    convert, is_list = found
    assert (([convert(v) for v in given] if is_list else convert(given)) == expected)  # type: ignore[attr-defined]


def test_other_annotations_are_left_to_typer() -> None:
    assert coercion.converter(Path) is None
    assert coercion.converter(list[Path]) is None
    with pytest.raises(ValueError, match="not a valid integer"):
        coercion.to_int(True)


def test_the_cli_tests_convert_as_gpuq_does(gpuq) -> None:
    """The wording is the plain conversion's (pydantic's says "Input should be a valid number")."""
    out = CliRunner().invoke(cli.app, ["quota", "set", "alpha", "--guaranteed", "lots"])
    assert out.exit_code == 2 and "'lots' is not a valid float" in out.output
    done = gpuq("class", "set", "nightly", "--value", "7", "--grace", "2.5", "--json")
    assert done.exit_code == 0, done.output
    made = json.loads(done.output)
    assert (made["value"], made["grace_s"]) == (7, 2.5)
