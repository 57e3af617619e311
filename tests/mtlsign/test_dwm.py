from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtlsign.dwm import build_dwm
from mtlsign.qr import qr_modules, render

KEY = hashlib.sha256(b"owner key").digest()
ROOT = Path(__file__).resolve().parents[2]
SNIPPET = (
    "import hashlib, sys; from mtlsign.dwm import build_dwm\n"
    "s = build_dwm(hashlib.sha256(b'owner key').digest(), 600, (1, 28, 28), [0.5], [0.25])\n"
    "print(hashlib.sha256(s.x.numpy().tobytes() + s.y.numpy().tobytes()).hexdigest())"
)


def test_model_ready_tensors() -> None:
    dwm = build_dwm(KEY, 600, (1, 28, 28), [0.5], [0.25])
    assert dwm.x.shape == (600, 1, 28, 28) and dwm.x.dtype == torch.float32
    assert dwm.y.shape == (600,) and dwm.y.dtype == torch.int64
    expected = (torch.from_numpy(render(qr_modules(dwm.sequence.integers, 30), 1, 28, 28)) - 0.5) / 0.25
    assert torch.equal(dwm.x, expected)
    assert set(torch.unique(dwm.x).tolist()) == {-2.0, 2.0}


def test_bit_for_bit_the_same_in_another_process() -> None:
    here = build_dwm(KEY, 600, (1, 28, 28), [0.5], [0.25])
    digest = hashlib.sha256(here.x.numpy().tobytes() + here.y.numpy().tobytes()).hexdigest()
    out = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == digest


def test_colour_inputs_and_bad_normalisation() -> None:
    dwm = build_dwm(KEY, 16, (3, 32, 32), [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261])
    assert dwm.x.shape == (16, 3, 32, 32)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        build_dwm(KEY, 16, (3, 32, 32), [0.5], [0.5])
