"""``python -m queue_service.cli``: the ``gpuq`` command."""

from queue_service.cli import main

main()
