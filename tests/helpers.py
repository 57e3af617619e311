"""Helpers shared by the tests (not fixtures): clocks, ports, factory types."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from registry.client.localnet import free_ports
from registry.log.clock import now_ms
from registry.log.messages import Publish

PublishFactory = Callable[..., Publish]


def digit_folder(root: Path, per_class: int, test_per_class: int) -> Path:
    """An ImageFolder-layout copy of some of scikit-learn's digits (8×8 greys as PNG files): `train/`
    and `val/`, a class folder 0-9 each, the first images of each class in the data set's order."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    counts: dict[tuple[str, int], int] = {}
    for image, label in zip(bunch.images, bunch.target, strict=True):
        for split, cap in (("train", per_class), ("val", test_per_class)):
            key = (split, int(label))
            if counts.get(key, 0) < cap:
                folder = root / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray((image * 15.9).astype(np.uint8)).save(folder / f"{counts.get(key, 0):04d}.png")
                counts[key] = counts.get(key, 0) + 1
                break
    return root


__all__ = ["PublishFactory", "digit_folder", "free_ports", "now_ms"]
