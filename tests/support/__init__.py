"""What tests share and production never imports: test doubles and builders of domain values.

* :mod:`tests.support.builders` — GPUs, nodes, clusters, pending and running jobs, snapshots, with defaults;
* :mod:`tests.support.fake_nvml` — an in-memory twin of the ``pynvml`` subset the agent uses;
* :mod:`tests.support.first_fit` — a deliberately simple packer, the baseline the partitioner is measured against.
"""
