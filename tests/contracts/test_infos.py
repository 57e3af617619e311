"""The community's policy and a claim's info (registry.infos), attacked as a claimant would."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contracts.cards import card_from_artifact, safetensors_header, tensor_names
from contracts.datasets import parse_datasets
from contracts.errors import ConfigError, InfoError, MessageError, RejectedError
from contracts.infos import (
    BlindInfo,
    FunctionCoupledInfo,
    MtlsignInfo,
    NewLabelInfo,
    PassportInfo,
    check_against_card,
    check_verifier,
    parse_info,
)
from contracts.policy import DEFAULT_POLICY, VerificationPolicy, parse_policy
from contracts.references import ReferenceSpec, parse_references
from node_config import example_config
from registry.community.config import load_config
from tests.contracts.artifacts import LENET_CARD, artifact_with_card, safetensors_bytes

# --------------------------------------------------------------------------------------------
# Infos that meet the built-in floors exactly; each test spoils one field.

SHAPE = [1, 28, 28]
INFOS: dict[str, dict[str, Any]] = {
    "mtlsign": {
        "scheme": "mtlsign", "n": 600, "gamma": 0.7, "taps": ["conv1", "conv2"], "pool": 4, "hidden": 256,
        "input_shape": SHAPE, "mean": [0.5], "std": [0.5],
    },
    "new-label": {
        "scheme": "new-label", "dataset": "digits", "delta": 10, "beta": 0.3, "n": 100, "threshold": 0.25,
        "input_shape": SHAPE, "mean": [0.5], "std": [0.5],
    },
    "function-coupled": {
        "scheme": "function-coupled", "version": 2, "mode": "invisible", "r": 0.5, "n_train": 300, "n_verify": 90,
        "threshold": 0.9, "candidate": 0, "num_classes": 10, "input_shape": SHAPE, "mean": [0.5], "std": [0.5],
        "dataset": "digits", "split_seed": 0, "test_fraction": 0.2, "dataset_sha256": "ab" * 32,
    },
    "blind": {
        "scheme": "blind", "dataset": "digits", "n": 100, "threshold": 0.8, "num_classes": 10, "input_shape": SHAPE,
        "mean": [0.5], "std": [0.5], "alpha": 1, "beta": 1, "gamma": 1, "delta": 1, "epochs": 5,
        "logo_sha256": "ab" * 32, "logo_source": "key", "encoder": "residual-cnn-32",
        "discriminator": "mlp-64-32", "min_ssim": 0.9,
    },
    "passport": {
        "scheme": "passport", "version": "V3", "passport_type": "T1", "layers": {"features.0": [1, 1, 28, 28]},
        "delta": 0.1, "noise_sigmas": 3.0, "noise_floor": 0.1, "noise_draws": 5, "dataset": "digits", "n_eval": 200,
        "input_shape": SHAPE, "mean": [0.5], "std": [0.5], "num_classes": 10,
    },
}  # fmt: skip
TYPES = {
    "mtlsign": MtlsignInfo,
    "new-label": NewLabelInfo,
    "function-coupled": FunctionCoupledInfo,
    "blind": BlindInfo,
    "passport": PassportInfo,
}
CARD = LENET_CARD


def info(scheme: str, /, **changes: Any) -> dict[str, Any]:
    return {**INFOS[scheme], **changes}


def refused(scheme: str, obj: object, fragment: str, policy: VerificationPolicy = DEFAULT_POLICY) -> InfoError:
    with pytest.raises(InfoError, match=fragment) as caught:
        parse_info(scheme, obj, policy)
    return caught.value


# --------------------------------------------------------------------------------------------
# The policy: floors only rise, caps only fall


def test_an_empty_verification_table_is_the_built_in_policy() -> None:
    assert parse_policy({}, "v") == DEFAULT_POLICY


def test_a_community_may_raise_floors_and_lower_caps() -> None:
    policy = parse_policy(
        {
            "new_label": {"min_threshold": 0.5, "min_n": 200},
            "mtlsign": {"min_gamma": 0.8, "max_pool": 2, "max_taps": 1},
            "passport": {"types": ["T1"]},
            "max_queries": 1000,
            "max_input_elements": 1_000_000,
            "max_false_positive": 1e-9,
            "require_references": True,
            "architectures": ["lenet5", "timm:resnet*"],
            "max_parameters": 30_000_000,
        },
        "v",
    )
    assert policy.architectures == ("lenet5", "timm:resnet*") and policy.max_parameters == 30_000_000
    assert (policy.new_label.min_threshold, policy.new_label.min_n) == (0.5, 200)
    assert (policy.mtlsign.min_gamma, policy.mtlsign.max_pool, policy.mtlsign.max_taps) == (0.8, 2, 1)
    assert (policy.max_queries, policy.max_input_elements, policy.max_false_positive) == (1000, 1_000_000, 1e-9)
    assert policy.require_references is True
    assert policy.blind == DEFAULT_POLICY.blind  # untouched tables keep the built-in floors
    # The raised floor is what a claim is then held to.
    refused(
        "new-label", info("new-label", n=200, threshold=0.4), "threshold 0.4 is below the community's floor 0.5", policy
    )
    refused(
        "mtlsign", info("mtlsign", gamma=0.8, pool=3, taps=["conv1"]), "pool 3 is over the community's cap 2", policy
    )


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"new_label": {"min_threshold": 0.01}}, r"v\.new_label\.min_threshold must be at least the built-in 0\.25"),
        ({"new_label": {"min_n": 10}}, r"v\.new_label\.min_n must be at least the built-in 100"),
        ({"mtlsign": {"min_gamma": 0.5}}, r"v\.mtlsign\.min_gamma must be at least the built-in 0\.7"),
        ({"mtlsign": {"min_n": 60}}, r"v\.mtlsign\.min_n must be at least the built-in 600"),
        ({"blind": {"min_ssim": 0.1}}, r"v\.blind\.min_ssim must be at least the built-in 0\.9"),
        ({"function_coupled": {"min_n_verify": 1}}, r"v\.function_coupled\.min_n_verify must be at least"),
        ({"mtlsign": {"max_pool": 8}}, r"v\.mtlsign\.max_pool must be at most the built-in 4"),
        ({"mtlsign": {"max_hidden": 4096}}, r"v\.mtlsign\.max_hidden must be at most the built-in 256"),
        ({"new_label": {"min_threshold": 2.0}}, r"v\.new_label\.min_threshold must be at least"),  # over 1: no pass
        ({"passport": {"types": ["T1", "T2"]}}, r"v\.passport\.types must be a non-empty subset of \['T1'\]"),
        ({"passport": {"types": []}}, r"v\.passport\.types must be a non-empty subset"),
        ({"max_queries": 50_000}, r"v\.max_queries must be a number in \[1, 20000\], got 50000"),
        ({"max_input_elements": 10**9}, r"v\.max_input_elements must be a number in \[1, 3\.2e\+07\]"),
        ({"control_keys": 4}, r"v\.control_keys must be a number in \[8, 64\], got 4"),
        ({"predict_deadline_seconds": 600}, r"v\.predict_deadline_seconds must be a number in \[1, 30\]"),
        ({"max_queries": 10.5}, r"v\.max_queries must be an integer"),
        ({"judges": 1000}, r"v\.judges must be a number in \[2, 64\]"),
    ],
)
def test_a_config_cannot_lower_a_floor_or_raise_a_cap(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_policy(table, "v")


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"colour": "blue"}, r"v: unknown field .colour. \(allowed: architectures, blind, control_keys, function_c"),
        ({"architectures": []}, r"v\.architectures must list 1-256 names or shell patterns"),
        ({"architectures": ["timm:resnet18; rm -rf /"]}, r"v\.architectures must list"),
        ({"max_parameters": 10**9}, r"v\.max_parameters must be a number in \[1, 3\.5e\+08\]"),
        ({"mtlsign": {"min_nn": 700}}, r"v\.mtlsign: unknown field 'min_nn' \(allowed: max_hidden"),
        ({"new-label": {"min_n": 200}}, r"v: unknown field 'new-label'"),  # tables use underscores
        ({"mtlsign": 600}, r"v\.mtlsign must be a table"),
        ({"mtlsign": {"min_n": "900"}}, r"v\.mtlsign\.min_n must be a finite int"),
        ({"mtlsign": {"min_n": 900.0}}, r"v\.mtlsign\.min_n must be a finite int"),
        ({"mtlsign": {"min_n": True}}, r"v\.mtlsign\.min_n must be a finite int"),
        ({"require_references": "yes"}, r"v\.require_references must be true or false"),
        ({"max_queries": True}, r"v\.max_queries must be a number"),
    ],
)
def test_unknown_fields_and_wrong_types_are_refused_naming_the_field(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_policy(table, "v")


def test_a_config_cannot_raise_the_false_positive_cap() -> None:
    with pytest.raises(ConfigError, match=r"v\.max_false_positive"):
        parse_policy({"max_false_positive": 1e-2}, "v")


@pytest.mark.parametrize(("table", "name"), [("new_label", "min_threshold"), ("mtlsign", "min_gamma")])
def test_a_nan_floor_is_refused(table: str, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"v\.{table}\.{name}"):
        parse_policy({table: {name: math.nan}}, "v")


NODE_HEAD = 'community = "c.example/x"\nname = "a"\nraft = "127.0.0.1:7001"\napi = "127.0.0.1:8001"\n'
NODE_MEMBERS = '\n[[members]]\nname = "a"\nraft = "127.0.0.1:7001"\napi = "127.0.0.1:8001"\n'


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(NODE_HEAD + body + NODE_MEMBERS)
    return path


def test_a_node_config_that_lowers_a_floor_is_refused_naming_the_file_and_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[verification.new_label]\nmin_threshold = 0.01\n")
    with pytest.raises(ConfigError, match=r"node\.toml: verification\.new_label\.min_threshold must be at least"):
        load_config(path)
    path = write_config(tmp_path, "[verification.mtlsign]\nmax_pool = 64\n")
    with pytest.raises(ConfigError, match=r"verification\.mtlsign\.max_pool must be at most the built-in 4"):
        load_config(path)
    path = write_config(tmp_path, "[verification]\nmax_queries = 100000\n")
    with pytest.raises(ConfigError, match=r"verification\.max_queries must be a number in \[1, 20000\]"):
        load_config(path)


def test_a_node_config_that_raises_floors_loads(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[verification]\nrequire_references = true\n[verification.blind]\nmin_n = 400\n")
    config = load_config(path)
    assert config.verification.blind.min_n == 400 and config.verification.require_references
    assert config.references == ()


def test_the_example_community_requires_references_and_builds_three() -> None:
    config = load_config(example_config(1))
    assert config.verification.require_references is True
    assert [spec.recipe for spec in config.references] == ["plain", "new-label", "passport"]
    assert config.references[0] == ReferenceSpec("plain")
    assert config.references[0].shape_text == "1x28x28"


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        ({"recipe": "plain"}, r"r must be a list of tables"),
        ([{"recipe": "universal"}], r"r\[0\]\.recipe must be one of plain, new-label, passport"),
        ([{"recipe": "plain", "dataset": "imagenet"}], r"r\[0\]\.dataset must be one of digits"),
        ([{"recipe": "plain", "colour": 1}], r"r\[0\]: unknown field 'colour'"),
        ([{"recipe": "plain", "seed": "1"}], r"r\[0\]\.seed must be a int"),
        ([{"recipe": "plain", "epochs": True}], r"r\[0\]\.epochs must be a int"),
        ([{"recipe": "plain", "input_shape": [1, 28]}], r"r\[0\]\.input_shape must be three integers in \[1, 512\]"),
        ([{"recipe": "plain", "input_shape": [1, 28, 4096]}], r"r\[0\]\.input_shape must be three integers"),
        ([{"recipe": "plain", "epochs": 0}], r"r\[0\]: seed must be in \[0, 2\^31\] and epochs in \[1, 1000\]"),
        (["plain"], r"r\[0\] must be a table"),
    ],
)
def test_bad_reference_specs_are_refused_naming_the_entry(items: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_references(items, "r")


def test_reference_specs_parse_into_jobs() -> None:
    (spec,) = parse_references([{"recipe": "new-label", "input_shape": [1, 32, 32], "seed": 7}], "r")
    assert spec.job() == {"recipe": "new-label", "arch": "lenet5", "dataset": "digits", "input_shape": [1, 32, 32],
                          "seed": 7, "epochs": 10}  # fmt: skip
    assert spec.shape_text == "1x32x32"


# --------------------------------------------------------------------------------------------
# Infos: what a claimant may say


@pytest.mark.parametrize("scheme", sorted(INFOS))
def test_infos_at_the_floors_parse_into_their_type(scheme: str) -> None:
    typed = parse_info(scheme, info(scheme))
    assert type(typed) is TYPES[scheme]
    assert typed.input_shape == (1, 28, 28)
    assert typed.queries > 0
    check_against_card(typed, CARD)


@pytest.mark.parametrize(
    ("scheme", "field", "fragment"),
    [
        ("new-label", "threshold", "new-label info: threshold 0.01 is below the community's floor 0.25"),
        ("function-coupled", "threshold", "function-coupled info: threshold 0.01 is below the community's floor 0.9"),
        ("blind", "threshold", "blind info: threshold 0.01 is below the community's floor 0.8"),
        # MTLSign's threshold is γ; at 0.5 or under it is not even a majority, so parsing refuses it.
        ("mtlsign", "gamma", r"mtlsign info: gamma must be a number in \(0\.5, 1\], got '0\.01'"),
    ],
)
def test_a_threshold_of_one_percent_is_refused(scheme: str, field: str, fragment: str) -> None:
    refused(scheme, info(scheme, **{field: 0.01}), fragment)


@pytest.mark.parametrize(
    ("scheme", "field", "value", "fragment"),
    [
        ("mtlsign", "n", 599, "mtlsign info: n 599 is below the community's floor 600"),
        ("new-label", "n", 99, "new-label info: n 99 is below the community's floor 100"),
        ("function-coupled", "n_verify", 10, "function-coupled info: n_verify 10 is below the community's floor 90"),
        ("blind", "n", 5, "blind info: n 5 is below the community's floor 100"),
        ("passport", "n_eval", 20, "passport info: n_eval 20 is below the community's floor 200"),
        ("new-label", "beta", 0.01, "new-label info: beta must be the community's 0.3, got 0.01"),
        # Louder than the community's β: another key's new-label models answer Δ to most such samples.
        ("new-label", "beta", 1.0, "new-label info: beta must be the community's 0.3, got 1"),
        ("blind", "min_ssim", 0.5, "blind info: min_ssim 0.5 is below the community's floor 0.9"),
        ("mtlsign", "gamma", 0.6, "mtlsign info: gamma 0.6 is below the community's floor 0.7"),
    ],
)
def test_counts_and_bars_below_the_floors_are_refused(scheme: str, field: str, value: object, fragment: str) -> None:
    refused(scheme, info(scheme, **{field: value}), fragment)


@pytest.mark.parametrize(
    ("scheme", "changes", "fragment"),
    [
        # 100 000 queries, and as many for each of the 8 controls: over the query cap whatever the shape.
        ("mtlsign", {"n": 100_000}, r"mtlsign info: 900000 inputs of \[1, 28, 28\] \(705600000 elements\) exceed"),
        # The MTLSign attack: the minimum N at a 256x256 input is 39 million input elements.
        ("mtlsign", {"input_shape": [1, 256, 256]}, r"\[1, 256, 256\] must have 1 or 3 channels and sides of at most 64"),  # noqa: E501
        ("mtlsign", {"n": 2000, "input_shape": [3, 64, 64], "mean": [0, 0, 0], "std": [1, 1, 1]},
         r"18000 inputs of \[3, 64, 64\] \(221184000 elements\) exceed"),
        ("new-label", {"n": 100, "input_shape": [3, 224, 224], "mean": [0, 0, 0], "std": [1, 1, 1]},
         r"new-label info: input_shape \[3, 224, 224\] must have 1 or 3 channels and sides of at most 64 pixels"),
        ("new-label", {"n": 2223}, r"20007 inputs of \[1, 28, 28\] .* \(20000 inputs, 32000000 elements\)"),
        # 9 × 5000 + the survey; then 9 × 1423 + the survey, which counts
        ("function-coupled", {"n_verify": 5000, "n_train": 5000}, "function-coupled info: 52200 inputs"),
        ("function-coupled", {"n_verify": 1423, "n_train": 1423}, "function-coupled info: 20007 inputs"),
        ("blind", {"n": 3000}, "blind info: 27000 inputs"),
        ("passport", {"n_eval": 100_000}, "passport info: 900000 inputs"),
    ],
)  # fmt: skip
def test_work_over_the_caps_is_refused(scheme: str, changes: dict[str, Any], fragment: str) -> None:
    refused(scheme, info(scheme, **changes), fragment)


def test_the_caps_follow_the_community_policy() -> None:
    policy = parse_policy({"max_queries": 5400, "max_input_elements": 5400 * 28 * 28}, "v")
    parse_info("mtlsign", info("mtlsign"), policy)  # exactly at the caps: 600 inputs and 8 × 600 controls
    refused("mtlsign", info("mtlsign", n=601), r"5409 inputs .* \(5400 inputs, 4233600 elements\)", policy)
    more = parse_policy({"max_queries": 5400, "control_keys": 9}, "v")  # more controls, as many inputs each
    refused("mtlsign", info("mtlsign"), r"6000 inputs .* with 9 control keys", more)


@pytest.mark.parametrize("delta", [1, 0, 9, 11, 1000])
def test_new_label_delta_must_be_the_class_the_task_lacks(delta: int) -> None:
    if delta == 0:  # not even a class index the parser accepts
        refused("new-label", info("new-label", delta=delta), r"delta must be an integer in \[1, 100000\], got '0'")
        return
    refused(
        "new-label",
        info("new-label", delta=delta),
        rf"Δ must be the one output the task does not have, class 10 of 'digits' \(its classes are 0-9\); got {delta}$",
    )


@pytest.mark.parametrize("scheme", ["new-label", "function-coupled", "blind", "passport"])
@pytest.mark.parametrize("dataset", ["mnist", "imagenet-1k", "digits2"])
def test_a_data_set_the_members_do_not_hold_is_refused(scheme: str, dataset: str) -> None:
    refused(
        scheme,
        info(scheme, dataset=dataset),
        rf"^data set '{dataset}' is not one every member holds \(digits\), so no node could rebuild the "
        "verification inputs from the key$",
    )


@pytest.mark.parametrize("scheme", ["new-label", "function-coupled", "blind", "passport"])
@pytest.mark.parametrize("dataset", ["../../etc/passwd", "/data/mnist", "", "MNIST", "a" * 41, None, 7, ["digits"]])
def test_a_data_set_name_that_could_be_a_path_is_refused(scheme: str, dataset: object) -> None:
    refused(scheme, info(scheme, dataset=dataset), rf"^{scheme} info: dataset must be a data set's name, got ")


def test_a_data_set_the_community_pins_is_accepted_with_its_own_classes(tmp_path: Path) -> None:
    (pinned,) = parse_datasets(
        [{"name": "mnist", "format": "mnist", "path": "m", "manifest_sha256": "ab" * 32, "num_classes": 10}],
        "d",
        tmp_path,
    )
    policy = replace(DEFAULT_POLICY, datasets=(pinned,))
    typed = parse_info("new-label", info("new-label", dataset="mnist"), policy)
    assert typed.dataset == "mnist"  # type: ignore[attr-defined]
    refused("new-label", info("new-label", dataset="cifar10"), r"not one every member holds \(digits, mnist\)", policy)


@pytest.mark.parametrize("kind", ["T2", "T3"])
def test_passports_the_claimant_ships_are_refused(kind: str) -> None:
    refused(
        "passport",
        info("passport", passport_type=kind),
        rf"passport info: {kind} passports are images the claimant ships, not derived from the key; "
        "this community judges T1 passports only",
    )
    refused("passport", info("passport", passport_type="T4"), r"passport_type must be T1, T2 or T3, got 'T4'")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"pool": 8}, "mtlsign info: pool 8 is over the community's cap 4"),
        ({"gamma": 0.6}, "mtlsign info: gamma 0.6 is below the community's floor 0.7"),
        ({"hidden": 4096}, "mtlsign info: hidden 4096 is over the community's cap 256"),
        ({"taps": ["a", "b", "c", "d", "e"]}, "mtlsign info: number of taps 5 is over the community's cap 4"),
        ({"taps": []}, "mtlsign info: taps must be a list of module paths"),
        ({"taps": "conv1"}, "mtlsign info: taps must be a list of module paths"),
        ({"gamma": 1.5}, r"mtlsign info: gamma must be a number in \(0\.5, 1\]"),
        ({"gamma": 0.5}, r"mtlsign info: gamma must be a number in \(0\.5, 1\], got '0\.5'"),
    ],
)
def test_mtlsign_heads_that_could_read_any_model_are_refused(changes: dict[str, Any], fragment: str) -> None:
    refused("mtlsign", info("mtlsign", **changes), fragment)


@pytest.mark.parametrize(
    ("scheme", "changes", "fragment"),
    [
        ("function-coupled", {"split_seed": 1}, r"as the community splits it \(split_seed 0, test_fraction 0\.2\)"),
        ("function-coupled", {"test_fraction": 0.5}, "split as the community splits it"),
        ("function-coupled", {"split_seed": None}, "the triggers must come from a data set every node holds"),
        ("function-coupled", {"num_classes": 12}, "function-coupled info: num_classes must be 'digits''s, got 12"),
        ("blind", {"num_classes": 3}, "blind info: num_classes must be 'digits''s, got 3"),
        ("passport", {"num_classes": 100}, "passport info: num_classes must be 'digits''s, got 100"),
    ],
)  # fmt: skip
def test_data_must_be_the_communitys_own(scheme: str, changes: dict[str, Any], fragment: str) -> None:
    refused(scheme, info(scheme, **changes), fragment)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([1, 2], "info must be a JSON object"),
        (info("new-label", colour="blue"), r"new-label info: missing fields \[\], unknown fields \['colour'\]"),
        ({k: v for k, v in INFOS["new-label"].items() if k != "n"}, r"missing fields \['n'\], unknown fields \[\]"),
        (info("new-label", scheme="mtlsign"), "info describes a 'mtlsign' watermark, not 'new-label'"),
        (info("new-label", n=True), r"n must be an integer in \[1, 100000\], got 'True'"),
        (info("new-label", n=100.0), r"n must be an integer in \[1, 100000\], got '100\.0'"),
        (info("new-label", threshold=math.nan), r"threshold must be a number in \[1e-09, 1\], got 'nan'"),
        (info("new-label", threshold="0.9"), r"threshold must be a number"),
        (info("new-label", input_shape=[1, 28]), r"input_shape must be three integers in \[1, 4096\]"),
        (info("new-label", input_shape=[0, 28, 28]), r"input_shape must be three integers"),
        (info("new-label", input_shape=[1, 28, 5000]), r"input_shape must be three integers"),
        (info("new-label", std=[0]), r"std must be 1 finite number\(s\), one per channel"),
        (info("new-label", mean=[0.5, 0.5]), r"mean must be 1 finite number\(s\), one per channel"),
        (info("new-label", mean=[math.inf]), r"mean must be 1 finite number\(s\)"),
    ],
)
def test_malformed_infos_are_refused_naming_the_field(obj: object, fragment: str) -> None:
    refused("new-label", obj, fragment)


def test_an_unknown_scheme_is_refused_and_info_errors_are_rejections() -> None:
    error = refused("universal", info("mtlsign"), "this community judges no 'universal' claims; schemes: blind, ")
    assert isinstance(error, RejectedError) and error.http_status == 409


# --------------------------------------------------------------------------------------------
# The suspect's card


def test_the_card_is_read_from_a_real_model_artifact() -> None:
    zoo = pytest.importorskip("schemes.models.zoo")
    card = zoo.ModelCard("lenet5", 10, (1, 28, 28), (0.5,), (0.5,))
    model = zoo.create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    summary = {k: v for k, v in card.to_json().items() if k != "extra"}  # what a node checks
    assert card_from_artifact(zoo.model_to_bytes(model, card)) == summary


def test_the_card_is_read_from_a_header_alone() -> None:
    fields = ("arch", "num_classes", "input_shape", "mean", "std")
    assert card_from_artifact(artifact_with_card(CARD)) == {k: CARD.get(k) for k in fields}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "the suspect model is not a safetensors file"),
        (b"\x10\x00\x00", "the suspect model is not a safetensors file"),
        (struct.pack("<Q", 0), "the suspect model's safetensors header is malformed"),
        (struct.pack("<Q", 1000) + b'{"__metadata__":{}}', "header is malformed"),  # truncated
        (struct.pack("<Q", 2**63) + b"{}", "header is malformed"),
        (struct.pack("<Q", 17 * 2**20) + b"{}" * 100, "header is malformed"),
        (artifact_with_card(CARD)[:40], "header is malformed"),  # a header cut short
        (
            b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe{}",
            "the suspect model's safetensors header is not valid JSON",
        ),  # not UTF-8
        (safetensors_bytes([1, 2]), "the suspect model's safetensors header is not a JSON object"),
        (safetensors_bytes("text"), "the suspect model's safetensors header is not a JSON object"),
        (safetensors_bytes({"weight": {"dtype": "F32"}}), "carries no model card"),
        (safetensors_bytes({"__metadata__": {"wmnode.card": 5}}), "carries no model card"),
        (safetensors_bytes({"__metadata__": {"wmnode.card": "{not json"}}), "carries no model card"),
        (safetensors_bytes({"__metadata__": "card"}), "carries no model card"),
        (artifact_with_card([1, 2, 3]), "the suspect model's card is not a JSON object"),
        (b"PK\x03\x04" + b"\x00" * 60, "header is malformed"),  # a pickle zip, the thing never to open
    ],
)
def test_garbage_and_truncated_headers_are_refused_cleanly(data: bytes, fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        card_from_artifact(data)


@pytest.mark.parametrize("where", ["header", "card"])
def test_a_deeply_nested_header_is_refused_cleanly(where: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    data = (
        safetensors_bytes({"__metadata__": {"wmnode.card": deep}})
        if where == "card"
        else struct.pack("<Q", len(deep)) + deep.encode()
    )
    with pytest.raises(MessageError, match="suspect model"):
        card_from_artifact(data)


@pytest.mark.parametrize(
    "card_changes",
    [{"input_shape": [3, 32, 32]}, {"input_shape": [1, 29, 29]}, {"input_shape": None}, {"mean": [0.1307]},
     {"std": [0.05]}, {"mean": None}, {"std": [0.5, 0.5]}],
)  # fmt: skip
@pytest.mark.parametrize("scheme", ["mtlsign", "new-label", "function-coupled", "blind", "passport"])
def test_a_card_that_differs_from_the_info_is_left_to_the_judge(scheme: str, card_changes: dict[str, Any]) -> None:
    """DESIGN §6.1 rule 4: the judge runs the suspect at the published shape through its own card's
    normalisation (schemes.suspect), so neither is a reason to refuse a claim on arrival: a thief who
    re-cards a copy (LeNet-5 builds the same weights at 1×29×29) does not void the owner's claim."""
    check_against_card(parse_info(scheme, info(scheme)), {**CARD, **card_changes})


# --------------------------------------------------------------------------------------------
# The verifier artifact: no shipped inputs where the key rebuilds them (DESIGN §6.1 rule 1)


@pytest.mark.parametrize(
    ("scheme", "names", "fragment"),
    [
        ("new-label", {"triggers"}, "new-label: the verifier artifact ships triggers, but this scheme's verification "
         "inputs come from the key; it may hold nothing"),
        ("function-coupled", {"inputs", "labels"}, "function-coupled: the verifier artifact ships inputs, labels,"),
        ("blind", {"key_samples", "logo", "covers"}, "blind: the verifier artifact ships covers, .* it may hold "
         "key_samples, logo"),
        ("passport", {"expected_acc", "passport_images"}, "passport: the verifier artifact ships passport_images"),
    ],
)  # fmt: skip
def test_a_verifier_that_ships_inputs_the_key_should_derive_is_refused(
    scheme: str, names: set[str], fragment: str
) -> None:
    typed = parse_info(scheme, info(scheme))
    with pytest.raises(InfoError, match=fragment):
        check_verifier(typed, names)


@pytest.mark.parametrize(
    ("scheme", "names"),
    [
        ("new-label", set()),
        ("function-coupled", set()),
        ("blind", {"key_samples", "logo"}),
        ("passport", {"expected_acc", "noise_levels", "noise_mean", "noise_std"}),
        ("mtlsign", {"head.0.weight", "head.0.bias", "anything"}),  # MTLSign's verifier is its trained head
    ],
)
def test_a_verifier_with_only_what_the_scheme_needs_passes(scheme: str, names: set[str]) -> None:
    check_verifier(parse_info(scheme, info(scheme)), names)


def test_tensor_names_come_from_the_header_without_its_metadata(tmp_path: Path) -> None:
    header = {"__metadata__": {"format": "pt"}, "logo": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    data = safetensors_bytes(header, b"\x00" * 4)
    assert tensor_names(data) == {"logo"}
    path = tmp_path / "v.safetensors"
    path.write_bytes(data)
    assert safetensors_header(path) == data[: len(data) - 4]  # the prefix and header, not the tensors
    with pytest.raises(MessageError, match="the verifier artifact's safetensors header is not a JSON object"):
        tensor_names(safetensors_bytes([1]))


def test_a_stored_header_over_16_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 16 * 2**20 + 1) + b"{}")
    with pytest.raises(MessageError, match=r"^huge\.safetensors's safetensors header is malformed \(over 16 MiB\)"):
        safetensors_header(path)


def test_the_node_reads_an_open_architectures_card_as_the_judge_builds_it() -> None:
    from contracts.cards import card_summary
    from contracts.infos import check_against_card

    config = {"architecture": "resnet18", "num_classes": 10, "input_shape": [1, 8, 8],  # a decoy at the top
              "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225]}}  # fmt: skip
    card = card_summary(config)
    assert card == {"arch": "timm:resnet18", "num_classes": 10, "input_shape": [3, 32, 32],
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # fmt: skip
    check_against_card(parse_info("new-label", info("new-label")), card)  # the judge runs it at [1, 28, 28]
    mtl = parse_info("mtlsign", {**info("mtlsign"), "input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3})
    with pytest.raises(InfoError, match="does not judge MTLSign on open architectures"):
        check_against_card(mtl, card)
    opened = parse_policy({"mtlsign": {"open_architectures": True}}, "v")
    check_against_card(mtl, card, opened)
