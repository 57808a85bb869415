"""The timed window of a benchmark program, announced on stdout so a driver can read link counters around it.

A program (rank 0, the chief or the coordinator) prints, each as one line carrying the runner's progress mark:

    hvdtrain-bench: window model trainable_params=23534592 tensors=161
    hvdtrain-bench: window start
    hvdtrain-bench: window end steps=40 samples=1280 seconds=12.345678

``steps`` counts global batches (one batch on every worker), ``samples`` all samples over every worker. The driver
reads the cluster's link counters when it sees ``start`` and ``end``; the program's own clock gives the time. With
``HVDTRAIN_WINDOW_ACK=PATH`` in its environment, the program waits after ``start`` until PATH exists (the driver
creates it once it has read the counters).

Pure Python: imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass

from hvdtrain.bench.runner import PROGRESS_MARK

ACK_VAR = "HVDTRAIN_WINDOW_ACK"
ACK_TIMEOUT_S = 60.0
_FIELDS_RE = re.compile(r"(\w+)=([0-9.]+)")


@dataclass(frozen=True)
class WindowEvent:
    """One announcement: ``kind`` is model, start or end; ``fields`` its numbers."""

    kind: str
    fields: dict[str, float]


def _say(text: str) -> None:
    sys.stdout.write(PROGRESS_MARK + "window " + text + "\n")  # one write: launchers tag output per chunk
    sys.stdout.flush()


def announce_model(trainable_params: int, tensors: int) -> None:
    _say(f"model trainable_params={trainable_params} tensors={tensors}")


class Window:
    """``start()`` then ``end(steps, samples)``: prints the two lines and keeps the elapsed time."""

    def __init__(self) -> None:
        self._start: float | None = None
        self.seconds: float | None = None

    def start(self) -> None:
        """Announce the start; with ``HVDTRAIN_WINDOW_ACK`` set, wait (up to ACK_TIMEOUT_S) until the driver has
        created that file, i.e. has read the counters: the launcher's output relay may be late, and no gradient
        moves until this process (the chief, the coordinator, Horovod's rank 0) starts the first timed step."""
        _say("start")
        ack = os.environ.get(ACK_VAR)
        if ack:
            deadline = time.monotonic() + ACK_TIMEOUT_S
            while not os.path.exists(ack) and time.monotonic() < deadline:
                time.sleep(0.01)
        self._start = time.perf_counter()

    def end(self, steps: int, samples: int) -> None:
        if self._start is None:
            raise RuntimeError("Window.end() before start()")
        self.seconds = time.perf_counter() - self._start
        _say(f"end steps={steps} samples={samples} seconds={self.seconds:.6f}")


def parse(text: str) -> WindowEvent | None:
    """The event in a progress line's text (after the mark and the launcher's tag), or None."""
    text = text.strip()
    if not text.startswith("window "):
        return None
    words = text.split()
    if len(words) < 2 or words[1] not in ("model", "start", "end"):
        return None
    return WindowEvent(words[1], {k: float(v) for k, v in _FIELDS_RE.findall(text)})
