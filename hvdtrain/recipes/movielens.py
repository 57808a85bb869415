"""Neural collaborative filtering (NeuMF: GMF + MLP, He et al. 2017) on MovieLens ratings as implicit feedback.

Reads MovieLens from ``--data-dir``, recognised by file: ``ml-100k/u.data`` (tab-separated), ``ml-1m/ratings.dat``
(``::``-separated) or ``ml-latest-small/ratings.csv`` (with a header), the file itself, its folder, or the GroupLens
zip (``ml-100k.zip``, ...). When none is there, rank 0 downloads ``ml-100k.zip`` (checksum verified) while the
other ranks wait.

Every rating counts as an interaction. The standard protocol: each user's latest interaction is their test item
(leave-one-out), ranked against 99 items they never interacted with (sampled once, with a fixed seed);
HR@10 (is it in the top 10?) and NDCG@10, averaged over users, next to a popularity baseline (items ranked by their
training count). Training pairs each interaction with ``--negatives`` items the user has not seen, drawn anew each
epoch. The four embedding tables get sparse (``IndexedSlices``) gradients.

    python -m hvdtrain.recipes.movielens --data-dir ~/data                  # one process
    horovodrun -np 4 python -m hvdtrain.recipes.movielens --data-dir ~/data # 4 ranks, Horovod's launcher
    mpirun -np 4 -bind-to none -map-by slot python -m hvdtrain.recipes.movielens --data-dir ~/data
    srun --ntasks=4 python -m hvdtrain.recipes.movielens --data-dir /scratch/movielens

Literature (not measured here): He et al. 2017 report NeuMF HR@10 0.730 / NDCG@10 0.447 on ml-1m (with
pre-training; about 0.70 without); re-implementations report HR@10 about 0.65-0.70 on ml-100k.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdtrain import backends
from hvdtrain.data import DataError, shard_bounds
from hvdtrain.download import default_data_dir
from hvdtrain.download import download as fetch
from hvdtrain.log import get_logger
from hvdtrain.recipe import Recipe, fetch_on_rank0
from hvdtrain.recipes.movielens_config import MovielensConfig
from hvdtrain.sources import ArraySource, Data, Source, epoch_rng
from hvdtrain.world import World

EVAL_NEGATIVES = 99  # the protocol's sampled negatives per test user
TOP_K = 10
EVAL_SEED = 0  # the test negatives are part of the test set: the same whatever --seed says
ORIGIN = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"


@dataclass(frozen=True)
class Format:
    """One MovieLens ratings file: where it lives and how its lines look."""

    name: str  # the GroupLens set, also its folder and zip name
    file: str
    separator: str
    header: str | None  # the first line, when the file has one


FORMATS = (
    Format("ml-100k", "u.data", "\t", None),
    Format("ml-1m", "ratings.dat", "::", None),
    Format("ml-latest-small", "ratings.csv", ",", "userId,movieId,rating,timestamp"),
)


@dataclass(frozen=True)
class Ratings:
    """Interactions as parallel arrays (raw user and item ids, Unix timestamps), in file order."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray


def find_ratings(data_dir: Path) -> tuple[Path, Format] | None:
    """The one MovieLens ratings file (or zip) in ``data_dir``; None when there is none, DataError when several."""
    found = []
    for fmt in FORMATS:
        for candidate in (data_dir / fmt.file, data_dir / fmt.name / fmt.file, data_dir / f"{fmt.name}.zip"):
            if candidate.is_file():
                found.append((candidate, fmt))
                break
    if len(found) > 1:
        names = ", ".join(str(path) for path, _ in found)
        raise DataError(f"{data_dir} holds several MovieLens sets ({names}); point --data-dir at a folder with one")
    return found[0] if found else None


def _read_text(path: Path, fmt: Format) -> str:
    """The ratings file's text, from the file or from inside the GroupLens zip."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                inner = f"{fmt.name}/{fmt.file}"
                if inner not in archive.namelist():
                    raise DataError(f"{path} has no {inner}: not the GroupLens {fmt.name}.zip")
                raw = archive.read(inner)
        else:
            raw = path.read_bytes()
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc} (a damaged download? delete it to fetch it again)") from None
    # ml-1m is Latin-1 in its movie titles; its ratings, like the others, are ASCII.
    return raw.decode("latin-1")


def _bad_line(lines: list[str], fmt: Format, first: int) -> tuple[int, str]:
    """The first line (1-based number, text) that is not user, item, rating, timestamp."""
    for number, line in enumerate(lines[first:], start=first + 1):
        fields = line.split(fmt.separator)
        try:
            if len(fields) != 4:
                raise ValueError
            int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])
        except ValueError:
            return number, line
    return 0, ""


def parse_ratings(text: str, fmt: Format, source: str) -> Ratings:
    """User, item and timestamp columns of a ratings file's text; DataError naming the first bad line."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    first = 0
    if fmt.header is not None:
        if not lines or lines[0].strip() != fmt.header:
            got = lines[0][:60] if lines else "an empty file"
            raise DataError(f"{source}: expected the header {fmt.header!r}, got {got!r}")
        first = 1
    if len(lines) <= first:
        raise DataError(f"{source}: no ratings")
    try:
        table = np.array([line.split(fmt.separator) for line in lines[first:]], dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 4 or not np.all(table[:, [0, 1, 3]] == np.round(table[:, [0, 1, 3]])):
            raise ValueError("not four numbers per line")
    except ValueError:
        number, line = _bad_line(lines, fmt, first)
        sep = fmt.separator.replace("\t", "<tab>")
        raise DataError(
            f"{source}: line {number} {line[:60]!r} is not user{sep}item{sep}rating{sep}timestamp "
            f"(the {fmt.name} {fmt.file} format)"
        ) from None
    return Ratings(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 3].astype(np.int64))


def read_ratings(path: Path, fmt: Format) -> Ratings:
    """Parse a ratings file (or the one inside a GroupLens zip)."""
    return parse_ratings(_read_text(path, fmt), fmt, str(path))


@dataclass(frozen=True)
class Interactions:
    """Implicit feedback, users and items renumbered 0..n-1: training pairs and one held-out item per test user."""

    n_users: int
    n_items: int
    train: np.ndarray  # (n, 2) user, item
    test_users: np.ndarray
    test_items: np.ndarray  # each test user's latest interaction
    candidates: np.ndarray  # (test users, 1 + EVAL_NEGATIVES): the test item, then the sampled negatives

    def seen(self) -> np.ndarray:
        """Sorted keys ``user * n_items + item`` of every training pair (what "not interacted with" checks)."""
        return np.unique(self.train[:, 0] * self.n_items + self.train[:, 1])

    def popularity(self) -> np.ndarray:
        """Training interactions per item (the baseline's score)."""
        return np.bincount(self.train[:, 1], minlength=self.n_items).astype(np.float64)


def _not_seen(keys: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Which ``user * n_items + item`` keys are absent from the sorted ``seen``."""
    at = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
    return seen[at] != keys


def sample_unseen(
    users: np.ndarray, count: int, n_items: int, seen: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(len(users), count) items each user has not interacted with, drawn uniformly (with replacement)."""
    out = rng.integers(0, n_items, (len(users), count))
    redo = ~_not_seen(users[:, None] * n_items + out, seen)
    while redo.any():
        rows, cols = np.nonzero(redo)
        out[rows, cols] = rng.integers(0, n_items, len(rows))
        redo[rows, cols] = ~_not_seen(users[rows] * n_items + out[rows, cols], seen)
    return out


def leave_one_out(ratings: Ratings, source: str) -> Interactions:
    """Each user's latest interaction (ties: the later line) held out, with 99 unseen items to rank it against."""
    pairs = np.stack([ratings.users, ratings.items], axis=1)
    user_ids, users = np.unique(pairs[:, 0], return_inverse=True)
    item_ids, items = np.unique(pairs[:, 1], return_inverse=True)
    n_users, n_items = len(user_ids), len(item_ids)
    order = np.lexsort((np.arange(len(users)), ratings.timestamps, users))  # by user, then time, then file line
    users, items = users[order], items[order]
    last = np.r_[users[1:] != users[:-1], True]  # each user's latest
    after_own = np.r_[False, users[1:] == users[:-1]]  # not the user's first interaction
    test = np.nonzero(last & after_own)[0]  # users with one interaction only have nothing to train on
    keep = np.ones(len(users), dtype=bool)
    keep[test] = False
    train = np.unique(np.stack([users[keep], items[keep]], axis=1), axis=0)  # repeated ratings count once
    test_users, test_items = users[test], items[test]
    interacted = np.unique(np.r_[train[:, 0] * n_items + train[:, 1], test_users * n_items + test_items])
    counts = np.bincount(interacted // n_items, minlength=n_users)
    if len(test_users) == 0:
        raise DataError(f"{source}: no user has two interactions to hold one out")
    if np.any(n_items - counts[test_users] < EVAL_NEGATIVES):
        raise DataError(f"{source}: some user has interacted with all but fewer than {EVAL_NEGATIVES} of the items")
    rng = np.random.default_rng(EVAL_SEED)
    negatives = np.empty((len(test_users), EVAL_NEGATIVES), dtype=np.int64)
    bounds = np.searchsorted(interacted, np.r_[test_users, test_users + 1] * n_items).reshape(2, -1)
    for row, (lo, hi) in enumerate(bounds.T):  # distinct items per user, none interacted with
        pool = np.setdiff1d(np.arange(n_items), interacted[lo:hi] % n_items)
        negatives[row] = rng.choice(pool, EVAL_NEGATIVES, replace=False)
    candidates = np.concatenate([test_items[:, None], negatives], axis=1)
    return Interactions(n_users, n_items, train, test_users, test_items, candidates)


def training_pairs(
    data: Interactions, rows: np.ndarray, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs ``rows`` (positives, label 1) each followed by ``negatives`` unseen items (label 0)."""
    positives = data.train[rows]
    sampled = sample_unseen(positives[:, 0], negatives, data.n_items, data.seen(), rng)
    per = 1 + negatives
    x = np.empty((len(rows) * per, 2), dtype=np.int64)
    x[:, 0] = np.repeat(positives[:, 0], per)
    x[:, 1] = np.concatenate([positives[:, 1:2], sampled], axis=1).ravel()
    y = np.tile(np.r_[1.0, np.zeros(negatives)], len(rows)).astype(np.float32)
    return x, y


def rank_histogram(scores: np.ndarray) -> np.ndarray:
    """How many rows put their first column (the test item) at rank 0, 1, ..., counting ties against it."""
    ranks = np.sum(scores[:, 1:] >= scores[:, :1], axis=1)
    return np.bincount(ranks, minlength=scores.shape[1]).astype(np.float64)


def ranking_metrics(histogram: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """HR@k and NDCG@k (means over users) from a histogram of the test item's rank."""
    users = histogram.sum()
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    return {f"hr@{k}": float(histogram[:k].sum() / users), f"ndcg@{k}": float(histogram[:k] @ gains / users)}


class PairsWithNegatives(Source):
    """The training interactions, each followed by ``negatives`` unseen items drawn anew each epoch.

    Ranks split the interactions contiguously; an epoch's order and its negatives come from (seed, rank, epoch).
    """

    def __init__(self, data: Interactions, negatives: int) -> None:
        self.data, self.negatives, self.per = data, negatives, 1 + negatives

    @property
    def num_examples(self) -> int:
        return len(self.data.train) * self.per

    def shard_size(self, rank: int, size: int) -> int:
        start, stop = shard_bounds(len(self.data.train), rank, size)
        return (stop - start) * self.per

    def _examples(self, rank: int, size: int, rng: np.random.Generator, samples: int | None) -> tuple[Any, Any]:
        start, stop = shard_bounds(len(self.data.train), rank, size)
        x, y = training_pairs(self.data, np.arange(start, stop), self.negatives, rng)
        if samples is None:
            return x, y
        order = np.resize(rng.permutation(len(y)), samples)
        return x[order], y[order]

    def epoch(self, rank: int, size: int, seed: int, epoch: tf.Tensor, samples: int) -> tf.data.Dataset:
        def make(e: np.int64) -> tuple[np.ndarray, np.ndarray]:
            return self._examples(rank, size, epoch_rng(seed, rank, int(e)), samples)

        x, y = tf.numpy_function(make, [epoch], (tf.int64, tf.float32), stateful=False)
        return tf.data.Dataset.from_tensor_slices((tf.ensure_shape(x, [samples, 2]), tf.ensure_shape(y, [samples])))

    def shard(self, rank: int, size: int) -> tf.data.Dataset:
        x, y = self._examples(rank, size, np.random.default_rng([EVAL_SEED, rank]), None)
        return tf.data.Dataset.from_tensor_slices((x, y))


def download(data_dir: Path) -> None:
    """Fetch ``ml-100k.zip`` into ``data_dir``; ``HVDTRAIN_MOVIELENS_URL`` names a mirror."""
    formats = ", ".join(f"{fmt.name}/{fmt.file}" for fmt in FORMATS)
    fetch(data_dir, "ml-100k.zip", ORIGIN, SHA256, "HVDTRAIN_MOVIELENS_URL", f"put one of {formats} in {data_dir}")


@cache
def interactions(data_dir: Path) -> Interactions:
    """The leave-one-out split of the MovieLens file in ``data_dir`` (read once per process: the model's table
    sizes come from it too)."""
    found = find_ratings(data_dir)
    if found is None:
        formats = ", ".join(f"{fmt.name}/{fmt.file}" for fmt in FORMATS)
        raise DataError(f"{data_dir} has no MovieLens ratings file ({formats}, or their GroupLens zip)")
    path, fmt = found
    data = leave_one_out(read_ratings(path, fmt), str(path))
    get_logger().info(
        "%s: %d users, %d items, %d training interactions, %d test users",
        path,
        data.n_users,
        data.n_items,
        len(data.train),
        len(data.test_users),
    )
    return data


def _data_dir(config: MovielensConfig) -> Path:
    data_dir = config.data_dir or default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    return data_dir


def load_data(config: MovielensConfig, world: World) -> Data:
    """Interactions from the MovieLens file in ``--data-dir``, split leave-one-out; the test split is one example
    per test user: the 100 candidate items, the held-out one first."""
    data_dir = _data_dir(config)
    fetch_on_rank0(world, lambda: find_ratings(data_dir) is not None, lambda: download(data_dir))
    data = interactions(data_dir)
    test = ArraySource({"user": data.test_users, "items": data.candidates}, np.zeros(len(data.test_users)))
    return Data(PairsWithNegatives(data, config.negatives), test)


def build_model(config: MovielensConfig) -> tf.keras.Model:
    """NeuMF: a GMF tower (user x item embeddings) and an MLP tower (concatenated embeddings, 3 halving layers),
    concatenated into one sigmoid output. Input: (batch, 2) of user, item; table sizes come from the data."""
    data = interactions(_data_dir(config))
    pair = tf.keras.Input(shape=(2,), dtype="int64")
    user, item = pair[:, 0], pair[:, 1]
    gmf = tf.keras.layers.Multiply()(
        [
            tf.keras.layers.Embedding(data.n_users, config.gmf_dim, name="gmf_user")(user),
            tf.keras.layers.Embedding(data.n_items, config.gmf_dim, name="gmf_item")(item),
        ]
    )
    mlp = tf.keras.layers.Concatenate()(
        [
            tf.keras.layers.Embedding(data.n_users, config.mlp_dim, name="mlp_user")(user),
            tf.keras.layers.Embedding(data.n_items, config.mlp_dim, name="mlp_item")(item),
        ]
    )
    for width in (config.mlp_dim, config.mlp_dim // 2, config.mlp_dim // 4):
        mlp = tf.keras.layers.Dense(max(1, width), activation="relu")(mlp)
    both = tf.keras.layers.Concatenate()([gmf, mlp])
    return tf.keras.Model(pair, tf.keras.layers.Dense(1, activation="sigmoid", name="score")(both), name="neumf")


EVAL_USERS = 64  # users scored per call; the last call is padded, so every score comes from a same-shaped batch


def evaluate(model: tf.keras.Model, data: Data, config: MovielensConfig, world: World) -> dict[str, float]:
    """HR@10 and NDCG@10 of the model and of the popularity baseline, exact and the same on every rank: each rank
    ranks its test users' candidates, and the histograms of the held-out item's rank are summed over ranks."""
    assert isinstance(data.train, PairsWithNegatives)
    popularity = data.train.data.popularity()
    candidates = 1 + EVAL_NEGATIVES
    model_ranks, popular_ranks = np.zeros(candidates), np.zeros(candidates)
    for x, _ in data.test.shard(world.rank, world.size).batch(EVAL_USERS).as_numpy_iterator():
        users, items = x["user"], x["items"]
        n = len(users)
        pad = EVAL_USERS - n  # repeat the last user to fill the batch; its rows are dropped below
        users, items = np.r_[users, np.repeat(users[-1:], pad)], np.r_[items, np.repeat(items[-1:], pad, axis=0)]
        pairs = np.stack([np.repeat(users, candidates), items.ravel()], axis=1)
        scores = np.asarray(model(pairs, training=False)).reshape(EVAL_USERS, candidates)[:n]
        model_ranks += rank_histogram(scores)
        popular_ranks += rank_histogram(popularity[items[:n]])
    # Horovod: sum the rank histograms over ranks (counts: the same result whatever the world size)
    total = backends.current().global_sum(np.r_[model_ranks, popular_ranks], name="hvdtrain.movielens.evaluate")
    metrics = ranking_metrics(total[:candidates])
    metrics.update({f"popularity {k}": v for k, v in ranking_metrics(total[candidates:]).items()})
    return metrics


recipe = Recipe(
    name="movielens",
    description="NeuMF on MovieLens implicit feedback, HR@10/NDCG@10 leave-one-out (ml-100k downloaded when missing).",
    build_model=build_model,
    load_data=load_data,
    defaults=MovielensConfig(epochs=10, batch_size=256, lr=1e-3, sparse_as_dense=False),
    loss="binary_crossentropy",
    metrics=(),
    evaluate=evaluate,
    validate_each_epoch=False,
)

if __name__ == "__main__":
    recipe.main()
