"""The open zoo (schemes/hub.py): cards in timm's config.json shape, attacked and round-tripped."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from schemes.hub import HubCard, build_model, load_hub_dir, parameter_count
from schemes.zoo import ZooError


def config(architecture: str = "resnet18", **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "architecture": architecture,
        "num_classes": 5,
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
        HubCard.from_config(config(model_args=args))


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
    ],  # fmt: skip
)
def test_only_plain_names_the_libraries_list_are_built(architecture: str) -> None:
    with pytest.raises(ZooError, match="architecture|has no model"):
        HubCard.from_config(config(architecture))


def test_a_bare_timm_name_and_both_prefixes_parse_and_round_trip() -> None:
    for name, library in (("resnet18", "timm"), ("timm:resnet18", "timm"), ("torchvision:resnet18", "torchvision")):
        card = HubCard.from_config(config(name))
        assert card.library == library and HubCard.from_config(json.loads(json.dumps(card.to_config()))) == card
    assert HubCard.from_config(config()).extra_cfg["url"].startswith("https://")  # kept, never acted upon


def test_the_size_is_counted_on_meta_and_capped_before_anything_is_allocated() -> None:
    huge = HubCard.from_config(config("vit_huge_patch14_224", pretrained_cfg={
        "input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "classifier": "head"}))  # fmt: skip
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    count = parameter_count(huge)
    assert count > 600_000_000 and time.perf_counter() - started < 30
    with pytest.raises(ZooError, match="over the cap"):
        build_model(huge, max_parameters=350_000_000)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 1000  # 630 M float32 parameters would be 2.4 GiB


@pytest.mark.parametrize("architecture", ["timm:resnet18", "torchvision:resnet18"])
def test_a_hub_layout_directory_loads_as_it_is(tmp_path: Path, architecture: str) -> None:
    card = HubCard.from_config(config(architecture))
    model = build_model(card).eval()
    (tmp_path / "config.json").write_text(json.dumps(card.to_config()))
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(tmp_path / "model.safetensors"))  # fmt: skip
    loaded, again = load_hub_dir(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert again == card and torch.equal(loaded(x), model(x))


def test_weights_that_do_not_fit_the_card_are_refused_before_loading(tmp_path: Path) -> None:
    card = HubCard.from_config(config())
    (tmp_path / "config.json").write_text(json.dumps({**card.to_config(), "num_classes": 7}))
    state = build_model(card).state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ZooError, match="shape mismatch"):
        load_hub_dir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x02}q\x00.")  # a pickle
    with pytest.raises(ZooError, match="not a safetensors file"):
        load_hub_dir(tmp_path)
