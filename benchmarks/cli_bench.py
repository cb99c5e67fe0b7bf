"""``gpuq jobs`` wall time against a running ``gpuq serve``, beside the CLI of a baseline commit (prints figures).

    .venv/bin/python benchmarks/cli_bench.py [--runs 20] [--jobs 5] [--baseline COMMIT] [--smoke]

Starts a real ``gpuq serve`` (the embedded default: SQLite, in-process broker and agent, one simulated GPU)
in a temp dir with its own ``XDG_CONFIG_HOME``, so the client config ``gpuq serve`` writes is what the CLI
finds, as for a user; submits ``--jobs`` jobs (one runs, the rest queue) so the listing has rows. Then times
``python -m queue_service.cli jobs`` as a subprocess, from this tree and from a ``git worktree`` of the
baseline (default: the commit before the CLI's stdlib transport), alternating the two so both see the same
load. Both run the same interpreter with bytecode caching on (a pip-installed gpuq has its .pyc files;
``PYTHONDONTWRITEBYTECODE`` is dropped for the runs, after one warm-up each).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _worktree import REPO, checkout  # this folder's shared helper (the script's folder is on the path)

GOAL_S = 0.3  # issue 15: gpuq jobs against a running server, 2-core box


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def default_baseline() -> str:
    """The parent of the commit that added the CLI's stdlib transport (HEAD if there is none yet)."""
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", "queue_service/cli/transport.py"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return f"{added[-1]}~1" if added else "HEAD"


def api(url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.loads(answer.read() or b"{}"))


def start_server(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, str]:
    """``gpuq serve`` in ``tmp``; its URL and admin token, read from the client config it wrote."""
    log = (tmp / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "queue_service.cli", "serve", "--simulate-gpus", "h100-80gb:1"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    record = Path(env["XDG_CONFIG_HOME"]) / "gpuq" / "client.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gpuq serve exited {server.returncode}: {(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            found = json.loads(record.read_text())
            url, token = found["server_url"], Path(found["token_file"]).read_text().strip()
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                return server, url, token
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("gpuq serve did not answer within 90 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def one_run(tree: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "queue_service.cli", "jobs"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - started
    if done.returncode != 0 or not done.stdout.startswith("POS"):
        raise SystemExit(f"gpuq jobs in {tree} failed ({done.returncode}): {done.stderr[-1500:]}")
    return took


def check_tree(tree: Path, env: dict[str, str]) -> None:
    """``python -m`` in ``tree`` must import that tree's queue_service, not the editable install's."""
    where = subprocess.run([sys.executable, "-c", "import queue_service; print(queue_service.__file__)"], cwd=tree,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree} imports queue_service from {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each CLI")
    parser.add_argument("--jobs", type=int, default=5, help="jobs in the listing")
    parser.add_argument("--baseline", default=None, help="commit to compare with (default: before the fast path)")
    parser.add_argument("--smoke", action="store_true", help="3 runs each, 2 jobs: it works (CI)")
    args = parser.parse_args()
    runs, jobs = (3, 2) if args.smoke else (args.runs, args.jobs)
    baseline = args.baseline or default_baseline()
    commit = subprocess.run(["git", "rev-parse", "--short", baseline], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="gpuq-cli-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GPUQ_")
               and k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"XDG_CONFIG_HOME": str(tmp / "config"), "GPUQ_DATA_DIR": str(tmp / "data"),
                "GPUQ_PORT": str(free_port()), "HOME": str(tmp)}
        server = None
        with checkout(commit, prefix="gpuq-cli-bench-") as worktree:
            assert worktree is not None
            try:
                server, url, token = start_server(tmp, env)
                ids = [api(url, token, "POST", "/v1/jobs", {"name": f"bench-{i}", "command": ["sleep", "60"],
                                                             "resources": {"gpus": 1}})["id"] for i in range(jobs)]
                # The CLI finds the server by the user's client config alone, as `gpuq jobs` in another shell.
                cli_env = {k: v for k, v in env.items() if k != "GPUQ_DATA_DIR" and k != "GPUQ_PORT"}
                trees = {"this tree": REPO, f"baseline {commit}": worktree}
                for tree in trees.values():
                    check_tree(tree, cli_env)
                    one_run(tree, cli_env)  # warm-up: writes the bytecode, fills the page cache
                times: dict[str, list[float]] = {name: [] for name in trees}
                for _ in range(runs):
                    for name, tree in trees.items():
                        times[name].append(one_run(tree, cli_env))
                for job_id in ids:
                    api(url, token, "POST", f"/v1/jobs/{job_id}/cancel")
            finally:
                if server is not None:
                    stop_server(server)
    print(f"gpuq jobs against a running gpuq serve ({jobs} jobs listed), {runs} runs each, {os.cpu_count()} CPUs")
    for name, values in times.items():
        print(f"  {name:<22} median {statistics.median(values):.3f} s  p90 {pct(values, 0.9):.3f} s  "
              f"min {min(values):.3f} s")
    new, old = (statistics.median(v) for v in times.values())
    print(f"  speed-up {old / new:.1f}x; goal <= {GOAL_S} s: {'met' if new <= GOAL_S else 'NOT met'}")


if __name__ == "__main__":
    main()
