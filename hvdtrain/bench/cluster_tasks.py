"""Start the tasks of a TensorFlow cluster job together and stop them together: ``mpirun`` for TF_CONFIG jobs.

    python -m hvdtrain.bench.cluster_tasks PLAN.json

PLAN.json: ``{"tasks": [{"name": "worker0", "argv": [...], "env": {...}, "server": false}, ...]}``. Every task's
output is relayed line by line as ``[NAME] line``. The job succeeds when every task that is not a ``server`` (a
parameter server or a PS worker, which serve until stopped) has exited 0; then the servers are stopped. When any task
fails, or this process gets SIGTERM/SIGINT, every task is stopped and the exit status is non-zero.

Pure Python: imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STOP_GRACE_S = 5.0
POLL_S = 0.2


def _relay(name: str, process: subprocess.Popen, lock: threading.Lock) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        with lock:
            sys.stdout.write(f"[{name}] {line}" if line.endswith("\n") else f"[{name}] {line}\n")
            sys.stdout.flush()


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to every task still running, SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in processes if p.poll() is None]
        for process in alive:
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)


def run(tasks: Sequence[dict[str, Any]]) -> int:
    """Start ``tasks``, wait as the module doc says; the exit status."""
    lock = threading.Lock()
    processes: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        for task in tasks:
            process = subprocess.Popen(
                list(task["argv"]),
                env={**os.environ, **task.get("env", {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
            )
            processes.append(process)
            relay = threading.Thread(target=_relay, args=(task["name"], process, lock), daemon=True)
            relay.start()
            relays.append(relay)
        waited = [p for p, t in zip(processes, tasks, strict=True) if not t.get("server")]
        while True:
            for process, task in zip(processes, tasks, strict=True):
                code = process.poll()
                if code not in (None, 0) or (code == 0 and task.get("server")):
                    with lock:
                        print(f"cluster_tasks: {task['name']} exited with code {code}; stopping the others", flush=True)
                    return code or 1
            if all(p.poll() == 0 for p in waited):
                return 0
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(processes)
        for relay in relays:
            relay.join(timeout=STOP_GRACE_S)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m hvdtrain.bench.cluster_tasks PLAN.json", file=sys.stderr)
        return 2
    plan = json.loads(Path(args[0]).read_text())
    return run(plan["tasks"])


if __name__ == "__main__":
    sys.exit(main())
