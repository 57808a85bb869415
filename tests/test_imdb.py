"""The imdb recipe: its reader of the raw aclImdb text, its vocabulary, and training on 2 ranks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, WORKERS, error_lines, launch, recipe_program, run

from hvdtrain.bench.recsys_data import POSITIVE, tar_aclimdb, write_aclimdb
from hvdtrain.data import DataError
from hvdtrain.recipes import imdb


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with a generated ``aclImdb/`` (400 train, 200 test reviews)."""
    root = tmp_path_factory.mktemp("imdb")
    write_aclimdb(root)
    return root


def test_folder_and_tarball_read_the_same_reviews(reviews: Path, tmp_path: Path) -> None:
    from_folder = imdb.read_reviews(reviews / "aclImdb")
    from_tar = imdb.read_reviews(tar_aclimdb(reviews / "aclImdb", tmp_path / imdb.ARCHIVE))
    for split, n in (("train", 400), ("test", 200)):
        assert from_folder[split].texts == from_tar[split].texts and len(from_tar[split].texts) == n
        np.testing.assert_array_equal(from_folder[split].labels, from_tar[split].labels)
        assert from_tar[split].labels.sum() == n // 2  # unsup/ is not read
    first = from_folder["train"]
    positive = [t for t, y in zip(first.texts, first.labels, strict=True) if y == 1]
    assert all(any(w.capitalize() in t for w in POSITIVE) for t in positive)


def test_tokens_vocabulary_and_ids_are_deterministic() -> None:
    assert imdb.tokenize("Great film!<br /><br />Don't MISS it.") == ["great", "film", "don't", "miss", "it"]
    texts = [["b", "a", "c", "a"], ["c", "b", "d"], ["a"]]
    shuffled = random.Random(1).sample(texts, len(texts))
    words = imdb.build_vocabulary(texts, 5)
    assert words == ["a", "b", "c"] == imdb.build_vocabulary(shuffled, 5)  # counts 3, 2, 2: ties alphabetical
    ids = imdb.encode([["a", "zzz", "c"], ["b", "a", "c", "a", "b"]], words, 4)
    np.testing.assert_array_equal(ids, [[0, 2, 1, 4], [2, 4, 2, 3]])  # padded in front, the last 4 words kept


@pytest.mark.parametrize("damage", ["truncated", "not-a-tarball", "no-test-neg", "not-utf8"])
def test_damaged_or_wrong_data_is_one_clear_error(reviews: Path, tmp_path: Path, damage: str) -> None:
    if damage in ("truncated", "not-a-tarball"):
        source = tar_aclimdb(reviews / "aclImdb", tmp_path / imdb.ARCHIVE)
        raw = source.read_bytes()
        source.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"<html>not found</html>")
        expected = "cannot read"
    else:
        source = write_aclimdb(tmp_path, train=4, test=4)
        if damage == "no-test-neg":
            for path in (source / "test" / "neg").iterdir():
                path.unlink()
            expected = "no test/neg"
        else:
            (source / "train" / "pos" / "1_8.txt").write_bytes(b"caf\xe9")
            expected = "not UTF-8"
    with pytest.raises(DataError, match=expected) as caught:
        imdb.read_reviews(source)
    assert "\n" not in str(caught.value)


@pytest.mark.multiproc
def test_corrupt_tarball_on_the_command_line_is_one_line(reviews: Path, tmp_path: Path) -> None:
    (tmp_path / imdb.ARCHIVE).write_bytes(b"\x1f\x8b\x08\x00" + bytes(100))  # a gzip header, then nothing valid
    done = run(recipe_program("imdb", "--data-dir", str(tmp_path)))
    assert done.returncode == 2
    lines = [line for line in error_lines(done.stderr) if "hvdtrain: error" in line]
    assert len(lines) == 1 and lines[0].startswith("hvdtrain: error: cannot read"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def _ranks(out: Path, size: int) -> list[tuple[np.ndarray, dict[str, float]]]:
    return [
        (np.load(out / f"rank-{r}.npz")["weights"], json.loads((out / f"rank-{r}.json").read_text()))
        for r in range(size)
    ]


@pytest.mark.multiproc
def test_two_ranks_learn_marker_words_and_one_rank_evaluates_the_same(reviews: Path, tmp_path: Path) -> None:
    options = ["--data-dir", str(reviews), "--epochs", "3", "--seq-len", "64", "--vocab-size", "400"]
    options += ["--embedding-dim", "16", "--filters", "16", "--batch-size", "32", "--lr", "0.005"]
    options += ["--checkpoint-dir", str(tmp_path / "ckpt")]
    (tmp_path / "np2").mkdir(), (tmp_path / "np1").mkdir()
    done = launch("mpirun", 2, [PYTHON, str(WORKERS / "recipe_worker.py"), str(tmp_path / "np2"), "imdb", *options])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (w0, m0), (w1, m1) = _ranks(tmp_path / "np2", 2)
    np.testing.assert_array_equal(w0, w1)
    assert m0 == m1 and m0["accuracy"] > 0.85, m0  # chance: 0.5
    # One rank resumes from the last checkpoint (nothing left to train) and evaluates the whole test set alone.
    done = run([PYTHON, str(WORKERS / "recipe_worker.py"), str(tmp_path / "np1"), "imdb", *options])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ((w, m),) = _ranks(tmp_path / "np1", 1)
    np.testing.assert_array_equal(w, w0)
    assert m["accuracy"] == m0["accuracy"]  # counts of correct reviews: exact
    assert m["loss"] == pytest.approx(m0["loss"], rel=1e-5)  # float sums, added in another order
