"""The movielens recipe: its readers of the three MovieLens formats, the leave-one-out protocol and its metrics,
and NeuMF trained on 2 ranks against the popularity baseline."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, WORKERS, error_lines, launch, recipe_program, run

from hvdtrain.bench.recsys_data import low_rank_ratings, write_ratings
from hvdtrain.data import DataError
from hvdtrain.recipes import movielens as ml

KINDS = {"u.data": "ml-100k", "ratings.dat": "ml-1m", "ratings.csv": "ml-latest-small"}


@pytest.fixture(scope="module")
def ratings() -> np.ndarray:
    return low_rank_ratings()


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("where", ["folder", "file", "zip"])
def test_each_format_is_recognised_and_read(ratings: np.ndarray, tmp_path: Path, kind: str, where: str) -> None:
    name = KINDS[kind]
    inner = write_ratings(tmp_path / "src" / name / kind, ratings[:50], kind)
    if where == "folder":
        data_dir = tmp_path / "src"
    elif where == "file":
        data_dir = inner.parent
    else:
        data_dir = tmp_path / "zipped"
        data_dir.mkdir()
        with zipfile.ZipFile(data_dir / f"{name}.zip", "w") as archive:
            archive.write(inner, f"{name}/{kind}")
    found = ml.find_ratings(data_dir)
    assert found is not None and found[1].name == name
    read = ml.read_ratings(*found)
    np.testing.assert_array_equal(read.users, ratings[:50, 0])
    np.testing.assert_array_equal(read.items, ratings[:50, 1])
    np.testing.assert_array_equal(read.timestamps, ratings[:50, 3])


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("u.data", "1\t2\t3\t881250949\n1,2,3,881250950\n", "line 2 '1,2,3,881250950' is not user<tab>item"),
        ("ratings.dat", "1::2::5::978300760\n1::2::5\n", "line 2 '1::2::5' is not user::item::rating::timestamp"),
        ("ratings.dat", "1::x::5::978300760\n", "line 1"),
        ("ratings.csv", "1,2,3.5,964982703\n", "expected the header 'userId,movieId,rating,timestamp'"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n", "no ratings"),
    ],
)
def test_wrong_format_is_one_clear_error(tmp_path: Path, kind: str, text: str, expected: str) -> None:
    path = tmp_path / kind
    path.write_text(text)
    with pytest.raises(DataError, match=expected) as caught:
        ml.read_ratings(path, next(f for f in ml.FORMATS if f.file == kind))
    assert "\n" not in str(caught.value)


def test_damaged_zip_or_several_sets_are_one_clear_error(ratings: np.ndarray, tmp_path: Path) -> None:
    (tmp_path / "ml-1m.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="cannot read .*ml-1m.zip"):
        ml.read_ratings(*ml.find_ratings(tmp_path))
    write_ratings(tmp_path / "ml-100k" / "u.data", ratings[:5], "u.data")
    with pytest.raises(DataError, match="several MovieLens sets"):
        ml.find_ratings(tmp_path)


def test_leave_one_out_holds_out_each_users_latest_and_samples_unseen_negatives(ratings: np.ndarray) -> None:
    raw = ml.Ratings(ratings[:, 0], ratings[:, 1], ratings[:, 3])
    data = ml.leave_one_out(raw, "generated")
    assert (data.n_users, data.n_items) == (len(np.unique(ratings[:, 0])), len(np.unique(ratings[:, 1])))
    assert len(data.train) + len(data.test_users) == len(ratings)
    item_ids = np.unique(ratings[:, 1])
    for row, user in enumerate(data.test_users[:20]):
        mine = ratings[ratings[:, 0] == user + 1]
        assert item_ids[data.test_items[row]] == mine[np.argmax(mine[:, 3]), 1]  # the latest is held out
        seen = set(np.searchsorted(item_ids, mine[:, 1]))
        negatives = data.candidates[row, 1:]
        assert data.candidates[row, 0] == data.test_items[row]
        assert len(set(negatives)) == ml.EVAL_NEGATIVES and not seen & set(negatives)
    again = ml.leave_one_out(raw, "generated")
    np.testing.assert_array_equal(again.candidates, data.candidates)  # the test set does not depend on --seed

    rng = np.random.default_rng(0)
    x, y = ml.training_pairs(data, np.arange(len(data.train)), 4, rng)
    assert len(x) == 5 * len(data.train) and y.sum() == len(data.train)
    seen_keys = data.seen()
    negatives = x[y == 0]
    assert not np.isin(negatives[:, 0] * data.n_items + negatives[:, 1], seen_keys).any()


def test_hit_ratio_and_ndcg_from_the_rank_histogram() -> None:
    scores = np.array([[0.9, 0.1, 0.2], [0.5, 0.7, 0.6], [0.3, 0.3, 0.1]])  # ranks 0, 2, and 1 (a tie counts against)
    histogram = ml.rank_histogram(scores)
    np.testing.assert_array_equal(histogram, [1, 1, 1])
    metrics = ml.ranking_metrics(histogram, k=2)
    assert metrics["hr@2"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


@pytest.mark.multiproc
def test_missing_data_offline_is_one_line(tmp_path: Path) -> None:
    done = run(
        recipe_program("movielens", "--data-dir", str(tmp_path)),
        env={"HVDTRAIN_MOVIELENS_URL": "http://127.0.0.1:9/ml-100k.zip"},  # nothing listens on the discard port
    )
    assert done.returncode == 2
    lines = [line for line in error_lines(done.stderr) if "hvdtrain: error" in line]
    assert len(lines) == 1 and lines[0].startswith("hvdtrain: error: cannot download"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "ml-100k/u.data" in lines[0]


def _ranks(out: Path, size: int) -> list[tuple[np.ndarray, dict[str, float]]]:
    return [
        (np.load(out / f"rank-{r}.npz")["weights"], json.loads((out / f"rank-{r}.json").read_text()))
        for r in range(size)
    ]


@pytest.mark.multiproc
def test_two_ranks_beat_popularity_and_one_rank_evaluates_the_same(ratings: np.ndarray, tmp_path: Path) -> None:
    write_ratings(tmp_path / "data" / "ml-1m" / "ratings.dat", ratings, "ratings.dat")
    options = ["--data-dir", str(tmp_path / "data"), "--epochs", "4", "--lr", "0.005", "--batch-size", "128"]
    options += ["--checkpoint-dir", str(tmp_path / "ckpt")]
    (tmp_path / "np2").mkdir(), (tmp_path / "np1").mkdir()
    worker = [PYTHON, str(WORKERS / "recipe_worker.py")]
    done = launch("mpirun", 2, [*worker, str(tmp_path / "np2"), "movielens", *options])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (w0, m0), (w1, m1) = _ranks(tmp_path / "np2", 2)
    np.testing.assert_array_equal(w0, w1)
    assert m0 == m1
    assert m0["hr@10"] > m0["popularity hr@10"] + 0.1, m0
    assert m0["ndcg@10"] > m0["popularity ndcg@10"], m0
    # One rank resumes from the last checkpoint (nothing left to train) and ranks every test user alone.
    done = run([*worker, str(tmp_path / "np1"), "movielens", *options])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ((w, m),) = _ranks(tmp_path / "np1", 1)
    np.testing.assert_array_equal(w, w0)
    assert m == m0  # histograms of integer ranks: exact whatever the world size
