"""MTLSign on the embedded digits data: fidelity, watermark score, and what the attacks leave.

Embeds with the given config, then measures Algorithm 1's score after the thief's attacks: every
layer fine-tuned on a random 10 % of the training data (not the owner's D'_primary) for 20 epochs
with the clean training's optimiser and learning rate, the same at 10x that rate, and global L1
pruning at 50 % and 70 %; and the score under random wrong keys. Run:
python benchmarks/mtlsign_robustness.py [--lambda-da 1.0] [--wrong-keys 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import fields, replace

import torch

from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.training.attacks import fine_tune, prune_global_l1
from schemes.training.loops import accuracy
from schemes.watermarks.mtlsign import Config, embed, verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Config):
        if f.type in ("int", "float"):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.type == "int" else float, default=None)
    parser.add_argument("--wrong-keys", type=int, default=1000)
    parser.add_argument("--attack-seed", type=int, default=1234)
    args = parser.parse_args()
    overrides = {f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name, None) is not None}
    config = replace(Config(), **overrides)
    torch.manual_seed(0)  # model initialisation in this script only
    data = load_dataset("digits")
    key = hashlib.sha256(b"benchmark owner key").digest()
    model = create_model("lenet5", num_classes=data.num_classes, input_shape=data.input_shape)
    wm = embed(model, data, key, config)
    print(f"config: {config}")
    for name, value in wm.report.items():
        print(f"  {name:<26} {value:.4f}")

    gen = torch.Generator().manual_seed(args.attack_seed)
    subset = torch.randperm(data.x_train.shape[0], generator=gen)[: data.x_train.shape[0] // 10]
    xs, ys = data.x_train[subset], data.y_train[subset]
    attacks = {
        "fine-tune 20 ep, lr 1e-3": lambda: fine_tune(
            wm.model, xs, ys, epochs=20, lr=config.lr, batch_size=64, seed=args.attack_seed
        ),
        "fine-tune 20 ep, lr 1e-2": lambda: fine_tune(
            wm.model, xs, ys, epochs=20, lr=10 * config.lr, batch_size=64, seed=args.attack_seed
        ),
        "prune 50 %": lambda: prune_global_l1(wm.model, 0.5),
        "prune 70 %": lambda: prune_global_l1(wm.model, 0.7),
    }
    print(f"{'attack':<28} {'task acc':>9} {'wm score':>9} {'passes':>7} {'s':>6}")
    for name, run in attacks.items():
        t = time.perf_counter()
        stolen = run()
        verdict = verify(stolen, key, wm.verifier, wm.info)
        acc = accuracy(stolen, data.x_test, data.y_test)
        print(f"{name:<28} {acc:>9.4f} {verdict.score:>9.4f} {verdict.passed!s:>7} {time.perf_counter() - t:>6.1f}")
    t = time.perf_counter()
    scores = [verify(wm.model, os.urandom(32), wm.verifier, wm.info).score for _ in range(args.wrong_keys)]
    first = scores[:200]
    passed = sum(s >= config.gamma for s in scores)
    print(f"first {len(first)} random keys: branch accuracy in [{min(first):.3f}, {max(first):.3f}]")
    print(f"{len(scores)} wrong keys: max score {max(scores):.3f}, passed {passed} ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
