"""Compare the reference ring allreduce with MPI's own Allreduce on every rank; rank 0 prints one line per case.

    mpirun -np 2 python tests/workers/ring_check.py random     # random float32: exact at np=2 (a+b == b+a)
    mpirun -np 3 python tests/workers/ring_check.py integers   # whole numbers: exact in any order, any np

Prints ``case COUNT equal|DIFFERENT`` on rank 0, with the verdict agreed by all ranks.
"""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

from hvdtrain.bench.ring import ring_allreduce

COUNTS = (1, 2, 3, 5, 7, 64, 1000, 1001, 4097)


def main() -> None:
    kind = sys.argv[1]
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(1234 + comm.Get_rank())
    for count in COUNTS:
        if kind == "random":
            x = rng.standard_normal(count).astype(np.float32)
        else:
            x = rng.integers(-1000, 1000, count).astype(np.float32)
        original = x.copy()
        ring = ring_allreduce(comm, x)
        mpi = np.empty_like(x)
        comm.Allreduce(x, mpi, op=MPI.SUM)
        local = np.array_equal(ring, mpi) and np.array_equal(x, original)  # and the input is left alone
        same = comm.allreduce(bool(local), op=MPI.LAND)
        if comm.Get_rank() == 0:
            print(f"case {count} {'equal' if same else 'DIFFERENT'}", flush=True)


if __name__ == "__main__":
    main()
