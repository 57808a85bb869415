"""A reference ring allreduce in numpy + mpi4py point-to-point: the algorithm Horovod runs, written out to teach it.

The buffer is cut into n chunks (n = ranks; sizes differ by at most one element, so any length works). Ranks form a
ring: each sends to ``rank + 1`` and receives from ``rank - 1``.

1. **Reduce-scatter**, n-1 steps: at step s a rank sends chunk ``rank - s`` and adds the chunk ``rank - s - 1`` it
   receives into its own copy. Afterwards rank r holds the full sum of chunk ``r + 1``.
2. **Allgather**, n-1 steps: at step s a rank sends chunk ``rank + 1 - s`` (complete) and stores chunk ``rank - s``.

Each step moves one chunk (size/n) each way, so each rank sends and receives ``2(n-1)/n * size`` bytes in all:
nearly twice the buffer, whatever n. That constant is why busbw = algbw * 2(n-1)/n is the number comparable with the
link bandwidth. Every chunk's sum is computed on one rank and then copied, so all ranks end with identical results.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def chunk_bounds(count: int, n: int) -> list[tuple[int, int]]:
    """[start, stop) of the n contiguous chunks of ``count`` elements; the first ``count % n`` get one more."""
    if n < 1 or count < 0:
        raise ValueError(f"need n >= 1 and count >= 0, got n={n}, count={count}")
    base, extra = divmod(count, n)
    bounds, start = [], 0
    for i in range(n):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def ring_allreduce(comm: Any, sendbuf: np.ndarray, recvbuf: np.ndarray | None = None) -> np.ndarray:
    """Sum ``sendbuf`` over all ranks of the mpi4py communicator ``comm`` into ``recvbuf`` (allocated if None).

    ``sendbuf`` is left unchanged; ``recvbuf`` must be C-contiguous with the same shape and dtype.
    """
    out = np.empty_like(sendbuf) if recvbuf is None else recvbuf
    if out.shape != sendbuf.shape or out.dtype != sendbuf.dtype or not out.flags.c_contiguous:
        raise ValueError("recvbuf must be C-contiguous with the shape and dtype of sendbuf")
    np.copyto(out, sendbuf)
    n, rank = comm.Get_size(), comm.Get_rank()
    if n == 1:
        return out
    flat = out.reshape(-1)
    bounds = chunk_bounds(flat.size, n)
    right, left = (rank + 1) % n, (rank - 1) % n
    scratch = np.empty(bounds[0][1] - bounds[0][0], dtype=flat.dtype)  # chunk 0 is the largest

    for step in range(n - 1):  # reduce-scatter
        send_start, send_stop = bounds[(rank - step) % n]
        recv_start, recv_stop = bounds[(rank - step - 1) % n]
        incoming = scratch[: recv_stop - recv_start]
        comm.Sendrecv(flat[send_start:send_stop], dest=right, sendtag=step, recvbuf=incoming, source=left, recvtag=step)
        flat[recv_start:recv_stop] += incoming

    for step in range(n - 1):  # allgather: pass the completed chunks around the ring
        send_start, send_stop = bounds[(rank + 1 - step) % n]
        recv_start, recv_stop = bounds[(rank - step) % n]
        comm.Sendrecv(
            flat[send_start:send_stop],
            dest=right,
            sendtag=n + step,
            recvbuf=flat[recv_start:recv_stop],
            source=left,
            recvtag=n + step,
        )
    return out
