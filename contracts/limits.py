"""What each part of the node bounds, one class per meaning (DESIGN §6.2).

`ClientLimits` is a node's `[limits]` table: what one client may read, write and hold, typed and checked.

`registry.metering` enforces it: token buckets per client address and signing identity, the artifact
store's quotas, caps on uploads in flight, and deadlines and caps on connections.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from contracts.encoding import is_int, is_number
from contracts.errors import ConfigError, ZooError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KIB, MIB, GIB = 2**10, 2**20, 2**30


@dataclass(frozen=True)
class Rate:
    """A token bucket: `per_s` tokens a second, at most `burst` saved up."""

    per_s: float
    burst: int


@dataclass(frozen=True)
class ClientLimits:
    """A node's `[limits]`: how fast one client or identity may write and read, and how much the
    store keeps.

    The defaults leave an honest client far below them (`wmnode claim` sends one claim and three
    uploads, one at a time; `wmnode demo` polls a claim twenty times a second) and hold a flood from
    one address to a few dozen writes a second and a few hundred reads.
    """

    publish_per_address: Rate = Rate(50.0, 200)
    publish_per_identity: Rate = Rate(5.0, 20)
    claim_per_address: Rate = Rate(5.0, 20)
    claim_per_identity: Rate = Rate(1.0, 5)
    upload_per_address: Rate = Rate(10.0, 50)
    #: GETs, in entries' worth (registry.api.read_cost): one entry costs ~50 µs of CPU to serve.
    read_per_address: Rate = Rate(2000.0, 4000)
    #: GET /v1/artifacts/{sha256}, in bytes. A full bucket lets any one artifact through.
    download_per_address: Rate = Rate(float(32 * MIB), GIB)
    #: Clients in these networks are not rate limited (quotas, deadlines and caps still hold).
    exempt: tuple[Network, ...] = ()
    #: Buckets kept, least recently used out first: the limiter's memory bound.
    tracked_clients: int = 100_000
    store_quota_bytes: int = 20 * GIB
    #: The last part of the store quota that only the node's own writes and peer copies may use.
    store_reserved_percent: int = 5
    pending_quota_bytes: int = GIB
    pending_per_address_bytes: int = 256 * MIB
    pending_grace_s: float = 3600.0
    #: Uploads one address may have arriving at once, and their bytes received so far.
    max_uploads_per_address: int = 2
    in_flight_per_address_bytes: int = 512 * MIB
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    #: A body must average this many bytes a second once `body_rate_grace_s` has passed.
    min_body_rate_bytes: int = 16 * KIB
    body_rate_grace_s: float = 10.0
    max_connections: int = 256
    max_connections_per_address: int = 16

    def rate(self, kind: str, scope: str) -> Rate | None:
        rate: Rate | None = getattr(self, f"{kind}_per_{scope}", None)
        return rate

    def is_exempt(self, host: str | None) -> bool:
        if not self.exempt or not host:
            return False
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.exempt)

    @property
    def upload_quota_bytes(self) -> int:
        """The part of the store quota that uploads may fill: all but the reserved percent."""
        return self.store_quota_bytes * (100 - self.store_reserved_percent) // 100


_RATES = (
    "publish_per_address",
    "publish_per_identity",
    "claim_per_address",
    "claim_per_identity",
    "upload_per_address",
    "read_per_address",
    "download_per_address",
)
_COUNTS = ("tracked_clients", "store_quota_bytes", "pending_quota_bytes", "pending_per_address_bytes",
           "max_uploads_per_address", "in_flight_per_address_bytes", "min_body_rate_bytes", "max_connections",
           "max_connections_per_address")  # fmt: skip
_SECONDS = {"pending_grace_seconds": "pending_grace_s", "header_timeout_seconds": "header_timeout_s",
            "body_timeout_seconds": "body_timeout_s", "body_rate_grace_seconds": "body_rate_grace_s"}  # fmt: skip
_PERCENTS = ("store_reserved_percent",)


def parse_limits(table: Mapping[str, Any], where: str) -> ClientLimits:
    """The `[limits]` table of a node config; every error names the field."""
    changes: dict[str, Any] = {}
    for name, value in table.items():
        if name in _RATES:
            changes[name] = _rate(value, f"{where}.{name}")
        elif name in _COUNTS:
            if not is_int(value, low=1):
                raise ConfigError(f"{where}.{name} must be a positive integer, got {value!r}")
            changes[name] = value
        elif name in _SECONDS:
            if not is_number(value) or not value > 0:
                raise ConfigError(f"{where}.{name} must be a positive number of seconds, got {value!r}")
            changes[_SECONDS[name]] = float(value)
        elif name in _PERCENTS:
            if not is_int(value, 0, 50):
                raise ConfigError(f"{where}.{name} must be a whole percentage from 0 to 50, got {value!r}")
            changes[name] = value
        elif name == "exempt_networks":
            changes["exempt"] = _networks(value, f"{where}.{name}")
        else:
            allowed = sorted([*_RATES, *_COUNTS, *_SECONDS, *_PERCENTS, "exempt_networks"])
            raise ConfigError(f"{where}: unknown field {name!r} (allowed: {', '.join(allowed)})")
    limits = replace(ClientLimits(), **changes)
    if limits.pending_quota_bytes > limits.store_quota_bytes:
        raise ConfigError(f"{where}: pending_quota_bytes is over store_quota_bytes, of which it is a part")
    return limits


def _rate(value: object, where: str) -> Rate:
    if not isinstance(value, Mapping) or set(value) != {"rate", "burst"}:
        raise ConfigError(f"{where} must be an inline table {{ rate = PER_SECOND, burst = N }}, got {value!r}")
    rate, burst = value["rate"], value["burst"]
    if not is_number(rate) or not rate > 0:
        raise ConfigError(f"{where}.rate must be a positive number per second, got {rate!r}")
    if not is_int(burst, low=1):
        raise ConfigError(f"{where}.burst must be a positive integer, got {burst!r}")
    return Rate(float(rate), burst)


def _networks(value: object, where: str) -> tuple[Network, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of networks like "127.0.0.0/8"')
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: The most parameters a model a stranger names may have (counted on `meta` before allocation).
MAX_PARAMETERS = 350_000_000


@dataclass(frozen=True)
class ConnectionLimits:
    """Deadlines and caps on the node's HTTP connections (`contracts.asgi.ConnectionGuard` enforces them)."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_per_address: int
    #: A body must average this many bytes a second, counted from its start, once the grace is over.
    min_body_rate: int = 16 * 1024
    body_rate_grace_s: float = 10.0


@dataclass(frozen=True)
class WireLimits:
    """Bounds on what one peer connection may cost."""

    max_frame_bytes: int = 4 * 2**20
    max_write_buffer: int = 64 * 2**20
    handshake_s: float = 3.0
    idle_s: float = 10.0
    max_pending: int = 32
    max_pending_per_ip: int = 4
    #: New connections a second from addresses that are no member's (each costs a key exchange).
    stranger_accepts_per_s: float = 64.0
    #: Bytes read from one socket per poll event, so one busy peer cannot starve the tick.
    read_budget: int = 1 * 2**20


@dataclass(frozen=True)
class BuildLimits:
    """What a node agrees to build from a stranger's card (a community's `[verification]`):
    architectures matching one of `architectures` (shell patterns: `lenet5`, `timm:resnet*`,
    `torchvision:*`), at most `max_parameters` parameters, counted on `meta` before allocation."""

    architectures: tuple[str, ...] = ("*",)
    max_parameters: int = MAX_PARAMETERS

    def check(self, arch: str) -> None:
        """Refuse an architecture the community does not build (ZooError naming it)."""
        if not any(fnmatch.fnmatchcase(arch, pattern) for pattern in self.architectures):
            raise ZooError(f"architecture {arch!r} is not one this community builds ({', '.join(self.architectures)})")


@dataclass(frozen=True)
class JobLimits:
    """What one judge job may take (registry.serve.judges enforces them): resident memory, CPU
    seconds, and wall-clock seconds."""

    memory_bytes: int
    cpu_seconds: int
    wall_seconds: float
