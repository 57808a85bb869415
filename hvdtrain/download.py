"""A recipe's raw data from the internet: where Keras keeps data sets, and one checked download.

Recipes call :func:`download` through ``hvdtrain.recipe.fetch_on_rank0``, so rank 0 fetches while the others wait.
"""

from __future__ import annotations

import os
from pathlib import Path

from hvdtrain.data import DataError


def default_data_dir() -> Path:
    """Where Keras caches its data sets (``$KERAS_HOME/datasets``, else ``~/.keras/datasets``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def download(data_dir: Path, file_name: str, origin: str, sha256: str, mirror_var: str, instead: str) -> None:
    """Fetch ``origin`` (or the URL in the environment variable ``mirror_var``) to ``data_dir/file_name``, its SHA-256
    checked by Keras. Any failure (offline, proxy, disk, checksum) removes the partial file and raises DataError:
    one line that names the URL, the reason and what to put there ``instead``."""
    import tensorflow as tf

    url = os.environ.get(mirror_var, origin)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tf.keras.utils.get_file(file_name, origin=url, file_hash=sha256, cache_dir=str(data_dir), cache_subdir="")
    except Exception as exc:  # noqa: BLE001 - every failure becomes one actionable line
        (data_dir / file_name).unlink(missing_ok=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot download {url} ({reason}); {instead}") from None
