from __future__ import annotations

import numpy as np
import pytest
import qrcode

from mtlsign.qr import SIZE, digits_for, qr_modules, render


def reference(value: int, m: int) -> np.ndarray:
    """The `qrcode` package's matrix for the same version, level, mask and digit string."""
    code = qrcode.QRCode(version=1, error_correction=qrcode.constants.ERROR_CORRECT_M, mask_pattern=0, border=0)
    code.add_data(qrcode.util.QRData(str(value).zfill(digits_for(m)), mode=qrcode.util.MODE_NUMBER))
    code.make(fit=False)
    return np.array(code.get_matrix(), dtype=bool)


@pytest.mark.parametrize("m", [3, 9, 12, 30, 48, 60])
def test_matrices_equal_the_qrcode_package(m: int) -> None:
    rng = np.random.default_rng(m)
    values = np.concatenate([[0, (1 << m) - 1], rng.integers(0, 1 << m, 60)])
    modules = qr_modules(values, m)
    assert modules.shape == (len(values), SIZE, SIZE)
    for value, matrix in zip(values.tolist(), modules, strict=True):
        assert (matrix == reference(value, m)).all(), value


def test_the_map_is_injective() -> None:
    modules = qr_modules(np.arange(5000), 30)
    assert len({m.tobytes() for m in modules}) == 5000


def test_out_of_range_integers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"in \[0, 2\^30\)"):
        qr_modules(np.array([1 << 30]), 30)
    with pytest.raises(ValueError, match="a version-1-M code holds 34"):
        qr_modules(np.array([1]), 120)


def test_render_28x28_is_the_code_at_one_pixel_with_a_3_4_quiet_zone() -> None:
    modules = qr_modules(np.array([12345]), 30)
    image = render(modules, 1, 28, 28)
    assert image.shape == (1, 1, 28, 28) and image.dtype == np.float32
    assert set(np.unique(image)) == {0.0, 1.0}
    assert (image[0, 0, 3:24, 3:24] == (~modules[0]).astype(np.float32)).all()
    quiet = np.ones((28, 28), dtype=bool)
    quiet[3:24, 3:24] = False
    assert (image[0, 0][quiet] == 1.0).all()


def test_render_scales_by_a_whole_number_of_pixels() -> None:
    modules = qr_modules(np.array([7, 8]), 30)
    image = render(modules, 3, 64, 64)  # scale 2: 42 pixels of code, 11 of quiet zone each side
    assert image.shape == (2, 3, 64, 64)
    block = image[0, 0, 11:53, 11:53]
    assert (block == np.repeat(np.repeat((~modules[0]).astype(np.float32), 2, 0), 2, 1)).all()
    assert (image[:, 0] == image[:, 2]).all()


def test_render_refuses_a_too_small_input() -> None:
    with pytest.raises(ValueError, match="too small"):
        render(qr_modules(np.array([1]), 30), 1, 20, 20)
