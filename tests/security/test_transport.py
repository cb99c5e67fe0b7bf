"""TLS (gpuq serve --tls-cert/--tls-key) and per-token rate limits (429 + Retry-After)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from queue_service.api.ratelimit import Buckets
from queue_service.app import create_app
from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings
from tests.api.helpers import auth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_serve_over_tls_with_its_own_agent(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        Settings(data_dir=tmp_path / "x", tls_cert=cert)
    port = _free_port()
    settings = Settings(data_dir=tmp_path / "data", host="127.0.0.1", port=port, broker_url="memory://",
                        runtime="process", simulate_gpus="h100-80gb:1", tls_cert=cert, tls_key=key,
                        node_name="tls-node")
    assert settings.effective_server_url == f"https://127.0.0.1:{port}"
    server = EmbeddedServer(settings).start()
    try:
        assert server.admin_token_path is not None
        token = server.admin_token_path.read_text().strip()
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert)),
                          timeout=10) as client:
            assert client.get("/v1/health").json()["status"] == "ok"
            # The embedded agent reached the server over TLS and registered its node.
            deadline = time.monotonic() + 20
            while not client.get("/v1/nodes", headers=auth(token)).json():
                assert time.monotonic() < deadline, "the local agent never registered over TLS"
                time.sleep(0.2)
            assert [n["name"] for n in client.get("/v1/nodes", headers=auth(token)).json()] == ["tls-node"]
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # nor a certificate nobody trusts
            httpx.get(f"https://127.0.0.1:{port}/v1/health", timeout=5)
    finally:
        server.stop()


def test_buckets_refill_at_the_rate() -> None:
    now = [0.0]
    buckets = Buckets(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0, "buckets are per token"
    now[0] = 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0


def test_a_token_over_its_rate_gets_429_with_retry_after(ctx, actors) -> None:
    ctx.settings.rate_limit_per_s, ctx.settings.rate_limit_burst = 0.2, 3
    with TestClient(create_app(ctx, run_admitter=False)) as api:
        for _ in range(3):
            assert api.get("/v1/jobs", headers=auth(actors.viewer)).status_code == 200
        refused = api.get("/v1/jobs", headers=auth(actors.viewer))
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 5, refused.headers
        assert "rate limit" in refused.json()["detail"]
        assert api.get("/v1/jobs", headers=auth(actors.admin)).status_code == 200, "another token has its own"
        for _ in range(5):  # unknown tokens are limited too (guessing is slowed down)
            last = api.get("/v1/jobs", headers=auth("gpuq_guess"))
        assert last.status_code == 429
        assert api.get("/v1/health").status_code == 200, "no token: not counted"
