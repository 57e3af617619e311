"""The model zoo: every registered architecture, the model card, and safe save/load of artifacts."""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

from contracts.errors import WmnodeError, ZooError
from contracts.limits import BuildLimits
from schemes.models import zoo
from schemes.models.zoo import (
    CARD_FILE,
    MAX_CARD_BYTES,
    WEIGHTS_FILE,
    ModelCard,
    create_model,
    list_models,
    load_model,
    model_from_bytes,
    model_to_bytes,
    register_model,
    save_model,
)

INPUT_SHAPES = [(1, 28, 28), (1, 32, 32), (3, 32, 32)]
NUM_CLASSES = 10


def _inputs(shape: tuple[int, int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=generator)


def _card(arch: str = "lenet5", shape: tuple[int, int, int] = (1, 28, 28), **extra: Any) -> ModelCard:
    channels = shape[0]
    return ModelCard(
        arch=arch,
        num_classes=NUM_CLASSES,
        input_shape=shape,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        extra=dict(extra),
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[nn.Module, ModelCard, Path]:
    """A saved lenet5 artifact (1×28×28, 10 classes) with a little scheme info in its card."""
    card = _card(scheme="mtlsign", taps=["block1"])
    model = create_model(card.arch, num_classes=card.num_classes, input_shape=card.input_shape)
    directory = tmp_path / "artifact"
    save_model(model, card, directory)
    return model, card, directory


def _edit_card(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = directory / CARD_FILE
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


# --------------------------------------------------------------------------------------------
# Registry and architectures


def test_public_names_are_sorted_and_real() -> None:
    assert zoo.__all__ == sorted(zoo.__all__)
    assert [name for name in zoo.__all__ if not hasattr(zoo, name)] == []


def test_registry_lists_the_zoo() -> None:
    assert {"lenet5", "resnet18"} <= set(list_models())
    assert list_models() == sorted(list_models())
    assert issubclass(ZooError, WmnodeError)
    assert ZooError.http_status == 400


@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list_models())
def test_model_builds_and_runs(name: str, shape: tuple[int, int, int]) -> None:
    model = create_model(name, num_classes=NUM_CLASSES, input_shape=shape).eval()
    modules = dict(model.named_modules())
    taps: tuple[str, ...] = type(model).wm_taps  # type: ignore[attr-defined]
    classifier: str = type(model).classifier  # type: ignore[attr-defined]
    assert len(taps) == 3
    assert all(tap in modules for tap in taps)
    assert classifier in modules
    assert isinstance(modules[classifier], nn.Linear)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        modules[tap].register_forward_hook(lambda _m, _i, out, tap=tap: seen.__setitem__(tap, out)) for tap in taps
    ]
    with torch.no_grad():
        out = model(_inputs(shape, batch=3))
    for hook in hooks:
        hook.remove()
    assert out.shape == (3, NUM_CLASSES)
    assert set(seen) == set(taps)
    assert all(t.shape[0] == 3 for t in seen.values())


def test_lenet5_is_classic() -> None:
    model = create_model("lenet5", num_classes=NUM_CLASSES, input_shape=(1, 28, 28))
    modules = dict(model.named_modules())
    first = modules["block1"](_inputs((1, 28, 28)))
    assert first.shape == (2, 6, 14, 14)  # conv padded to keep 28×28, pooled to 14
    assert modules["block2"](first).shape == (2, 16, 5, 5)
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [120, 84, NUM_CLASSES]
    assert sum(p.numel() for p in model.parameters()) == 61_706  # LeNet-5 with 10 classes


def test_resnet18_is_cifar_style() -> None:
    model = create_model("resnet18", num_classes=NUM_CLASSES, input_shape=(3, 32, 32))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert dict(model.named_modules())["stem"](_inputs((3, 32, 32))).shape == (2, 64, 32, 32)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_other_input_sizes_work() -> None:
    for name in list_models():
        model = create_model(name, num_classes=3, input_shape=(2, 40, 36)).eval()
        with torch.no_grad():
            assert model(_inputs((2, 40, 36))).shape == (2, 3)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ZooError, match="unknown model 'vgg99'; known models: .*lenet5.*resnet18"):
        create_model("vgg99", num_classes=NUM_CLASSES, input_shape=(1, 28, 28))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_classes": 0, "input_shape": (1, 28, 28)}, "num_classes must be a positive integer"),
        ({"num_classes": True, "input_shape": (1, 28, 28)}, "num_classes must be a positive integer"),
        ({"num_classes": 10, "input_shape": (28, 28)}, "input_shape must be three positive integers"),
        ({"num_classes": 10, "input_shape": (1, 0, 28)}, "input_shape must be three positive integers"),
    ],
)
def test_create_model_rejects_bad_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ZooError, match=fragment):
        create_model("lenet5", **kwargs)


def test_lenet5_refuses_tiny_inputs() -> None:
    with pytest.raises(ZooError, match="too small"):
        create_model("lenet5", num_classes=NUM_CLASSES, input_shape=(1, 8, 8))


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ZooError, match="'lenet5' is already registered"):
        register_model("lenet5")(nn.Linear)
    assert list_models().count("lenet5") == 1


def test_registration_needs_taps_and_classifier() -> None:
    class NoTaps(nn.Module):
        classifier = "head"

    with pytest.raises(ZooError, match="'wm_taps' must be a tuple"):
        register_model("test-no-taps")(NoTaps)
    assert "test-no-taps" not in list_models()


# --------------------------------------------------------------------------------------------
# Model card


def test_card_round_trips() -> None:
    card = _card("resnet18", (3, 32, 32), scheme="mtlsign", layers=("stem", "layer1"), n=3)
    assert card.extra["layers"] == ["stem", "layer1"]  # normalised through JSON on construction
    again = ModelCard.from_json(json.loads(json.dumps(card.to_json())))
    assert again == card
    assert again.to_bytes() == card.to_bytes()
    assert json.loads(card.to_bytes()) == card.to_json()
    assert list(json.loads(card.to_bytes())) == sorted(card.to_json())


def test_card_extra_defaults_empty_and_is_copied() -> None:
    extra: dict[str, Any] = {"a": [1]}
    card = ModelCard("lenet5", 10, (1, 28, 28), (0.1,), (0.3,), extra)
    extra["a"].append(2)
    assert card.extra == {"a": [1]}
    assert ModelCard("lenet5", 10, (1, 28, 28), (0.1,), (0.3,)).extra == {}


def _good_card_json() -> dict[str, Any]:
    return _card().to_json()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda o: o.update(owner="me"), "unknown field\\(s\\) in model card: owner"),
        (lambda o: o.pop("std"), "missing field\\(s\\) in model card: std"),
        (lambda o: o.update(arch="vgg99"), "field 'arch': unknown model 'vgg99'"),
        (lambda o: o.update(arch=7), "field 'arch' must be a string"),
        (lambda o: o.update(num_classes="10"), "field 'num_classes' must be a positive integer"),
        (lambda o: o.update(num_classes=10.0), "field 'num_classes' must be a positive integer"),
        (lambda o: o.update(input_shape=[1, 28]), "field 'input_shape'"),
        (lambda o: o.update(input_shape="1x28x28"), "field 'input_shape' must be a JSON array"),
        (lambda o: o.update(mean=["0.5"]), "field 'mean' must hold finite numbers"),
        (lambda o: o.update(mean=[float("nan")]), "field 'mean' must hold finite numbers"),
        (lambda o: o.update(std=[0.0]), "field 'std' must hold positive numbers"),
        (lambda o: o.update(std=[0.2, 0.2]), "field 'std' must hold one number per input channel"),
        (lambda o: o.update(extra=[1]), "field 'extra' must be a JSON object"),
        (lambda o: o.update(extra={"x": float("inf")}), "field 'extra' is not JSON-serialisable"),
        (lambda o: o.update(extra={"x": object()}), "field 'extra' is not JSON-serialisable"),
    ],
)
def test_card_from_json_is_strict(edit: Callable[[dict[str, Any]], None], fragment: str) -> None:
    obj = _good_card_json()
    edit(obj)
    with pytest.raises(ZooError, match=fragment):
        ModelCard.from_json(obj)


def test_card_must_be_an_object() -> None:
    with pytest.raises(ZooError, match="must be a JSON object"):
        ModelCard.from_json([1, 2])


# --------------------------------------------------------------------------------------------
# Save and load


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    shape = (3, 32, 32)
    model = create_model(name, num_classes=NUM_CLASSES, input_shape=shape)
    model(_inputs(shape, batch=4, seed=1))  # a train-mode pass moves BatchNorm running stats off init
    model.eval()
    card = _card(name, shape, scheme="test")
    weights_path, card_path = save_model(model, card, tmp_path / "out")
    assert (weights_path.name, card_path.name) == (WEIGHTS_FILE, CARD_FILE)
    assert card_path.read_bytes() == card.to_bytes()

    loaded, loaded_card = load_model(tmp_path / "out")
    assert loaded_card == card
    assert type(loaded) is type(model)
    assert not loaded.training
    before, after = model.state_dict(), loaded.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[key], after[key]) and before[key].dtype == after[key].dtype for key in before)
    x = _inputs(shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_accepts_the_weights_file_with_its_card_beside_it(
    saved: tuple[nn.Module, ModelCard, Path], tmp_path: Path
) -> None:
    model, card, directory = saved
    loaded, loaded_card = load_model(directory / WEIGHTS_FILE)
    assert loaded_card == card
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (directory / WEIGHTS_FILE).rename(renamed / "mnist.safetensors")
    (directory / CARD_FILE).rename(renamed / "mnist.json")
    loaded, _ = load_model(renamed / "mnist.safetensors")
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_saved_tensors_are_contiguous_cpu(tmp_path: Path) -> None:
    model = create_model("lenet5", num_classes=NUM_CLASSES, input_shape=(1, 28, 28))
    weight = dict(model.named_parameters())["head.weight"]
    with torch.no_grad():
        weight.set_(weight.t().contiguous().t())  # type: ignore[call-overload]  # a non-contiguous parameter
    assert not weight.is_contiguous()
    weights_path, _ = save_model(model, _card(), tmp_path)
    stored = safetensors.torch.load_file(weights_path)
    assert stored["head.weight"].is_contiguous()
    assert torch.equal(stored["head.weight"], weight)


def test_save_refuses_a_model_its_card_does_not_describe(tmp_path: Path) -> None:
    model = create_model("lenet5", num_classes=NUM_CLASSES, input_shape=(1, 28, 28))
    with pytest.raises(ZooError, match="shape mismatch: head.bias \\(10,\\) != \\(7,\\)"):
        save_model(model, ModelCard("lenet5", 7, (1, 28, 28), (0.5,), (0.25,)), tmp_path)
    with pytest.raises(ZooError, match="missing keys: .*layer1"):
        save_model(model, _card("resnet18", (1, 28, 28)), tmp_path)
    assert not (tmp_path / WEIGHTS_FILE).exists()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda o: o.update(comment="hi"), "unknown field\\(s\\) in model card: comment"),
        (lambda o: o.update(num_classes=[10]), "field 'num_classes' must be a positive integer"),
        (lambda o: o.update(arch="resnet50"), "field 'arch': unknown model 'resnet50'"),
        (lambda o: o.update(num_classes=7), "shape mismatch: head.bias \\(10,\\) != \\(7,\\), head.weight"),
        (lambda o: o.update(arch="resnet18"), "missing keys: .*unexpected keys: block1.0.bias"),
    ],
)
def test_load_refuses_a_tampered_card(
    saved: tuple[nn.Module, ModelCard, Path], edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    directory = saved[2]
    _edit_card(directory, edit)
    with pytest.raises(ZooError, match=fragment):
        load_model(directory)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"arch": "lenet5", "arch": "lenet5"}', "repeats a field"),
        ('{"mean": [NaN]}', "non-finite number \\(NaN\\)"),
        ("{not json", "is not valid JSON"),
        ("\udcff", "is not valid JSON"),
    ],
)
def test_load_refuses_a_card_that_is_not_clean_json(
    saved: tuple[nn.Module, ModelCard, Path], text: str, fragment: str
) -> None:
    directory = saved[2]
    (directory / CARD_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ZooError, match=fragment):
        load_model(directory)


def test_load_refuses_an_oversize_card(saved: tuple[nn.Module, ModelCard, Path]) -> None:
    directory = saved[2]
    obj = json.loads((directory / CARD_FILE).read_text())
    obj["extra"] = {"pad": "x" * MAX_CARD_BYTES}
    (directory / CARD_FILE).write_text(json.dumps(obj))
    with pytest.raises(ZooError, match=f"larger than {MAX_CARD_BYTES} bytes"):
        load_model(directory)


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        (lambda s: s.pop("head.bias"), "missing keys: head.bias"),
        (lambda s: s.update(backdoor=torch.zeros(1)), "unexpected keys: backdoor"),
        (lambda s: s.update({"block1.0.weight": torch.zeros(6, 1, 3, 3)}), "shape mismatch: block1.0.weight"),
    ],
)
def test_load_refuses_weights_that_do_not_match(
    saved: tuple[nn.Module, ModelCard, Path], tamper: Callable[[dict[str, torch.Tensor]], object], fragment: str
) -> None:
    directory = saved[2]
    state = safetensors.torch.load_file(directory / WEIGHTS_FILE)
    tamper(state)
    safetensors.torch.save_file(state, directory / WEIGHTS_FILE)
    with pytest.raises(ZooError, match=fragment):
        load_model(directory)


def test_mismatch_messages_list_only_a_few_keys(saved: tuple[nn.Module, ModelCard, Path]) -> None:
    directory = saved[2]
    safetensors.torch.save_file({f"junk{i}": torch.zeros(1) for i in range(9)}, directory / WEIGHTS_FILE)
    with pytest.raises(ZooError, match="unexpected keys: junk0, junk1, junk2, junk3, junk4, ... \\(9 in all\\)"):
        load_model(directory)


def test_load_refuses_an_oversize_weights_file(saved: tuple[nn.Module, ModelCard, Path]) -> None:
    with pytest.raises(ZooError, match="over the limit of 16"):
        load_model(saved[2], max_bytes=16)


def test_load_names_the_missing_file(tmp_path: Path, saved: tuple[nn.Module, ModelCard, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ZooError, match=f"missing model file: {empty / WEIGHTS_FILE}"):
        load_model(empty)
    directory = saved[2]
    (directory / CARD_FILE).unlink()
    weights = directory / WEIGHTS_FILE
    assert load_model(directory)[1] == saved[1]  # the weights file carries its card
    state = safetensors.torch.load_file(weights)
    safetensors.torch.save_file(state, weights)  # a bare safetensors file, no card inside
    with pytest.raises(ZooError, match=f"missing model file: {directory / CARD_FILE}"):
        load_model(directory)
    with pytest.raises(ZooError, match=f"missing model file: {directory / CARD_FILE}"):
        load_model(weights)
    with pytest.raises(ZooError, match="neither an artifact directory nor a .safetensors file"):
        load_model(tmp_path / "nowhere.pt")


def test_load_refuses_a_truncated_safetensors_file(saved: tuple[nn.Module, ModelCard, Path]) -> None:
    path = saved[2] / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ZooError, match="not a valid safetensors file"):
        load_model(saved[2])


class _TouchOnUnpickle:
    """Unpickling this creates `marker`: proof that something ran pickle on our file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _torch_save(obj: object, path: Path) -> None:
    torch.save(obj, path)


def _torch_save_legacy(obj: object, path: Path) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _plain_pickle(obj: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj))


@pytest.mark.parametrize("write", [_torch_save, _torch_save_legacy, _plain_pickle])
def test_load_never_unpickles(
    saved: tuple[nn.Module, ModelCard, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[object, Path], None],
) -> None:
    model, _, directory = saved
    marker = tmp_path / "unpickled"
    payload = _TouchOnUnpickle(marker)
    pickle.loads(pickle.dumps(payload)).close()  # control: unpickling it does touch the marker
    assert marker.exists()
    marker.unlink()

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("load_model called an unpickler")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    for obj in (model.state_dict(), {"payload": payload, **model.state_dict()}):
        write(obj, directory / WEIGHTS_FILE)
        with pytest.raises(ZooError, match="is not a safetensors file"):
            load_model(directory)
    assert not marker.exists()


def test_the_weights_file_alone_is_a_complete_artifact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    card = ModelCard("lenet5", 10, (1, 28, 28), (0.5,), (0.25,), {"dataset": "digits"})
    data = model_to_bytes(model, card)
    loaded, loaded_card = model_from_bytes(data)
    assert loaded_card == card
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    assert all(model_to_bytes(model, card) == data for _ in range(5))  # one model, one hash
    save_model(model, card, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == data
    (tmp_path / "model.json").unlink()  # the card also travels inside the safetensors header
    assert load_model(tmp_path / "model.safetensors")[1] == card


def test_untrusted_model_bytes_are_checked_before_anything_is_allocated() -> None:
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with pytest.raises(ZooError, match="carries no model card"):
        model_from_bytes(safetensors.torch.save(state))
    huge = ModelCard("lenet5", 10**8, (1, 28, 28), (0.5,), (0.25,))
    greedy = safetensors.torch.save(state, metadata={"wmnode.card": json.dumps(huge.to_json())})
    with pytest.raises(ZooError, match="over the cap"):  # counted on the meta device: no 34 GB allocated
        model_from_bytes(greedy)
    with pytest.raises(ZooError, match="shape mismatch"):  # under a larger cap, the weights still do not fit
        model_from_bytes(greedy, limits=BuildLimits(max_parameters=10**10))
    with pytest.raises(ZooError, match="not a safetensors file"):
        model_from_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle
    with pytest.raises(ZooError, match="over the limit"):
        model_from_bytes(greedy, max_bytes=1000)


def test_weights_of_another_dtype_are_refused() -> None:
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros_like(state["head.weight"], dtype=torch.uint8)  # a quarter of the bytes
    card = ModelCard("lenet5", 10, (1, 28, 28), (0.5,), (0.25,))
    data = safetensors.torch.save(state, metadata={"wmnode.card": json.dumps(card.to_json())})
    with pytest.raises(ZooError, match="dtype mismatch: head.weight torch.uint8 != torch.float32"):
        model_from_bytes(data)


def test_a_header_that_is_not_a_json_object_never_reaches_the_library(
    saved: tuple[nn.Module, ModelCard, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged prefix announces a length that fits the file, then something other than '{': refused
    before safetensors opens the file; with only the length check, the library would be asked."""
    _, _, directory = saved
    weights = directory / WEIGHTS_FILE
    body = b"\x80\x04" + b"x" * 62  # a pickle opcode where the header's '{' belongs
    weights.write_bytes(struct.pack("<Q", len(body)) + body)
    asked: list[object] = []

    def record(*args: object, **_kwargs: object) -> None:
        asked.append(args)
        raise AssertionError("the library was asked to read a file that is not safetensors")

    monkeypatch.setattr(zoo.safetensors.torch, "load_file", record)
    with pytest.raises(ZooError, match="is not a safetensors file"):
        load_model(directory)
    assert asked == []
    weights.write_bytes(struct.pack("<Q", 2) + b"{}")  # the honest shape gets past the prefix checks
    with pytest.raises(AssertionError, match="the library was asked"):
        zoo.read_weights(weights, 2**20)
