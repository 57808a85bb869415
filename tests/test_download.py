"""hvdtrain.download: one checked download for every recipe (a local file:// URL stands in for the internet)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hvdtrain.data import DataError
from hvdtrain.download import default_data_dir, download


def _source(tmp_path: Path) -> tuple[Path, str]:
    source = tmp_path / "origin" / "set.bin"
    source.parent.mkdir()
    source.write_bytes(b"hvdtrain" * 1000)
    return source, hashlib.sha256(source.read_bytes()).hexdigest()


def test_download_fetches_and_checks_the_sha256(tmp_path: Path) -> None:
    source, sha = _source(tmp_path)
    download(tmp_path / "data", "set.bin", source.as_uri(), sha, "HVDTRAIN_TEST_URL", "put it there")
    assert (tmp_path / "data" / "set.bin").read_bytes() == source.read_bytes()


def test_a_wrong_checksum_is_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    with pytest.raises(DataError) as caught:
        download(tmp_path / "data", "set.bin", source.as_uri(), "0" * 64, "HVDTRAIN_TEST_URL", "put set.bin in D")
    message = str(caught.value)
    assert message.startswith(f"cannot download {source.as_uri()} (") and message.endswith("; put set.bin in D")
    assert "\n" not in message and not (tmp_path / "data" / "set.bin").exists()


def test_the_mirror_variable_replaces_the_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, sha = _source(tmp_path)
    monkeypatch.setenv("HVDTRAIN_TEST_URL", source.as_uri())
    download(tmp_path / "data", "set.bin", "http://127.0.0.1:9/set.bin", sha, "HVDTRAIN_TEST_URL", "-")
    assert (tmp_path / "data" / "set.bin").exists()


def test_default_data_dir_follows_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "datasets"
