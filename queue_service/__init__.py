"""gpuq's service: REST API, admission, persistence, billing, CLI."""

__version__ = "0.1.0"
