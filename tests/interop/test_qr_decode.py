"""A real QR reader (zbar) decodes MTLSign's key samples to their integers, at 28×28 and upscaled:
the inputs stay codes a phone could scan (DESIGN §4.6)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mtlsign.pikey import key_sequence
from mtlsign.qr import digits_for, qr_modules, render
from schemes.workflow.pipeline import _png

pytestmark = pytest.mark.interop


def zbarimg() -> str:
    found = shutil.which("zbarimg")
    if found is None:
        if os.environ.get("WMNODE_REQUIRE_INTEROP") == "1":
            pytest.fail("WMNODE_REQUIRE_INTEROP=1 but zbarimg (Debian zbar-tools) is not installed", pytrace=False)
        pytest.skip("zbarimg (Debian zbar-tools) is not installed")
    return found


@pytest.mark.parametrize(("shape", "scale"), [((1, 28, 28), 1), ((1, 28, 28), 4), ((3, 32, 32), 1), ((1, 64, 64), 2)])
def test_zbar_reads_every_sample(tmp_path: Path, shape: tuple[int, int, int], scale: int) -> None:
    exe = zbarimg()
    seq = key_sequence(hashlib.sha256(b"qr interop").digest(), 600)
    count = 24
    images = render(qr_modules(seq.integers[:count], seq.m), *shape)
    paths = []
    for i in range(count):
        grey = (images[i].mean(axis=0) * 255).astype(np.uint8)
        path = tmp_path / f"s{i:02d}.png"
        path.write_bytes(_png(np.repeat(np.repeat(grey, scale, 0), scale, 1)))
        paths.append(str(path))
    out = subprocess.run([exe, "-q", "--raw", *paths], capture_output=True, text=True, timeout=120)
    decoded = out.stdout.split()
    expected = [str(v).zfill(digits_for(seq.m)) for v in seq.integers[:count].tolist()]
    assert decoded == expected
