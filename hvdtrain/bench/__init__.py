"""Benchmarks: ``hvdtrain bench allreduce`` (collectives), ``scaling`` (a recipe's throughput), ``overhead``.

Drivers (``allreduce``, ``scaling``, ``overhead``, ``report``, ``metrics``, ``runner``, ``cli``) import neither
TensorFlow nor Horovod; they launch per-rank programs (``allreduce_worker``, the ``synthetic`` recipe,
``baseline_mnist``) with :func:`hvdtrain.launch.build_command` and read back what rank 0 writes. ``ring`` is the
reference ring allreduce; ``idle_cpu`` measures what Horovod's background thread costs while nothing happens.
Results on the 2-core test machine: ``docs/benchmarks.md``.
"""
