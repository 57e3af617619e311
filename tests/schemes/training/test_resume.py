"""Long embeddings that survive: a checkpoint after every epoch, `--resume` after an interruption
(schemes/resume.py), down to a SIGKILL of the `wmnode embed` process.

The default suite interrupts one short embedding and resumes it bit for bit; the SIGKILL of a
full-budget `wmnode embed`, its resume, fidelity and verification run with `-m slow`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.identity import Identity, write_identity
from schemes.training.resume import ResumeError, checkpoints, epochs
from schemes.workflow.bundle import load_bundle
from schemes.workflow.pipeline import CHECKPOINT_DIR, embed_to_bundle

IDENTITY = Identity(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
QUICK = {"n": 200, "clean_epochs": 2, "embed_epochs": 4, "da_attacks": 1, "da_epochs": 1, "da_every": 2}


class Interrupted(Exception):
    pass


def test_a_resumed_embedding_is_the_one_never_interrupted(tmp_path: Path) -> None:
    nonce = bytes(16)
    embed_to_bundle(IDENTITY, "lenet5", "digits", tmp_path / "whole", overrides=QUICK, nonce=nonce)

    def stop_in_the_embedding(step: int, total: int, message: str) -> None:
        if "wm loss" in message and step == 3:  # the clean loop is done, the embedding loop half way
            raise Interrupted

    with pytest.raises(Interrupted):
        embed_to_bundle(IDENTITY, "lenet5", "digits", tmp_path / "cut", overrides=QUICK, nonce=nonce,
                        progress=stop_in_the_embedding)  # fmt: skip
    saved = sorted(p.name for p in (tmp_path / "cut" / CHECKPOINT_DIR).iterdir())
    assert saved == ["mtlsign.clean.safetensors", "mtlsign.embed.safetensors", "run.json"]
    with pytest.raises(Exception, match="pass --resume to continue it"):
        embed_to_bundle(IDENTITY, "lenet5", "digits", tmp_path / "cut", overrides=QUICK)
    with pytest.raises(Exception, match="differs from the run it would resume in config"):
        embed_to_bundle(IDENTITY, "lenet5", "digits", tmp_path / "cut", overrides={**QUICK, "n": 300}, resume=True)
    report = embed_to_bundle(IDENTITY, "lenet5", "digits", tmp_path / "cut", overrides=QUICK, resume=True)
    assert report["verifiable"].startswith("verifiable by any community: mtlsign's verification inputs")
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()  # a finished run leaves its bundle alone
    whole, cut = load_bundle(tmp_path / "whole"), load_bundle(tmp_path / "cut")
    assert cut.key.nonce == whole.key.nonce
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), cut.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # bit for bit: the same generators, optimiser moments and shifts
    assert all(torch.equal(whole.verifier[k], cut.verifier[k]) for k in whole.verifier)
    assert report["wm_score"] == json.loads((tmp_path / "whole" / "report.json").read_text())["wm_score"]


def test_a_checkpoint_of_another_loop_or_a_damaged_one_is_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with checkpoints(tmp_path):
        assert list(epochs("loop", 2, {"model": model})) == [0, 1]
        assert list(epochs("loop", 2, {"model": model})) == []  # finished: its state, no epoch
        with pytest.raises(ResumeError, match="of another run"):
            list(epochs("loop", 3, {"model": model}))
        with pytest.raises(ResumeError, match="does not fit this run"):
            list(epochs("loop", 2, {"model": torch.nn.Linear(3, 2)}))
        (tmp_path / "loop.safetensors").write_bytes(b"\x80\x04garbage")
        with pytest.raises(ResumeError, match="cannot read the checkpoint"):
            list(epochs("loop", 2, {"model": model}))
    assert list(epochs("loop", 2, {"model": model})) == [0, 1]  # no checkpoint directory: a plain range


@pytest.mark.slow  # a full-budget embedding (8 + 40 epochs) to kill and resume: CI runs it with -m slow
def test_an_embedding_killed_mid_run_resumes_verifies_and_keeps_its_fidelity(tmp_path: Path) -> None:
    key = tmp_path / "owner.key"
    write_identity(IDENTITY, key)
    out = tmp_path / "bundle"
    command = [sys.executable, "-m", "registry.cli", "embed", "--identity", str(key), "--out", str(out), "--json",
               "-o", "clean_epochs=8", "-o", "embed_epochs=40", "-o", "da_attacks=1", "-o", "da_epochs=3"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    embedding = out / CHECKPOINT_DIR / "mtlsign.embed.safetensors"
    deadline = time.monotonic() + 120
    while not embedding.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # a few more epochs
    assert process.poll() is None, "the embedding ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "model.safetensors").exists()
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["wm_score"] >= report["threshold"]
    assert report["accuracy"] >= report["clean_accuracy"] - 0.05, report  # the fidelity bar
    verified = subprocess.run([sys.executable, "-m", "registry.cli", "verify", "--bundle", str(out), "--suspect",
                               str(out)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
