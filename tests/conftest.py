"""Shared helpers: launching ranks with horovodrun or mpirun from pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

PYTHON = sys.executable
HOROVODRUN = str(Path(sys.executable).with_name("horovodrun"))
WORKERS = Path(__file__).parent / "workers"
# Open MPI refuses root without these; CI and containers run as root.
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
TIMEOUT_S = 300


def launcher_argv(launcher: str, np: int) -> list[str]:
    """The launcher prefix for ``np`` ranks on this machine."""
    if launcher == "horovodrun":
        return [HOROVODRUN, "-np", str(np), "-H", f"localhost:{np}"]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(np), "-bind-to", "none", "-map-by", "slot"]
    if launcher == "none":
        return []
    raise ValueError(launcher)


def run(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout: int = TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run ``argv`` to completion with the root-friendly Open MPI environment; output captured as text."""
    full_env = {**os.environ, **ROOT_ENV, **(env or {})}
    return subprocess.run(list(argv), env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def launch(
    launcher: str, np: int, program: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``program`` on ``np`` ranks with ``launcher`` (horovodrun, mpirun or none)."""
    return run(launcher_argv(launcher, np) + list(program), env)


def recipe_program(name: str, *options: str) -> list[str]:
    """``python -m hvdtrain.recipes.<name> options...``."""
    return [PYTHON, "-m", f"hvdtrain.recipes.{name}", *options]


def test_accuracy(output: str) -> float:
    """The value of the final ``test accuracy X`` line a recipe prints on rank 0."""
    found = re.findall(r"test accuracy (\d\.\d+)", output)
    assert found, f"no 'test accuracy' line in:\n{output[-3000:]}"
    return float(found[-1])


test_accuracy.__test__ = False  # a helper, not a test


# TensorFlow's own C++ log lines at import, which TF_CPP_MIN_LOG_LEVEL does not silence in TF 2.21 (the oneDNN
# notice is printed before absl logging is initialised): TensorFlow's, not hvdtrain's.
_TF_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: )"
)


# mpirun --tag-output / horovodrun; hvdtrain run shows another rank's lines as "[rank N] ..."
_RANK_TAG = re.compile(r"^(\[\d+(,\d+)?\]<std(out|err)>:|\[rank \d+\] )")


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, TensorFlow's C++ start-up log lines (tagged with a rank or not) left out."""
    return [line for line in stderr.splitlines() if line.strip() and not _TF_LOG_LINE.match(_RANK_TAG.sub("", line))]


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, learnable file in the Keras ``mnist.npz`` format: class k has a bright 6x6 block at place k."""
    import numpy as np

    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            row, col = divmod(int(k), 5)
            x[i, 2 + 12 * row : 8 + 12 * row, 1 + 5 * col : 7 + 5 * col] = 255
        return x, labels

    x_train, y_train = images(601)  # odd: the 2 ranks get shards of 301 and 300
    x_test, y_test = images(201)
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
