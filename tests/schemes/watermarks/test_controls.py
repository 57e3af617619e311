"""The null calibration, small (issue 18, D8; the full run is `benchmarks/null_calibration.py`).

Random keys (no search) on LeNet-5 models they were never embedded in: a clean one, one watermarked
by another key with the same scheme, the squatter's own. No key may pass. The two schemes here are
the ones whose answers share a choice the key makes (function-coupled's triples, new label's ε),
where the calibration found passes before: function-coupled version 1 let 7 of 1,000 keys through
on the squatter's own model and on another key's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.null_calibration import Suspect, clean_lenet, embed, random_keys, verify_row

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

KEYS = 200  # per suspect; seeded, so a failure names keys that can be tried again


@pytest.mark.parametrize("scheme", ["function-coupled", "new-label"])
def test_no_random_key_passes_on_a_model_it_was_never_embedded_in(tmp_path: Path, scheme: str) -> None:
    extra = 1 if scheme == "new-label" else 0
    clean_lenet(tmp_path / "clean", 0, extra)
    embed(scheme, "squatter", tmp_path / "squatter", b"\x01" * 16, 0)
    embed(scheme, "victim", tmp_path / "victim", b"\x02" * 16, 0)
    keys = random_keys(np.random.default_rng(0), KEYS)
    rows = [
        verify_row(scheme, tmp_path / "squatter", Suspect(label, tmp_path / name), keys)
        for label, name in (("clean", "clean"), ("other key", "victim"), ("squatter's own", "squatter"))
    ]
    for row in rows:
        print(f"{scheme} / {row.model}: {row.passed} of {row.keys} pass, {row.refused} refused, "
              f"max score {row.max_score} against {row.threshold}")  # fmt: skip
    assert all(row.passed == 0 for row in rows), rows
    assert all(row.refused < row.keys for row in rows), rows  # the keys were judged, not refused
