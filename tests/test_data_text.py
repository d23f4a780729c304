"""Tests of kinetix.data.text: tokenizer, vocabulary, the synthetic task, IMDb via TFDS mock data."""

import doctest

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
    with pytest.raises(ValueError, match="imdb_reviews"):
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
