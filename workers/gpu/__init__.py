"""GPU-side plumbing of a node agent: NVML probe and sampler, MPS daemons, MIG layouts.

* :mod:`workers.gpu.nvml` — probe the host's GPUs into plain ``GpuInfo`` values,
  sample per-process utilization;
* :mod:`workers.gpu.mps` — one ``nvidia-cuda-mps-control`` daemon per GPU / MIG device;
* :mod:`workers.gpu.mig_apply` — destroy and recreate MIG instances on an idle GPU.

Everything that talks to NVML takes an injectable ``nvml`` module (the real
``pynvml`` by default), so tests run on :class:`tests.support.fake_nvml.FakeNvml`, an
in-memory twin of the ``pynvml`` subset used here (a test double: production never imports it).
"""
