"""Log shipping: an attempt's stdout and stderr files, sent to the service in chunks from where it left off.

The runtime brings the files up to date (``collect_logs``: a no-op for
processes, which write there themselves); the shipper sends what is new,
in chunks of ``LOG_CHUNK_BYTES``, each at its byte offset, so a chunk sent
twice is not stored twice. Shipping is best effort while the attempt runs
and tried once more, with a warning on failure, before its exit is reported.
"""

from __future__ import annotations

import logging

from workers.agent.runs import Run
from workers.client import Refused, ServiceClient, ServiceUnavailable

log = logging.getLogger(__name__)

LOG_CHUNK_BYTES = 64 * 1024


class LogShipper:
    """Sends the new bytes of runs' log files; the offsets live on each ``Run`` (``run.shipped``)."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def ship(self, run: Run, *, final: bool = False) -> None:
        if run.handle is not None and run.runtime is not None:
            try:
                run.runtime.collect_logs(run.handle, stdout_path=run.stdout_path, stderr_path=run.stderr_path)
            except Exception:
                log.debug("collecting logs of %s failed", run.spec.job_id, exc_info=True)
        for stream, path in (("stdout", run.stdout_path), ("stderr", run.stderr_path)):
            try:
                with open(path, "rb") as fh:
                    fh.seek(run.shipped[stream])
                    while True:
                        data = fh.read(LOG_CHUNK_BYTES)
                        if not data:
                            break
                        self.client.logs(run.spec, stream=stream, offset=run.shipped[stream], data=data)
                        run.shipped[stream] += len(data)
            except FileNotFoundError:
                continue
            except (ServiceUnavailable, Refused) as exc:
                if final:
                    log.warning("could not ship %s of %s: %s", stream, run.spec.job_id, exc)
