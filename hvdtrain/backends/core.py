"""What both back ends share: Horovod's start, the world, and core collectives (``horovod.tensorflow`` only)."""

from __future__ import annotations

import os
from typing import Any

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from hvdtrain import tuning
from hvdtrain.world import World


def init(comm: Any = None) -> World:
    """Start Horovod (optionally on an mpi4py communicator), pin one GPU per local rank or size CPU threads.

    hvdtrain's tuned cycle time and fusion threshold, and MPI yielding on CPU hosts, go into the environment first
    where the user has not set them (:mod:`hvdtrain.tuning`); ``World.defaults_applied`` says which.
    """
    applied = tuning.apply_runtime_defaults(on_gpu=tuning.gpu_host())  # no TensorFlow call before hvd.init()
    hvd.init(comm=comm) if comm is not None else hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), applied)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[world.local_rank % len(gpus)], "GPU")
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // world.local_size))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cores // world.local_size)))
    return world


def world() -> World:
    """The world as it is now (it changes when elastic workers leave or join)."""
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())


def global_sum(values: np.ndarray, name: str) -> np.ndarray:
    """Element-wise sum of ``values`` over all ranks."""
    return hvd.allreduce(tf.constant(values, dtype=tf.float64), op=hvd.Sum, name=name).numpy()


def broadcast_object(obj: Any, name: str) -> Any:
    """Rank 0's ``obj`` on every rank (also a barrier: nobody passes before rank 0 has sent)."""
    return hvd.broadcast_object(obj, root_rank=0, name=name)


def shutdown() -> None:
    """Stop Horovod's background thread."""
    hvd.shutdown()
