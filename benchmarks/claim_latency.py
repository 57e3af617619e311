"""Submit-to-decision time of an MTLSign claim on LeNet-5 in a local three-node community.

Starts three node processes on loopback, embeds MTLSign (the scheme's quick config, or the
default with --full) on the digits data, publishes, then claims several suspects (the model pruned
by 1 %, 2 %, ...: each one new to every node, so every claim includes fetching it from a peer) and
prints, per claim, the time from submit to a majority decision, with each node's own fetch-and-verify
time from its log. The community requires reference models and records a plain LeNet-5, so every
judgement includes the null-model check (DESIGN §6.1 rule 3). Run: .venv/bin/python benchmarks/claim_latency.py
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from registry.identity import Identity
from registry.localnet import LocalCommunity, write_local_configs
from registry.ownership import claim_suspect, publish_bundle
from schemes import get_scheme
from schemes.attacks import prune_global_l1
from schemes.workflow import embed_to_bundle
from schemes.zoo import load_model, save_model

REFERENCES = '[verification]\nrequire_references = true\n\n[[references]]\nrecipe = "plain"\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="MTLSign's default config instead of quick (both N = 600)")
    args = parser.parse_args()
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
                          f"(references checked per vote: {sorted(refs)}, bounds {bounds})")  # fmt: skip
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


if __name__ == "__main__":
    main()
