"""Submit-to-decision time of claims in a local three-node community, with every null check.

Starts three node processes on loopback, embeds MTLSign (the scheme's quick config, or the
default with --full) on the digits data, publishes, then claims several suspects (the model pruned
by 1 %, 2 %, ...: each one new to every node, so every claim includes fetching it from a peer) and
prints, per claim, the time from submit to a majority decision, with each node's own fetch-and-verify
time from its log. The community requires reference models and records a plain LeNet-5, so every
judgement includes the null-model check (DESIGN §6.1 rule 3), and every judge verifies the claim's
control keys on the suspect (schemes.controls; their number is printed).

With --timm it also trains an owner's timm ResNet-18 at 3×32×32 on an image folder of the digits
that the community pins, fine-tunes new label and passport into it, and claims new label through
a prediction API (black box, `wmnode serve-model`) and passport on the model file (white box).
Run: .venv/bin/python benchmarks/claim_latency.py [--timm]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from contracts.datasets import PinnedDataset
from contracts.identity import Identity
from registry.cli.ownership import claim_suspect, publish_bundle
from registry.client.localnet import LocalCommunity, write_local_configs
from schemes import get_scheme
from schemes.data.datasets import load_dataset
from schemes.data.folder import folder_manifest
from schemes.models.zoo import ModelCard, load_model, save_model
from schemes.training.attacks import prune_global_l1
from schemes.training.loops import train_classifier
from schemes.workflow.pipeline import embed_to_bundle

REFERENCES = '[verification]\nrequire_references = true\n\n[[references]]\nrecipe = "plain"\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="MTLSign's default config instead of quick (both N = 600)")
    parser.add_argument("--timm", action="store_true", help="also new label and passport on a timm ResNet-18")
    args = parser.parse_args()
    lenet(args)
    if args.timm:
        timm_claims()


def _controls(status: dict[str, Any]) -> str:
    return ", ".join(sorted({v["msg"]["controls"].split(":")[0] or "0" for v in status["votes"]}))


def lenet(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wmnode-claim-bench-") as tmp:
        base = Path(tmp)
        owner = Identity.generate()
        options = {} if args.full else dict(get_scheme("mtlsign").quick)
        started = time.perf_counter()
        report = embed_to_bundle(owner, "lenet5", "digits", base / "bundle", scheme="mtlsign", overrides=options)
        print(
            f"embedded MTLSign (N = {report.get('n', options.get('n', 600))}) in {time.perf_counter() - started:.0f} s"
        )
        configs = write_local_configs(base / "cfg", 3, secret="bench-secret-0123456789", extra=REFERENCES)
        community = LocalCommunity(configs, base / "run")
        with community:
            community.wait_ready(timeout=900, verifiers=True)
            with community.client(0) as client:
                publish_bundle(client, owner, base / "bundle")
                times = []
                model, card = load_model(base / "bundle")
                for i in range(args.claims):
                    suspect = base / f"suspect-{i}"
                    save_model(prune_global_l1(model, 0.01 * (i + 1)), card, suspect)
                    status = claim_suspect(client, owner, base / "bundle", str(suspect), timeout_s=120)
                    assert status["decided"] == "owner", status["votes"]
                    times.append(status["seconds_to_decision"])
                    refs = {len([r for r in v["msg"]["references"].split(",") if r]) for v in status["votes"]}
                    bounds = sorted({v["msg"]["fp_bound"] for v in status["votes"]})
                    print(f"claim {i + 1}: decided {status['decided']} in {times[-1]:.3f} s "
                          f"(references checked per vote: {sorted(refs)}, control keys {_controls(status)}, "
                          f"bounds {bounds})")  # fmt: skip
        verify_times = [
            float(m)
            for node in community.nodes
            for m in re.findall(r"claim #\d+: owner .* in ([0-9.]+) s", node.log_path.read_text())
        ]
    print(f"submit -> decision: median {statistics.median(times):.3f} s, max {max(times):.3f} s over {len(times)}")
    if verify_times:
        print(
            f"one node's fetch + verify: median {statistics.median(verify_times):.3f} s, max {max(verify_times):.3f} s"
        )
        print("every node, every claim (s):", " ".join(f"{t:.2f}" for t in verify_times))


SHAPE, IMAGENET = (3, 32, 32), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _digit_folder(root: Path, per_class: int = 50, test_per_class: int = 20) -> Path:
    """The digits as PNG files in the ImageFolder layout (train/ and val/, a folder per class)."""
    bunch = load_digits()
    counts: dict[tuple[str, int], int] = {}
    for image, label in zip(bunch.images, bunch.target, strict=True):
        for split, cap in (("train", per_class), ("val", test_per_class)):
            done = counts.get((split, int(label)), 0)
            if done < cap:
                (root / split / str(label)).mkdir(parents=True, exist_ok=True)
                Image.fromarray((image * 15.9).astype(np.uint8)).save(root / split / str(label) / f"{done:04d}.png")
                counts[(split, int(label))] = done + 1
                break
    return root


def timm_claims() -> None:
    """New label (through a prediction API) and passport (the file) on an owner's timm ResNet-18."""
    with tempfile.TemporaryDirectory(prefix="wmnode-claim-bench-timm-") as tmp:
        base = Path(tmp)
        folder = _digit_folder(base / "data")
        pinned = PinnedDataset("digits-folder", "folder", folder, folder_manifest(folder), 10)
        extra = (f'[[datasets]]\nname = "digits-folder"\nformat = "folder"\npath = "{folder}"\n'
                 f'manifest_sha256 = "{pinned.manifest_sha256}"\nnum_classes = 10\n')  # fmt: skip
        configs = write_local_configs(base / "cfg", 3, secret="bench-secret-0123456789", extra=extra)
        owner = Identity.generate()
        data = load_dataset("folder", path=folder, input_shape=SHAPE, normalisation=IMAGENET)
        card = ModelCard("timm:resnet18", 10, SHAPE, IMAGENET[0], IMAGENET[1], classifier="fc")
        torch.manual_seed(0)
        given = card.build()
        train_classifier(given, data.x_train, data.y_train, epochs=6, lr=1e-3, batch_size=32,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
        save_model(given, card, base / "given")
        budgets = {"new-label": {"epochs": 6}, "passport": {"epochs": 6, "n_fakes": 10, "noise_draws": 2,
                                                          "n_eval": 200}}  # fmt: skip
        for scheme, options in budgets.items():
            started = time.perf_counter()
            report = embed_to_bundle(owner, "", "digits-folder", base / scheme, scheme=scheme, overrides=options,
                                     model_path=base / "given", pinned=(pinned,))  # fmt: skip
            print(f"timm:resnet18 {scheme}: watermark {report['wm_score']:.3f} (threshold {report['threshold']:.3f}) "
                  f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        community = LocalCommunity(configs, base / "run")
        with community:
            community.wait_ready(timeout=900, verifiers=True)
            with community.client(0) as client, _served(base / "new-label") as url:
                for scheme, suspect in (("new-label", url), ("passport", str(base / "passport"))):
                    publish_bundle(client, owner, base / scheme)
                    status = claim_suspect(client, owner, base / scheme, suspect, timeout_s=600)
                    bounds = sorted({v["msg"]["fp_bound"] for v in status["votes"]})
                    print(f"timm:resnet18 {scheme} ({'prediction API' if scheme == 'new-label' else 'model file'}): "
                          f"decided {status['decided']} in {status['seconds_to_decision']:.2f} s, control keys "
                          f"{_controls(status)}, bounds {bounds}")  # fmt: skip


@contextlib.contextmanager
def _served(bundle: Path) -> Iterator[str]:
    """`wmnode serve-model` in its own process; its prediction URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "registry.cli", "serve-model", str(bundle), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/predict"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(url).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield "predict+" + url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
