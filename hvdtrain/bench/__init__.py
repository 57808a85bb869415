"""Benchmarks: ``hvdtrain bench allreduce`` (collectives), ``scaling`` (a recipe's throughput), ``overhead``.

Drivers (``allreduce``, ``scaling``, ``overhead``, ``report``, ``metrics``, ``cli``) import neither TensorFlow nor
Horovod; they launch per-rank programs (``allreduce_worker``, the ``synthetic`` recipe, ``baseline_mnist``) with
:func:`hvdtrain.launch.build_command` and read back the JSON that rank 0 writes.
"""
