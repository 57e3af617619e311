"""One rule, one home: each scheme's `verify` judges its info by the contracts schema and by nothing else.

For every registered scheme, an info the schema (`contracts.infos`, what the node checks a claim's
info with on arrival) refuses is refused by the scheme's own `verify` in the schema's very words, so
the same field is named; and infos the schema accepts, at the edges where the two once drifted, are
judged (a verdict), not refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from contracts.errors import InfoError, SchemeError
from contracts.infos import INFO_TYPES
from mtlsign.verify import Verdict, WatermarkInfo
from schemes.models.zoo import create_model
from schemes.watermarks.base import Suspect, get_scheme, list_schemes
from tests.schemes.watermarks import test_blind, test_function_coupled, test_new_label, test_passport
from tests.schemes.watermarks import test_mtlsign as test_mtlsign_embed

#: A claim's parts: the suspect, the verifier artifact and a valid info.
Claim = tuple[Suspect, dict[str, torch.Tensor], dict[str, Any]]
SHAPE = (1, 28, 28)


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=torch.int64)


def _mtlsign() -> Claim:
    model = create_model("lenet5", num_classes=10, input_shape=SHAPE)
    info = WatermarkInfo(8, 0.7, tuple(model.wm_taps), 4, 64, SHAPE, (0.3,), (0.32,))  # type: ignore[arg-type]
    return model, test_mtlsign_embed._random_head(model, info), info.to_json()


CLAIMS: dict[str, Callable[[], Claim]] = {
    "mtlsign": _mtlsign,
    "new-label": lambda: (_zeros, {}, test_new_label._info()),
    "function-coupled": lambda: (_zeros, {}, test_function_coupled._info()),
    "blind": lambda: (_zeros, test_blind._verifier(), test_blind._info()),
    "passport": lambda: (test_passport._lenet(), test_passport._verifier(), test_passport._info()),
}
#: Values the schema refuses where the node and a scheme once disagreed (the stricter rule won).
DRIFTED: dict[str, list[dict[str, Any]]] = {
    "mtlsign": [{"gamma": 0.5}, {"n": 1.5e3}, {"pool": 0}],
    "new-label": [{"delta": 0}, {"threshold": 0}],
    "function-coupled": [{"n_verify": 201}, {"split_seed": 3}, {"version": 2.0}, {"candidate": 4},
                         {"dataset_sha256": "AB" * 32}, {"split_seed": None, "test_fraction": None}],
    "blind": [{"n": 10_001}, {"threshold": 1.0}, {"encoder": "unet"}, {"discriminator": "cnn"}, {"epochs": 0},
              {"logo_sha256": "AB" * 32}, {"logo_source": "url"}, {"std": [0.0]}],
    "passport": [{"layers": {"block1.0": [2, 400]}}, {"layers": {}}, {"version": "V4"}, {"noise_sigmas": 101},
                 {"delta": 1.5}, {"noise_floor": -0.1}, {"noise_draws": 0}],
}  # fmt: skip
#: Values at the schema's edges, which the scheme must judge rather than refuse.
EDGES: dict[str, list[dict[str, Any]]] = {
    "mtlsign": [{"gamma": 1}, {"gamma": 0.5000001}, {"n": 2}],
    "new-label": [{"beta": 1.0}, {"threshold": 1}],
    "function-coupled": [{"n_verify": 200}, {"mode": "direct"}, {"candidate": 3}, {"r": 0}],
    "blind": [{"threshold": 0.999}, {"alpha": 0}, {"epochs": 10**6}, {"logo_source": "file"},
              {"encoder": "residual-cnn-9999"}, {"min_ssim": 0}],
    "passport": [{"delta": 0}, {"noise_sigmas": 100}, {"noise_floor": 1}, {"version": "V1"}],
}  # fmt: skip


def _spoilt(info: dict[str, Any], scheme: str) -> list[tuple[str, dict[str, Any]]]:
    """(the field it names, the info) for every field given a bool, null or a huge number, left
    out, or joined by an unknown one, and for the drifted values."""
    cases = [(name, {**info, name: bad}) for name in sorted(INFO_TYPES[scheme].FIELDS) for bad in (True, None, 10**12)]
    cases += [(name, {k: v for k, v in info.items() if k != name}) for name in sorted(info)]
    cases += [("colour", {**info, "colour": "blue"})]
    return cases + [(next(iter(changes)), {**info, **changes}) for changes in DRIFTED[scheme]]


def test_every_registered_scheme_has_a_claim_here() -> None:
    assert sorted(CLAIMS) == sorted(DRIFTED) == sorted(EDGES) == sorted(s.name for s in list_schemes())


@pytest.mark.parametrize("scheme", sorted(CLAIMS))
def test_what_the_schema_refuses_the_scheme_refuses_in_its_words(scheme: str) -> None:
    suspect, verifier, info = CLAIMS[scheme]()
    verify = get_scheme(scheme).verify
    for field, spoilt in _spoilt(info, scheme):
        with pytest.raises(InfoError) as schema:
            INFO_TYPES[scheme].from_json(spoilt)
        with pytest.raises(SchemeError) as judged:
            verify(suspect, b"k" * 32, verifier, spoilt)
        assert str(judged.value) == str(schema.value), (field, spoilt)
        assert field in str(schema.value) or field == "scheme", (field, str(schema.value))


@pytest.mark.parametrize("scheme", sorted(CLAIMS))
def test_what_the_schema_accepts_the_scheme_judges(scheme: str) -> None:
    suspect, verifier, info = CLAIMS[scheme]()
    for changes in [{}, *EDGES[scheme]]:
        edge = {**info, **changes}
        INFO_TYPES[scheme].from_json(edge)
        assert isinstance(get_scheme(scheme).verify(suspect, b"k" * 32, verifier, edge), Verdict), changes


@pytest.mark.parametrize("scheme", sorted(CLAIMS))
def test_a_schemes_black_box_flag_is_its_infos(scheme: str) -> None:
    assert get_scheme(scheme).black_box is INFO_TYPES[scheme].BLACK_BOX
