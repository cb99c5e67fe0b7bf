"""A Docker engine of the test's own: its own socket, data root, exec root and pid file.

The engine-restart fault test stops and restarts *this* dockerd, never the
host's (``/var/run/docker.pid`` is not read): a developer's containers and
a second test run on the same host are untouched. It runs with the flags
``.ci/docker-setup.sh`` uses (vfs storage, no iptables, no bridge: jobs use
``--network none``), and gets the registry-free test image by importing a
rootfs holding the host's static busybox.

Needs root and ``dockerd`` and ``/bin/busybox`` on the host; without them
the test is skipped with the reason (and fails in CI, where they are set up).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.faults.cluster import wait_for
from tests.services import DOCKER_TEST_IMAGE, missing

APPLETS = ["sh", "sleep", "cat", "echo", "env", "dd", "head", "tail", "true", "false", "ls", "mkdir", "rm", "kill",
           "ps", "id", "yes", "wc", "grep", "printf", "seq"]
BUSYBOX = Path("/bin/busybox")


class OwnDockerd:
    """``start`` / ``restart`` / ``stop`` one dockerd under a private directory; ``host`` is its DOCKER_HOST."""

    def __init__(self) -> None:
        # A short path: a unix socket's must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="gpuq-dockerd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.pid_file = self.root / "docker.pid"
        self.host = f"unix://{self.socket}"
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def start_or_skip(cls) -> OwnDockerd:
        """A started engine holding the test image, or a skip (a failure in CI) saying what is missing."""
        if os.geteuid() != 0:
            missing("Docker", "an engine of the test's own needs root")
        if shutil.which("dockerd") is None:
            missing("Docker", "no dockerd binary to start an engine of the test's own (apt-get install docker.io)")
        if not BUSYBOX.exists():
            missing("Docker", "no /bin/busybox for the test image (apt-get install busybox-static)")
        engine = cls()
        try:
            engine.start()
            engine.import_test_image()
        except BaseException:
            engine.stop()
            raise
        return engine

    def command(self) -> list[str]:
        return [
            "dockerd", "--host", self.host, "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pid_file),
            "--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none",
        ]

    def start(self, wait_s: float = 60.0) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"dockerd of the test did not come up:\n{tail}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=2)
        except Exception:  # noqa: BLE001 - not up yet
            return False
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001 - not up yet
            return False
        finally:
            client.close()

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=30)

    def import_test_image(self) -> None:
        """``tar -C rootfs -c . | docker import - gpuq-test-busybox:latest`` without the shell."""
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            folder = tarfile.TarInfo("bin")  # listed first: a folder the tar only implies is 0700 (exit 126)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
            for folder in ("tmp", "work", "proc", "sys", "dev", "etc"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
                tar.addfile(info)
        repository, _, tag = DOCKER_TEST_IMAGE.rpartition(":")
        client = self.client()
        try:
            client.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)
            client.images.get(DOCKER_TEST_IMAGE)
        finally:
            client.close()

    def kill_and_wait(self, timeout_s: float = 40.0) -> None:
        """SIGTERM this engine (only this one: the pid we started) and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop the engine and start it again on the same data root (containers stop: no live-restore)."""
        self.kill_and_wait()
        wait_for("the test's dockerd socket to go", lambda: not self.socket.exists() or not self._answers(), 10)
        self.start()

    def stop(self) -> None:
        """Stop the engine, its containers with it, and remove everything it kept."""
        self.kill_and_wait()
        subprocess.run(["umount", "-R", str(self.root / "exec")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
