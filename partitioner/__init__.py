"""gpuq's partitioner: the resource model, MIG geometry, placement kernels and the trace replay.

Importing this package loads no numba kernel and compiles nothing; call
:func:`partitioner.place.warmup` (the service does, in a background thread).
Modules: ``types`` (the contract), ``catalog`` (GPU models, MIG tables),
``mig`` (layout geometry), ``encode`` (arrays), ``kernels`` (numba loops),
``reference`` (pure-Python oracles), ``place`` (:class:`~partitioner.place.Packer`),
``policies``, ``repartition``, ``simulate`` (openb replay).
"""
