"""A decision that holds for any model (DESIGN §6.1 rules 3 and 4), at the judge, as an attacker tries it.

Each attack is shown succeeding with its check switched off, then failing with it on, beside the
honest path of the same test. The judge runs in process (`schemes.judge.judge`), on model files
written as a node hands them to its judges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from registry.judge import process as judging
from schemes.data.community import community_data
from schemes.models.zoo import ModelCard, create_model, model_to_bytes
from schemes.watermarks.base import get_scheme
from schemes.watermarks.controls import control_keys, verify_with_controls
from schemes.watermarks.suspect import PixelCodec, pixel_view

SHAPE = (1, 28, 28)


def new_label_info(**overrides: Any) -> dict[str, Any]:
    data = community_data("digits", SHAPE)
    info = {"scheme": "new-label", "dataset": "digits", "delta": 10, "beta": 0.3, "n": 100, "threshold": 0.5,
            "input_shape": list(SHAPE), "mean": list(data.mean), "std": list(data.std)}  # fmt: skip
    return {**info, **overrides}


def write_job(tmp: Path, model: nn.Module, card: ModelCard, info: dict[str, Any], key: bytes, **job: Any) -> dict:
    model_path, info_path, verifier_path = tmp / "suspect.safetensors", tmp / "info.json", tmp / "verifier.safetensors"
    model_path.write_bytes(model_to_bytes(model, card))
    info_path.write_text(json.dumps(info))
    save_file({}, str(verifier_path))  # new label ships nothing: its inputs come from the key
    return {
        "op": "judge", "scheme": info["scheme"], "key": key.hex(), "info_path": str(info_path),
        "verifier_path": str(verifier_path), "model_path": str(model_path), "predict_uri": None,
        "fetch": {"allow_loopback": True, "allow_private": False, "allow_hosts": [], "max_bytes": 2**28,
                  "timeout_s": 5.0},
        "references": [], "threshold_floor": 0.0, "max_false_positive": 1e-6, "datasets": [],
        "build": {"architectures": ["*"], "max_parameters": 10**8}, "control_seed": "ab" * 32, "controls": 8,
        "tries": 1, **job,
    }  # fmt: skip


def always(model: nn.Module, label: int) -> nn.Module:
    """`model` made generic: it answers `label` to every input (its head's bias outweighs the rest)."""
    with torch.no_grad():
        head = model.head
        head.weight.zero_()
        head.bias.zero_()
        head.bias[label] = 10.0
    return model


def test_control_keys_come_from_the_seed_alone() -> None:
    keys = control_keys(b"\x01" * 32, 8)
    assert keys == control_keys(b"\x01" * 32, 8) and len(set(keys)) == 8 and all(len(k) == 32 for k in keys)
    assert not set(keys) & set(control_keys(b"\x02" * 32, 8))


def test_a_generic_suspect_is_not_owner_whoever_claims_it(tmp_path: Path) -> None:
    """A new-label-shaped model that answers Δ to everything passes any key's verification. Without
    controls the vote is `owner` with a bound of 1e-100-ish (the chance rate 0.01 it assumes); with
    them, every control scores 1.0, at the threshold: `not-owner`, and the rate bound says why."""
    torch.manual_seed(0)
    model = always(create_model("lenet5", num_classes=11, input_shape=SHAPE), 10)
    info = new_label_info()
    card = ModelCard("lenet5", 11, SHAPE, tuple(info["mean"]), tuple(info["std"]))
    job = write_job(tmp_path, model, card, info, b"\x07" * 32)

    off = judging.judge({**job, "controls": 0})
    assert off["verdict"] == "owner", off  # the attack, with the check switched off
    assert float(off["fp_bound"]) < 1e-6

    on = judging.judge(job)
    assert on["verdict"] == "not-owner", on
    assert "8 of 8 control keys score 1.000, near the threshold" in on["reason"]
    count, best, near, rate = on["controls"].split(":")
    assert (count, best, near) == ("8", "1000", "8") and float(rate) == 1.0


def test_controls_of_a_prediction_api_are_asked_in_one_batch(tmp_path: Path) -> None:
    """The two-pass batching gives the same verdicts as asking key by key, in one call."""
    torch.manual_seed(1)
    model = create_model("lenet5", num_classes=11, input_shape=SHAPE).eval()
    calls: list[int] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        with torch.no_grad():
            return model(x).argmax(1)

    scheme, info, key = get_scheme("new-label"), new_label_info(), b"\x09" * 32
    controls = control_keys(b"\x03" * 32, 8)
    one, many, _ = verify_with_controls(scheme, predict, key, controls, {}, info)
    assert calls == [900]  # the claim's 100 inputs and 8 controls' 100 each, together
    direct, direct_many, _ = verify_with_controls(scheme, model, key, controls, {}, info)
    assert one.score == direct.score and [v.score for v in many] == [v.score for v in direct_many]


def test_a_refolded_normalisation_is_the_same_function(tmp_path: Path) -> None:
    """A thief moves the card's std into the first conv (mean 0: zero padding is pixel 0 either way):
    the copy computes the same function of pixels, and the judge reads the same answers from it."""
    torch.manual_seed(2)
    info = new_label_info(mean=[0.0], std=[0.5])
    model = create_model("lenet5", num_classes=11, input_shape=SHAPE)
    card = ModelCard("lenet5", 11, SHAPE, (0.0,), (0.5,))
    stolen = create_model("lenet5", num_classes=11, input_shape=SHAPE)
    stolen.load_state_dict(model.state_dict())
    with torch.no_grad():
        stolen.block1[0].weight.mul_(2.0)  # its inputs are x / 1, not x / 0.5: the weights double
    recarded = ModelCard("lenet5", 11, SHAPE, (0.0,), (1.0,))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original = judging.judge(write_job(tmp_path / "a", model, card, info, b"\x05" * 32))
    copy = judging.judge(write_job(tmp_path / "b", stolen, recarded, info, b"\x05" * 32))
    assert original["score"] == copy["score"] and original["controls"] == copy["controls"]
    x = torch.rand(16, *SHAPE)  # pixels, encoded as the info says
    encoded = (x - 0.0) / 0.5
    with torch.no_grad():
        theirs = model(encoded)
        with pixel_view(stolen, PixelCodec(info["mean"], info["std"]), PixelCodec((0.0,), (1.0,))):
            judged = stolen(encoded)
        fed = stolen(encoded)  # the check switched off: fed the info's encoding, another function
    assert torch.allclose(judged, theirs, atol=1e-5)
    assert not torch.allclose(fed, theirs, atol=1e-2)


def test_a_suspect_that_cannot_take_the_published_shape_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(3)
    info = new_label_info()
    model = create_model("lenet5", num_classes=11, input_shape=(3, 28, 28))
    card = ModelCard("lenet5", 11, (3, 28, 28), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    answer = judging.judge(write_job(tmp_path, model, card, info, b"\x05" * 32))
    assert answer["verdict"] == "not-owner"
    assert "does not take the published input shape [1, 28, 28]" in answer["reason"]
