"""Digital passport V1, V2 and V3 (Table 1) side by side with T1 passports, LeNet-5 on the digits data.

For each version, measured in one run: the clean LeNet-5's accuracy (A_o), the passport model's with
its valid passport (A_p), the accuracy over `--fakes` fake T1 passports from the attacker's seed
(mean and max, A_t), the drop S = A_p − mean A_t and the inconsistency I = A_o − A_p (Eq. 7), then the
§3.2 verification score on the model itself, on the model under the wrong key, on a passport model
embedded under another key, and on a trained plain LeNet-5; and the embedding's wall and CPU seconds.
Run: python benchmarks/passport_versions.py [--epochs 20] [--fakes 100] [--threads 1] [--no-other-model]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import torch

from mtlsign.verify import Verdict
from schemes.data.datasets import load_dataset
from schemes.models.zoo import create_model
from schemes.training.loops import accuracy, train_classifier
from schemes.watermarks.passport import Config, embed, verify

OWNER = hashlib.sha256(b"benchmark passport owner").digest()
OTHER = hashlib.sha256(b"benchmark passport other owner").digest()


def _fmt(verdict: Verdict) -> str:
    return f"{100 * verdict.score:5.1f} {'pass' if verdict.passed else 'fail'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--fakes", type=int, default=Config.n_fakes)
    parser.add_argument("--attack-seed", type=int, default=Config.attack_seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--versions", default="V1,V2,V3")
    parser.add_argument("--no-other-model", action="store_true", help="skip the model embedded under another key")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("digits", seed=0)

    torch.manual_seed(0)  # model initialisation in this script only
    plain = create_model("lenet5", num_classes=data.num_classes, input_shape=data.input_shape)
    train_classifier(
        plain, data.x_train, data.y_train, epochs=args.epochs, lr=Config.lr, batch_size=Config.batch_size,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    print(f"plain lenet5 (a thief's own model): {100 * accuracy(plain, data.x_test, data.y_test):.2f} %")

    rows = []
    for version in args.versions.split(","):
        config = Config(version=version, epochs=args.epochs, n_fakes=args.fakes, attack_seed=args.attack_seed)
        torch.manual_seed(0)
        model = create_model("lenet5-passport", num_classes=data.num_classes, input_shape=data.input_shape)
        wm = embed(model, data, OWNER, config)
        r = wm.report
        own = verify(wm.model, OWNER, wm.verifier, wm.info)
        wrong = verify(wm.model, OTHER, wm.verifier, wm.info)
        other = "-"
        if not args.no_other_model:
            torch.manual_seed(1)
            stranger = create_model("lenet5-passport", num_classes=data.num_classes, input_shape=data.input_shape)
            theirs = embed(stranger, data, OTHER, Config(version=version, epochs=args.epochs, n_fakes=0, noise_draws=1))
            other = _fmt(verify(theirs.model, OWNER, wm.verifier, wm.info))
        rows.append(
            f"{version:<4} {100 * r['clean_accuracy']:6.2f} {100 * r['accuracy']:6.2f} "
            f"{100 * r['fake_accuracy_mean']:6.2f} {100 * r['fake_accuracy_max']:6.2f} "
            f"{100 * r['protection_strength']:6.2f} {100 * r['inconsistency']:6.2f}  {_fmt(own):>10} {_fmt(wrong):>10} "
            f"{other:>10} {_fmt(verify(plain, OWNER, wm.verifier, wm.info)):>10} "
            f"{r['seconds']:6.1f} {r['cpu_seconds']:6.1f}"
        )
        print(f"{version} done at {time.strftime('%H:%M:%S')}", flush=True)

    print(f"\nLeNet-5 on digits, T1 passports, {args.epochs} epochs, {args.fakes} fake T1 passports (percent)")
    print(
        "ver  clean  valid  fake    fake   drop S   I       verify:own  wrong key  other key   plain      "
        "wall s  cpu s\n                    mean    max"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
