"""Generated data in the exact formats of the imdb and movielens recipes' real files, with planted structure: for
the tests (small, learnable) and for the sparse-gradient benchmark (the real sets' shapes: nothing downloads)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

POSITIVE = ("great", "wonderful", "superb", "brilliant", "moving")
NEGATIVE = ("awful", "boring", "terrible", "worst", "dull")
FILLER = tuple(f"w{i}" for i in range(300))


def write_aclimdb(
    root: Path, train: int = 400, test: int = 200, seed: int = 0, length: int = 40, vocabulary: int = 0
) -> Path:
    """``root/aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt`` (and a ``unsup`` review), as in the real set:
    filler words, HTML line breaks, mixed case; a review is positive when it holds positive marker words.

    ``length`` filler words per review, drawn from 300 (uniformly), or from ``vocabulary`` words with Zipf's law
    like real text when that is set."""
    rng = np.random.default_rng(seed)
    folder = root / "aclImdb"
    zipf = 1.0 / np.arange(1, vocabulary + 1) if vocabulary else None
    for split, n in (("train", train), ("test", test)):
        for i in range(n):
            label = i % 2
            if zipf is None:
                words = list(rng.choice(FILLER, length))
            else:
                words = [f"w{k}" for k in rng.choice(vocabulary, length, p=zipf / zipf.sum())]
            for word in rng.choice(POSITIVE if label else NEGATIVE, 2):
                words.insert(int(rng.integers(0, len(words))), str(word).capitalize())
            text = " ".join(words[:20]) + ".<br /><br />" + " ".join(words[20:]) + "."
            path = folder / split / ("pos" if label else "neg") / f"{i}_{8 if label else 2}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    (folder / "train" / "unsup").mkdir(exist_ok=True)
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled", encoding="utf-8")
    return folder


def tar_aclimdb(folder: Path, tarball: Path) -> Path:
    """``aclImdb_v1.tar.gz`` of an ``aclImdb/`` folder."""
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="aclImdb")
    return tarball


def low_rank_ratings(
    users: int = 200, items: int = 300, rank: int = 3, seed: int = 0, per_user: tuple[int, int] = (15, 31)
) -> np.ndarray:
    """(n, 4) user, item, stars, timestamp (ids from 1): each user rates ``per_user`` (low, high) items drawn by a
    low-rank taste model (user and item factors) with a little noise, at random times."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(users, rank)), rng.normal(size=(items, rank))
    rows = []
    for user in range(users):
        scores = 3.0 * (u[user] @ v.T) + rng.gumbel(size=items)
        chosen = np.argsort(-scores)[: rng.integers(*per_user)]
        times = 880_000_000 + rng.permutation(len(chosen)) * 3600
        rows += [(user + 1, item + 1, int(rng.integers(1, 6)), t) for item, t in zip(chosen, times, strict=True)]
    return np.array(rows, dtype=np.int64)


def write_ratings(path: Path, ratings: np.ndarray, kind: str) -> Path:
    """Write ``ratings`` as ``u.data`` (tab), ``ratings.dat`` (::) or ``ratings.csv`` (header, float stars)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "u.data":
        lines = ["\t".join(str(v) for v in row) for row in ratings]
    elif kind == "ratings.dat":
        lines = ["::".join(str(v) for v in row) for row in ratings]
    else:
        lines = ["userId,movieId,rating,timestamp"] + [f"{a},{b},{c:.1f},{d}" for a, b, c, d in ratings]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path
