"""IMDB movie-review sentiment (25k train / 25k test reviews) with a word embedding and a 1-D convolution.

Reads the raw Large Movie Review Dataset (Maas et al. 2011) from ``--data-dir``: the tarball ``aclImdb_v1.tar.gz``
or its extracted ``aclImdb/`` folder (``train/pos``, ``train/neg``, ``test/pos``, ``test/neg``, one review per
``*.txt``; ``unsup/`` is not used). When neither is there, rank 0 downloads the tarball (checksum verified) while the
other ranks wait; extract it once (``tar xzf aclImdb_v1.tar.gz``) for a faster start.

Every rank tokenizes the same files the same way (lower case, ``<br />`` removed, words ``[a-z0-9]+('[a-z]+)?``)
and builds the vocabulary the same deterministic way (the ``--vocab-size`` most frequent training words, ties in
alphabetical order), so no rank waits for another and the vocabulary is identical everywhere; its digest is logged
(``--log-all-ranks`` shows every rank's). The model's embedding gradients are sparse (``IndexedSlices``), but a batch
of 64 reviews looks up more rows than the table has: allreduced dense (``--sparse-as-dense``, the default here) ran at
1.13x the steps/s of allgathered at np=2 (docs/benchmarks.md).

    python -m hvdtrain.recipes.imdb --data-dir ~/data                  # one process
    horovodrun -np 4 python -m hvdtrain.recipes.imdb --data-dir ~/data # 4 ranks, Horovod's launcher
    mpirun -np 4 -bind-to none -map-by slot python -m hvdtrain.recipes.imdb --data-dir ~/data
    srun --ntasks=4 python -m hvdtrain.recipes.imdb --data-dir /scratch/imdb

Literature (not measured here): small embedding + convolution or LSTM models trained from scratch reach about
85-88% test accuracy on this split (Maas et al. 2011 report 88.9% with their word vectors).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdtrain.data import DataError, DataSplits
from hvdtrain.download import default_data_dir
from hvdtrain.download import download as fetch
from hvdtrain.log import get_logger
from hvdtrain.recipe import Recipe, fetch_on_rank0
from hvdtrain.recipes.imdb_config import ImdbConfig
from hvdtrain.world import World

ARCHIVE = "aclImdb_v1.tar.gz"
FOLDER = "aclImdb"
ORIGIN = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SPLITS = ("train", "test")
LABELS = {"neg": 0, "pos": 1}
PAD, OOV = 0, 1  # token ids with a fixed meaning; words start at 2

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_MEMBER = re.compile(rf"^(?:\./)?{FOLDER}/(train|test)/(pos|neg)/[^/]+\.txt$")


@dataclass(frozen=True)
class Reviews:
    """Review texts and labels (1 = positive) of one split, in file-name order."""

    texts: list[str]
    labels: np.ndarray


def tokenize(text: str) -> list[str]:
    """Lower-case words of a review, HTML line breaks removed."""
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


def build_vocabulary(token_lists: Iterable[list[str]], size: int) -> list[str]:
    """The ``size - 2`` most frequent words (ties alphabetical): the same on every rank for the same texts."""
    counts = Counter(word for tokens in token_lists for word in tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[: max(0, size - 2)]]


def vocabulary_digest(words: list[str]) -> str:
    """A short checksum of the vocabulary (logged, to compare across ranks)."""
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:12]


def encode(token_lists: Iterable[list[str]], words: list[str], seq_len: int) -> np.ndarray:
    """Token ids, the last ``seq_len`` words of each review (reviews end with the verdict), padded in front."""
    index = {word: i + 2 for i, word in enumerate(words)}
    token_lists = list(token_lists)
    out = np.full((len(token_lists), seq_len), PAD, dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [index.get(word, OOV) for word in tokens[-seq_len:]]
        if ids:
            out[row, seq_len - len(ids) :] = ids
    return out


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _from_folder(root: Path) -> Iterator[tuple[str, str, str, str]]:
    """(split, label, name, text) of every review under an extracted ``aclImdb/``."""
    for split in SPLITS:
        for label in LABELS:
            folder = root / split / label
            if not folder.is_dir():
                raise DataError(f"{root} has no {split}/{label}/ folder: not the extracted {ARCHIVE}")
            for path in folder.glob("*.txt"):
                try:
                    raw = path.read_bytes()
                except OSError as exc:
                    raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
                yield split, label, path.name, _decode(raw, str(path))


def _from_tarball(path: Path) -> Iterator[tuple[str, str, str, str]]:
    """(split, label, name, text) of every review in ``aclImdb_v1.tar.gz``, streamed (``unsup/`` skipped)."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                match = _MEMBER.match(member.name)
                if match is None or not member.isfile():
                    continue
                f = archive.extractfile(member)
                if f is None:
                    continue
                raw = f.read()
                yield match[1], match[2], member.name.rsplit("/", 1)[1], _decode(raw, f"{path}: {member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {path}: {reason} (a damaged download? delete it to fetch it again)") from None


def read_reviews(source: Path) -> dict[str, Reviews]:
    """Both splits from an ``aclImdb/`` folder or the tarball, each sorted by file name; DataError if incomplete."""
    found: dict[str, list[tuple[str, str, str]]] = {split: [] for split in SPLITS}
    reader = _from_folder(source) if source.is_dir() else _from_tarball(source)
    for split, label, name, text in reader:
        found[split].append((f"{label}/{name}", label, text))
    splits = {}
    for split, items in found.items():
        missing = sorted(set(LABELS) - {label for _, label, _ in items})
        if missing:
            raise DataError(f"{source} has no {split}/{missing[0]}/*.txt reviews: not the Large Movie Review Dataset")
        items.sort()
        splits[split] = Reviews([text for _, _, text in items], np.array([LABELS[lb] for _, lb, _ in items]))
    return splits


def find_source(data_dir: Path) -> Path | None:
    """The extracted ``aclImdb/`` in ``data_dir``, else the tarball; None when neither is there."""
    for candidate in (data_dir / FOLDER, data_dir / ARCHIVE):
        if candidate.exists():
            return candidate
    return None


def download(data_dir: Path) -> None:
    """Fetch the tarball into ``data_dir``; ``HVDTRAIN_IMDB_URL`` names a mirror."""
    instead = f"put {ARCHIVE} or its extracted {FOLDER}/ in {data_dir}"
    fetch(data_dir, ARCHIVE, ORIGIN, SHA256, "HVDTRAIN_IMDB_URL", instead)


def load_data(config: ImdbConfig, world: World) -> DataSplits:
    """Token ids (``--seq-len`` per review) and labels; the vocabulary is built from the training reviews."""
    data_dir = config.data_dir or default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    fetch_on_rank0(world, lambda: find_source(data_dir) is not None, lambda: download(data_dir))
    source = find_source(data_dir)
    assert source is not None  # fetch_on_rank0 raised otherwise
    splits = read_reviews(source)
    train_tokens = [tokenize(text) for text in splits["train"].texts]
    test_tokens = [tokenize(text) for text in splits["test"].texts]
    words = build_vocabulary(train_tokens, config.vocab_size)
    get_logger().info(
        "%s: vocabulary of %d words (+ padding, out-of-vocabulary), digest %s",
        source,
        len(words),
        vocabulary_digest(words),
    )
    return DataSplits(
        encode(train_tokens, words, config.seq_len),
        splits["train"].labels,
        encode(test_tokens, words, config.seq_len),
        splits["test"].labels,
    )


def build_model(config: ImdbConfig) -> tf.keras.Model:
    """Embedding, dropout, a 1-D convolution over 5-word windows, global max-pooling, a softmax over 2 classes."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(config.seq_len,), dtype="int32"),
            tf.keras.layers.Embedding(config.vocab_size, config.embedding_dim),
            tf.keras.layers.Dropout(0.2),
            tf.keras.layers.Conv1D(config.filters, 5, activation="relu"),
            tf.keras.layers.GlobalMaxPooling1D(),
            tf.keras.layers.Dropout(0.5),
            tf.keras.layers.Dense(2, activation="softmax"),
        ]
    )


recipe = Recipe(
    name="imdb",
    description="Embedding + 1-D convolution on IMDB review sentiment (raw aclImdb text; downloaded when missing).",
    build_model=build_model,
    load_data=load_data,
    # Dense embedding gradients: measured faster here (python -m hvdtrain.bench.sparse --recipe imdb).
    defaults=ImdbConfig(epochs=4, batch_size=64, lr=1e-3, warmup_epochs=1, sparse_as_dense=True),
)

if __name__ == "__main__":
    recipe.main()
