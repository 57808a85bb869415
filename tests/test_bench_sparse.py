"""Bytes per step read from a Horovod timeline (the format horovod/common/timeline.cc writes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvdtrain.bench.sparse import timeline_bytes, wire_bytes


def _tensor(pid: int, name: str, op: str, dtype: str, shape: str, times: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}]
    for _ in range(times):
        events += [
            {"ph": "B", "name": f"NEGOTIATE_{op}", "ts": 1, "pid": pid},
            {"ph": "E", "ts": 2, "pid": pid},
            {"ph": "B", "name": op, "ts": 3, "pid": pid},
            {"ph": "B", "name": f"MPI_{op}", "ts": 4, "pid": pid},
            {"ph": "E", "ts": 5, "pid": pid},
            {"ph": "E", "ts": 6, "pid": pid, "args": {"dtype": dtype, "shape": shape}},
        ]
    return events


def test_bytes_per_step_count_the_tensors_done_every_step(tmp_path: Path) -> None:
    events = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"start_time_since_epoch_in_micros": 0}}]
    events += _tensor(1, "broadcast_w", "BROADCAST", "float32", "[1000, 10]", 1)  # once: not per step
    events += _tensor(2, "grad_dense", "ALLREDUCE", "float32", "[10, 4]", 3)
    events += _tensor(3, "grad_emb_values", "ALLGATHER", "float32", "[512, 16]", 3)
    events += _tensor(4, "grad_emb_indices", "ALLGATHER", "HOROVOD_INT64", "[512]", 3)
    events += _tensor(5, "metrics", "ALLREDUCE", "float64", "[3]", 1)
    path = tmp_path / "timeline.json"
    path.write_text(json.dumps(events))
    per_op = timeline_bytes(path)
    assert per_op == {"allreduce": 160.0, "allgather": 512 * 16 * 4 + 512 * 8}
    assert wire_bytes(per_op, n=2) == pytest.approx(160.0 + (512 * 16 * 4 + 512 * 8) / 2)
