"""How much CPU Horovod's background thread burns while the training script does nothing (per-rank program).

    horovodrun -np 2 -H localhost:2 --mpi --cycle-time-ms 1 python -m hvdtrain.bench.idle_cpu
    horovodrun -np 2 -H localhost:2 --gloo --cycle-time-ms 0.1 python -m hvdtrain.bench.idle_cpu --seconds 10

Each rank starts Horovod, sleeps, and prints ``idle-cpu rank R: P% of a core`` (CPU time of the whole process over
the wall time of the sleep). Horovod negotiates every cycle even with nothing to reduce, and a waiting MPI rank
busy-polls; on a machine with a core per rank that CPU is taken from TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="How long to sleep after hvd.init().")
    args = parser.parse_args()

    import horovod.tensorflow as hvd

    hvd.init()
    cpu, wall = cpu_seconds(), time.perf_counter()
    time.sleep(args.seconds)
    share = (cpu_seconds() - cpu) / (time.perf_counter() - wall)
    cycle = os.environ.get("HOROVOD_CYCLE_TIME", "default")
    controller = "gloo" if hvd.gloo_enabled() else "mpi"
    print(f"idle-cpu rank {hvd.rank()}: {share:.1%} of a core (controller {controller}, cycle {cycle} ms)", flush=True)
    hvd.shutdown()


if __name__ == "__main__":
    main()
