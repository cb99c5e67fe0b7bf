"""Runtimes: how an agent starts, watches and stops one attempt (docker, process)."""
