"""Load and validate a node's TOML config into a frozen `NodeConfig`, naming the bad field."""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from contracts.datasets import parse_datasets
from contracts.errors import ConfigError
from contracts.fetch import FetchPolicy
from contracts.limits import ClientLimits, parse_limits
from contracts.policy import DEFAULT_POLICY, VerificationPolicy, parse_policy
from contracts.references import ReferenceSpec, parse_references
from registry.log.clock import ClockSettings

#: The secret the example configs carry: fine on loopback, refused anywhere else.
EXAMPLE_SECRET = "wmnode-example-community-secret-not-for-real-use"  # noqa: S105 - public on purpose
MIN_SECRET_CHARS = 16

_TOP_KEYS = {
    "community": str,
    "name": str,
    "raft": str,
    "api": str,
    "secret": str,
    "secret_file": str,
    "max_skew_seconds": int,
    "commit_timeout_seconds": int,
    "data_dir": str,
    "identity_seed": str,
    "max_artifact_bytes": int,
    "fetch": dict,
    "time": dict,
    "verification": dict,
    "references": list,
    "datasets": list,
    "members": list,
    "limits": dict,
}
_MEMBER_KEYS = {"name": str, "raft": str, "api": str, "key": str}
_FETCH_KEYS = {
    "allow_loopback": bool,
    "allow_private": bool,
    "allow_hosts": list,
    "max_bytes": int,
    "timeout_seconds": int,
}
_TIME_KEYS = {"stamp_bound_seconds": int, "beacon_seconds": int}
_REQUIRED = ("community", "name", "raft", "api", "members")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, field: str) -> Address:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{field}: expected HOST:PORT with a port in 1-65535, got {text!r}")
        return cls(host, int(port))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Member:
    name: str
    raft: Address
    api: Address
    #: The member's Ed25519 public key (hex): its votes and checkpoints are checked against it.
    key: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.api}"


@dataclass(frozen=True)
class NodeConfig:
    """One node's view of its community. Everything is checked once, here."""

    community: str
    name: str
    raft: Address
    api: Address
    members: tuple[Member, ...]
    secret: str | None = field(default=None, repr=False)  # never in logs or error output
    max_skew_ms: int = 5 * 60 * 1000
    commit_timeout_s: int = 10
    data_dir: Path | None = None
    source: Path | None = None
    #: A node identity derived from this string (example and test communities, loopback only).
    identity_seed: str | None = field(default=None, repr=False)
    max_artifact_bytes: int = 256 * 2**20
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    #: How claims are judged (floors, caps, references, judges): the same on every member.
    verification: VerificationPolicy = DEFAULT_POLICY
    #: Reference models this node trains and records at first start (`[[references]]`).
    references: tuple[ReferenceSpec, ...] = ()
    #: The community's clock rules (`max_skew_seconds` and `[time]`); the Raft handshake checks
    #: that every member has the same.
    clock: ClockSettings = field(default_factory=ClockSettings)
    #: Rate limits, store quotas, request deadlines and connection caps (`[limits]`).
    limits: ClientLimits = field(default_factory=ClientLimits)

    @property
    def member_keys(self) -> tuple[str, ...]:
        """Every member's public key; a config in which one is missing cannot count votes."""
        missing = [m.name for m in self.members if m.key is None]
        if missing:
            raise ConfigError(
                f"{self.source or 'config'}: members {', '.join(missing)} have no 'key': votes and "
                "checkpoints are checked against every member's public key (`wmnode node-key` prints one)"
            )
        return tuple(m.key for m in self.members if m.key is not None)

    @property
    def me(self) -> Member:
        return next(m for m in self.members if m.name == self.name)

    @property
    def peers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.name != self.name)

    @property
    def is_loopback(self) -> bool:
        return self.raft.is_loopback and self.api.is_loopback

    @property
    def uses_example_secret(self) -> bool:
        return self.secret == EXAMPLE_SECRET

    def check_secret(self, dev: bool) -> None:
        """DESIGN §4.3: a community secret is mandatory outside dev mode, and real off loopback."""
        where = f"{self.raft} / {self.api}"
        if self.secret is None:
            if not dev:
                raise ConfigError(
                    "no community secret: set 'secret' or 'secret_file' in the config "
                    "(Raft traffic is pickled; without a secret anyone reaching the port can run code), "
                    "or pass --dev for a loopback-only test node"
                )
            if not self.is_loopback:
                raise ConfigError(f"--dev without a secret is for loopback only; this node binds {where}")
        elif self.uses_example_secret and not self.is_loopback:
            raise ConfigError(f"the example community secret cannot be used off loopback (binds {where}); set your own")
        if self.identity_seed is not None and not self.is_loopback:
            raise ConfigError(f"identity_seed is for loopback example communities only (binds {where}); remove it")

    def with_data_dir(self, data_dir: Path | None) -> NodeConfig:
        return self if data_dir is None else replace(self, data_dir=data_dir)


def _check_keys(table: dict[str, Any], allowed: Mapping[str, type], where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}: unknown field {key!r} (allowed: {', '.join(sorted(allowed))})")
        want = allowed[key]
        if (isinstance(value, bool) and want is not bool) or not isinstance(value, want):
            raise ConfigError(f"{where}: field {key!r} must be a {want.__name__}, got {type(value).__name__}")


def _member(table: object, index: int, source: str) -> Member:
    where = f"{source}: members[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with name, raft and api")
    _check_keys(table, _MEMBER_KEYS, where)
    for name in ("name", "raft", "api"):
        if name not in table:
            raise ConfigError(f"{where}: missing field {name!r}")
    public: str | None = table.get("key")
    if public is not None and not (len(public) == 64 and all(c in "0123456789abcdef" for c in public)):
        raise ConfigError(f"{where}.key: must be a 32-byte Ed25519 public key in lowercase hex")
    return Member(
        table["name"],
        Address.parse(table["raft"], f"{where}.raft"),
        Address.parse(table["api"], f"{where}.api"),
        public,
    )


def _clock(raw: dict[str, Any], source: str) -> ClockSettings:
    table = raw.get("time", {})
    _check_keys(table, _TIME_KEYS, f"{source}: time")
    try:
        return ClockSettings(
            skew_ms=1000 * raw.get("max_skew_seconds", 300),
            bound_ms=1000 * table.get("stamp_bound_seconds", 30),
            beacon_ms=1000 * table.get("beacon_seconds", 5),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _fetch_policy(table: dict[str, Any], source: str) -> FetchPolicy:
    where = f"{source}: fetch"
    _check_keys(table, _FETCH_KEYS, where)
    hosts = table.get("allow_hosts", [])
    if not all(isinstance(h, str) and h and h.isascii() for h in hosts):
        raise ConfigError(f"{where}.allow_hosts: must be a list of host names")
    for name in ("max_bytes", "timeout_seconds"):
        if name in table and table[name] <= 0:
            raise ConfigError(f"{where}.{name}: must be positive")
    defaults = FetchPolicy()
    return FetchPolicy(
        allow_loopback=table.get("allow_loopback", False),
        allow_private=table.get("allow_private", False),
        allow_hosts=tuple(h.lower().rstrip(".") for h in hosts),
        max_bytes=table.get("max_bytes", defaults.max_bytes),
        timeout_s=float(table.get("timeout_seconds", defaults.timeout_s)),
    )


def _secret(raw: dict[str, Any], base: Path, source: str) -> str | None:
    if "secret" in raw and "secret_file" in raw:
        raise ConfigError(f"{source}: give 'secret' or 'secret_file', not both")
    secret: str | None = raw.get("secret")
    if "secret_file" in raw:
        path = base / raw["secret_file"]
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{source}: secret_file {path}: {exc.strerror}") from exc
    if secret is not None and secret != EXAMPLE_SECRET and len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"{source}: the community secret must be at least {MIN_SECRET_CHARS} characters")
    return secret


def parse_config(raw: dict[str, Any], source: str, base: Path) -> NodeConfig:
    _check_keys(raw, _TOP_KEYS, source)
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{source}: missing field {key!r}")
    members = tuple(_member(m, i, source) for i, m in enumerate(raw["members"]))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: members: duplicate member names {names}")
    config = NodeConfig(
        community=raw["community"],
        name=raw["name"],
        raft=Address.parse(raw["raft"], f"{source}: raft"),
        api=Address.parse(raw["api"], f"{source}: api"),
        members=members,
        secret=_secret(raw, base, source),
        max_skew_ms=1000 * raw.get("max_skew_seconds", 300),
        commit_timeout_s=raw.get("commit_timeout_seconds", 10),
        data_dir=(base / raw["data_dir"]) if "data_dir" in raw else None,
        identity_seed=raw.get("identity_seed"),
        max_artifact_bytes=raw.get("max_artifact_bytes", 256 * 2**20),
        fetch=_fetch_policy(raw.get("fetch", {}), source),
        verification=replace(
            parse_policy(raw.get("verification", {}), f"{source}: verification"),
            datasets=parse_datasets(raw.get("datasets", []), f"{source}: datasets", base),
        ),
        references=parse_references(raw.get("references", []), f"{source}: references"),
        clock=_clock(raw, source),
        limits=parse_limits(raw.get("limits", {}), f"{source}: limits"),
    )
    if config.name not in names:
        raise ConfigError(f"{source}: name: {config.name!r} is not one of the members {names}")
    if (config.me.raft, config.me.api) != (config.raft, config.api):
        raise ConfigError(f"{source}: raft/api differ from this node's entry in members")
    if config.max_skew_ms <= 0 or config.commit_timeout_s <= 0 or config.max_artifact_bytes <= 0:
        raise ConfigError(f"{source}: max_skew_seconds, commit_timeout_seconds, max_artifact_bytes must be positive")
    keys = [m.key for m in members if m.key is not None]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{source}: members: two members share one key")
    return config


def load_config(path: Path) -> NodeConfig:
    """Read a node config file; every error names the file and the field."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return replace(parse_config(raw, str(path), path.parent), source=path)
