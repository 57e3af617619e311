from __future__ import annotations

import logging
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from node_config import example_config
from registry.community.config import EXAMPLE_SECRET, load_config

MEMBERS = """
[[members]]
name = "a"
raft = "{host}:7001"
api = "{host}:8001"

[[members]]
name = "b"
raft = "127.0.0.1:7002"
api = "127.0.0.1:8002"
"""


def write(tmp_path: Path, body: str, host: str = "127.0.0.1") -> Path:
    path = tmp_path / "node.toml"
    head = f'community = "c.example/x"\nname = "a"\nraft = "{host}:7001"\napi = "{host}:8001"\n'
    path.write_text(head + body + MEMBERS.format(host=host))
    return path


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_example_configs_load(n: int) -> None:
    cfg = load_config(example_config(n))
    assert cfg.name == f"node{n}"
    assert (cfg.raft.port, cfg.api.port) == (7100 + n, 8100 + n)
    assert [m.name for m in cfg.members] == ["node1", "node2", "node3"]
    assert cfg.is_loopback and cfg.uses_example_secret
    cfg.check_secret(dev=False)  # the example starts as it is on loopback


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('colour = "blue"\n', "unknown field 'colour'"),
        ('max_skew_seconds = "5"\n', "field 'max_skew_seconds' must be a int"),
        ("max_skew_seconds = 0\n", "must be positive"),
        ('secret = "short"\n', "at least 16 characters"),
        ('secret = "0123456789abcdefg"\nsecret_file = "s"\n', "not both"),
        ('secret_file = "missing.txt"\n', "secret_file .*missing.txt"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(write(tmp_path, extra))


def test_bad_address_is_named(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('community = "c"\nname = "a"\nraft = "nowhere"\napi = "127.0.0.1:1"\nmembers = []\n')
    with pytest.raises(ConfigError, match="raft: expected HOST:PORT"):
        load_config(path)


def test_name_must_be_a_member(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(write(tmp_path, "").read_text().replace('name = "a"\nraft', 'name = "z"\nraft', 1))
    with pytest.raises(ConfigError, match="'z' is not one of the members"):
        load_config(path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("community = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_secret_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("a-real-secret-of-some-length\n")
    cfg = load_config(write(tmp_path, 'secret_file = "secret.txt"\n'))
    assert cfg.secret == "a-real-secret-of-some-length"


def test_no_secret_is_refused_unless_dev(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="no community secret"):
        cfg.check_secret(dev=False)
    cfg.check_secret(dev=True)


def test_off_loopback_needs_a_real_secret(tmp_path: Path) -> None:
    bare = load_config(write(tmp_path, "", host="10.1.2.3"))
    with pytest.raises(ConfigError, match="loopback only"):
        bare.check_secret(dev=True)
    with pytest.raises(ConfigError, match="no community secret"):
        bare.check_secret(dev=False)
    example = load_config(write(tmp_path, f'secret = "{EXAMPLE_SECRET}"\n', host="10.1.2.3"))
    with pytest.raises(ConfigError, match="example community secret cannot be used off loopback"):
        example.check_secret(dev=False)
    real = load_config(write(tmp_path, 'secret = "a-real-secret-of-some-length"\n', host="10.1.2.3"))
    real.check_secret(dev=False)


def test_logging_is_untouched_by_loading(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        load_config(example_config(1))
    assert caplog.records == []


def test_the_secret_never_shows_in_a_repr(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'secret = "a-real-secret-of-some-length"\n'))
    assert "a-real-secret" not in repr(cfg)
