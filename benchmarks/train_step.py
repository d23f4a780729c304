"""Images/second of a ResNet training step with and without KO on the classifier.

The KO paper reports a negligible cost for collisions on the last layer (ResNet-50
on CIFAR: 3.68 h with SGD vs 3.69 h with SGD + soft collision). This script
measures the step of ``train.classify`` (augmentation, forward, backward, KO,
SGD, under ``jax.jit`` with the batch sharded over the local devices) for
``--ko none|soft|hard`` and for the same network with kinetic (KITINet)
residuals at their defaults (``kinetic``, no KO), fed by the script's own
prefetching loader, and prints:

* images/second and ms/step (median over ``--rounds`` rounds, the three
  variants interleaved round-robin, so machine noise hits them alike);
* the ratio of each variant's step time to the plain step's;
* the fraction of the loop's time spent waiting for the next batch.

Usage::

    python -m benchmarks.train_step                      # CPU-sized default
    python -m benchmarks.train_step --width 64 --batch-size 128 --model resnet50  # GPU

Writes ``--out`` (default ``results/benchmarks/train_step.json``) and a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from train import classify, loop, registry


def build(args, ko: str, model_name: str):
    model = loop.init_model(
        lambda: registry.build(
            model_name,
            "image",
            10,
            in_channels=3,
            width=args.width,
            rngs=loop.param_rngs(0),
        )
    )
    schedule = loop.make_schedule(0.1, 10_000)
    tx = loop.make_optimizer(
        "sgd", schedule, weight_decay=5e-4, ko=ko, coll_coef=args.coll_coef, ko_mask="classifier"
    )
    mean = np.full((3,), 0.5, np.float32)
    std = np.full((3,), 0.25, np.float32)
    apply = classify.make_apply(mean, std, crop_pad=4, flip=True)
    prog, params, rest = loop.build_program(model, tx, apply, mesh=loop.make_mesh())
    return prog, loop.init_state(prog, params, rest, seed=0)


def time_steps(prog, state, images, labels, steps: int, bs: int):
    """Runs ``steps`` steps fed by the prefetching loader; returns (state, seconds, wait seconds)."""

    def make(i):
        sl = slice((i % (len(labels) // bs)) * bs, (i % (len(labels) // bs) + 1) * bs)
        return loop.to_global(prog, images[sl]), loop.to_global(prog, labels[sl])

    feed = loop.Prefetcher(make, range(steps))
    t = time.perf_counter()
    for x, y in feed:
        state, _ = prog.train_step(state, x, y)
    jax.block_until_ready(state)
    return state, time.perf_counter() - t, feed.wait_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", choices=registry.names("image"))
    p.add_argument("--width", type=int, default=16, help="64 = the standard ResNet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--coll-coef", type=float, default=0.1)
    p.add_argument("--out", default="results/benchmarks/train_step.json")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    n = args.batch_size * 4
    s = args.image_size
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,)).astype(np.int32)
    # "kinetic": the same network with KITINet residuals at their defaults, no KO.
    kinetic_model = args.model + "_kinetic"
    variants = ("none", "soft", "hard")
    if kinetic_model in registry.names("image"):
        variants += ("kinetic",)
    progs, states, times, waits, compile_s = {}, {}, {v: [] for v in variants}, {}, {}
    for ko in variants:
        t = time.perf_counter()
        if ko == "kinetic":
            progs[ko], states[ko] = build(args, "none", kinetic_model)
        else:
            progs[ko], states[ko] = build(args, ko, args.model)
        states[ko], _, _ = time_steps(progs[ko], states[ko], images, labels, 2, args.batch_size)
        compile_s[ko] = time.perf_counter() - t
        waits[ko] = []
    for _ in range(args.rounds):
        for ko in variants:
            states[ko], sec, wait = time_steps(
                progs[ko], states[ko], images, labels, args.steps, args.batch_size
            )
            times[ko].append(sec / args.steps)
            waits[ko].append(wait / sec)
    base = statistics.median(times["none"])
    rows = []
    for ko in variants:
        med = statistics.median(times[ko])
        rows.append(
            {
                "ko": ko,
                "ms_per_step": 1e3 * med,
                "images_per_second": args.batch_size / med,
                "ratio_to_none": med / base,
                "data_wait_fraction": statistics.median(waits[ko]),
                "first_two_steps_s": compile_s[ko],
            }
        )
    result = {
        "config": vars(args),
        "devices": jax.device_count(),
        "backend": jax.default_backend(),
        "versions": loop.versions(),
        "rows": rows,
    }
    print(
        f"{args.model} width {args.width}, batch {args.batch_size}, {s}x{s}x3, "
        f"{jax.device_count()} {jax.default_backend()} device(s), "
        f"median of {args.rounds} rounds x {args.steps} steps"
    )
    print("| variant | ms/step | images/s | ratio to none | data wait | first 2 steps (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['ko']} | {r['ms_per_step']:.1f} | {r['images_per_second']:.1f} | "
            f"{r['ratio_to_none']:.3f} | {r['data_wait_fraction']:.4f} | "
            f"{r['first_two_steps_s']:.1f} |"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
