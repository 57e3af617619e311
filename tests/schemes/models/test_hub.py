"""The open zoo (schemes/hub.py and the zoo's card): timm and torchvision architectures from cards in
timm's config.json shape, attacked and round-tripped, and what the schemes find on them."""

from __future__ import annotations

import copy
import json
import resource
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from contracts.errors import ZooError
from contracts.limits import BuildLimits
from schemes.models._passport_layer import passport_layers, passport_variant
from schemes.models.hub import parameter_count
from schemes.models.zoo import (
    ModelCard,
    create_model,
    load_model,
    model_from_bytes,
    model_to_bytes,
    save_model,
    transfer_weights,
    wm_taps,
)


def config(architecture: str = "resnet18", **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "architecture": architecture,
        "num_classes": 5,
        "num_features": 512,
        "pretrained_cfg": {
            "input_size": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "classifier": "fc",
            "url": "https://example.org/never-fetched.pth",
        },  # fmt: skip
        "model_args": {},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"pretrained": True}, "model_args.pretrained is refused"),
        ({"checkpoint_path": "/etc/passwd"}, "torch.load of a file the card names"),
        ({"pretrained_cfg_overlay": {"file": "/tmp/x.pth"}}, "never passed on"),
        ({"cache_dir": "/tmp"}, "nothing is downloaded"),
        ({"some_url": "https://example.org/m.pth"}, "not one a card may set"),
        ({"drop_rate": 1.5}, "out of range"),
        ({"in_chans": 1}, "input_size has 3"),
    ],
)
def test_card_arguments_pass_an_allow_list(args: dict[str, object], fragment: str) -> None:
    with pytest.raises(ZooError, match=fragment):
        ModelCard.from_json(config(model_args=args))


@pytest.mark.parametrize(
    "architecture",
    [
        "hf-hub:timm/resnet18.a1_in1k",
        "timm/resnet18",
        "resnet18.a1_in1k@main",
        "../resnet18",
        "nosuchnet",
        "keras:resnet18",
        "torchvision:resnet18; rm -rf",
        "timm:resnet18-backdoor",
    ],  # fmt: skip
)
def test_only_plain_names_the_libraries_list_are_built(architecture: str) -> None:
    with pytest.raises(ZooError, match="architecture|has no model"):
        ModelCard.from_json(config(architecture))


def test_a_bare_timm_name_and_both_prefixes_parse_and_round_trip() -> None:
    for name, arch in (("resnet18", "timm:resnet18"), ("timm:resnet18", "timm:resnet18"),
                       ("torchvision:resnet18", "torchvision:resnet18")):  # fmt: skip
        card = ModelCard.from_json(config(name))
        assert card.arch == arch and card.classifier == "fc" and card.file_name == "config.json"
        assert ModelCard.from_json(json.loads(card.to_bytes())) == card
        assert "url" not in json.dumps(card.to_json())  # read past, never acted upon, not carried


def test_the_size_is_counted_on_meta_and_capped_before_anything_is_allocated() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    count = parameter_count("timm:vit_huge_patch14_224", 5)
    assert count > 600_000_000 and time.perf_counter() - started < 30
    with pytest.raises(ZooError, match="over the cap"):
        create_model("timm:vit_huge_patch14_224", num_classes=5, input_shape=(3, 224, 224), max_parameters=350_000_000)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 1000  # 630 M float32 parameters would be 2.4 GiB


def test_an_input_the_architecture_cannot_take_is_refused_on_meta() -> None:
    with pytest.raises(ZooError, match=r"cannot run on inputs of shape \[3, 32, 32\]"):
        create_model("timm:vit_tiny_patch16_224", num_classes=5, input_shape=(3, 32, 32))
    model = create_model("timm:vit_tiny_patch16_224", num_classes=5, input_shape=(3, 32, 32),
                         model_args={"img_size": 32, "patch_size": 8})  # fmt: skip
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def _hub_dir(tmp_path: Path, architecture: str) -> tuple[torch.nn.Module, ModelCard]:
    """A directory as the Hub serves it: timm's config.json and safetensors without our metadata."""
    card = ModelCard.from_json(config(architecture))
    model = card.build().eval()
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config(architecture)))
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(tmp_path / "model.safetensors"))  # fmt: skip
    return model, card


@pytest.mark.parametrize("architecture", ["resnet18", "torchvision:resnet18"])
def test_a_hub_layout_directory_loads_as_it_is_and_saves_as_one(tmp_path: Path, architecture: str) -> None:
    model, card = _hub_dir(tmp_path / "given", architecture)
    loaded, again = load_model(tmp_path / "given")
    x = torch.randn(2, 3, 32, 32)
    assert again == card and torch.equal(loaded(x), model(x))
    save_model(loaded, again, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    rebuilt, third = model_from_bytes((tmp_path / "out" / "model.safetensors").read_bytes())  # the card travels inside
    assert third == card and torch.equal(rebuilt(x), model(x))


def test_weights_that_do_not_fit_the_card_are_refused_before_loading(tmp_path: Path) -> None:
    _hub_dir(tmp_path, "resnet18")
    (tmp_path / "config.json").write_text(json.dumps(config(num_classes=7)))
    with pytest.raises(ZooError, match="shape mismatch"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x02}q\x00.")  # a pickle
    with pytest.raises(ZooError, match="not a safetensors file"):
        load_model(tmp_path)


def test_a_community_builds_only_the_architectures_it_lists() -> None:
    card = ModelCard.from_json(config("torchvision:resnet18"))
    data = model_to_bytes(card.build(), card)
    with pytest.raises(ZooError, match="not one this community builds"):
        model_from_bytes(data, limits=BuildLimits(architectures=("lenet5", "timm:*")))
    with pytest.raises(ZooError, match="over the cap"):
        model_from_bytes(data, limits=BuildLimits(architectures=("torchvision:resnet*",), max_parameters=1_000_000))
    assert model_from_bytes(data, limits=BuildLimits(architectures=("torchvision:resnet*",)))[1] == card


@pytest.mark.parametrize(
    ("architecture", "taps"),
    [
        ("timm:resnet18", ("act1", "layer1", "layer2")),  # timm's feature_info
        ("torchvision:resnet18", ("relu", "layer1.1", "layer2.1")),  # the first stages, traced
        ("torchvision:vgg11_bn", ("features.2", "features.6", "features.13")),
        ("torchvision:resnet18-passport", ("relu", "layer1.1", "layer2.1")),  # the variant keeps them
    ],
)
def test_mtlsign_finds_the_first_stages_of_any_architecture(architecture: str, taps: tuple[str, ...]) -> None:
    model = create_model(architecture, num_classes=5, input_shape=(3, 32, 32))
    assert wm_taps(model, (3, 32, 32)) == taps


@pytest.mark.parametrize(("architecture", "layers"), [("timm:resnet18", 20), ("torchvision:vgg11_bn", 8)])
def test_the_passport_variant_keeps_what_a_trained_network_computes(architecture: str, layers: int) -> None:
    torch.manual_seed(0)
    trained = create_model(architecture, num_classes=5, input_shape=(3, 32, 32))
    with torch.no_grad():  # statistics and affines as training leaves them, not the initial ones
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-1, 1)
    trained.eval()
    converted = passport_variant(copy.deepcopy(trained), (3, 32, 32), architecture).eval()
    x = torch.randn(4, 3, 32, 32)
    assert len(passport_layers(converted)) == layers
    torch.testing.assert_close(converted(x), trained(x), rtol=1e-4, atol=1e-4)
    fresh = create_model(f"{architecture}-passport", num_classes=5, input_shape=(3, 32, 32))
    assert sorted(fresh.state_dict()) == sorted(converted.state_dict())  # the card's variant loads these weights


@pytest.mark.parametrize(
    ("architecture", "reason"),
    [
        ("torchvision:vgg11", "no convolution is followed by a batch norm"),
        ("torchvision:densenet121", "do not directly follow a convolution"),
        ("timm:regnetx_002", "no convolution is followed by a batch norm|fuse an activation"),
    ],
)
def test_networks_without_a_norm_after_each_convolution_have_no_passport_layers(architecture: str, reason: str) -> None:
    with pytest.raises(ZooError, match=reason):
        create_model(f"{architecture}-passport", num_classes=5, input_shape=(3, 64, 64))


def test_a_classifier_is_extended_not_reset() -> None:
    torch.manual_seed(0)
    given = create_model("timm:resnet18", num_classes=5, input_shape=(3, 32, 32)).eval()
    extended = create_model("timm:resnet18", num_classes=6, input_shape=(3, 32, 32))
    transfer_weights(given, extended)
    extended.eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(extended(x)[:, :5], given(x))
    other = create_model("torchvision:vgg11_bn", num_classes=6, input_shape=(3, 32, 32))
    with pytest.raises(ZooError, match="do not match"):
        transfer_weights(given, other)


def test_buffers_count_against_the_cap_and_unfit_arguments_are_refused() -> None:
    # (img_size / patch_size)^4 position indices are buffers the weights file never carries.
    with pytest.raises(ZooError, match="parameters and buffer elements, over the cap"):
        create_model("timm:beit_base_patch16_224", num_classes=5, input_shape=(3, 64, 64),
                     model_args={"img_size": 64, "patch_size": 1}, max_parameters=100_000_000)  # fmt: skip
    with pytest.raises(ZooError, match="cannot be built with"):
        create_model("timm:resnet18", num_classes=5, input_shape=(3, 32, 32), model_args={"img_size": 32})
    from schemes.models.zoo import strict_json

    with pytest.raises(ZooError, match="nested too deeply"):
        strict_json("[" * 100_000 + "]" * 100_000, "a card")
