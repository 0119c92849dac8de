"""The config file's model: pydantic models for the YAML, cross-reference checks, and the
conversion to the planner's DesiredState.

Field-level rules (ranges, enums, formats) live in the models. Rules that span fields or sections
(references, "a period that can never fire", volumes claimed twice) live in `check_config`, which
returns each problem with the exact path it is about, so the loader can point at the line.
Nothing here reads files or imports the agent/daemon side: it is pure and safe to call anywhere.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
)

from reconciler import domain
from reconciler.durations import parse_duration

# ---------------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------------

# Tags are labels, not identifiers that end up in file names, so they may carry ':' '=' '.' '/'
# (env=prod, team/storage) but still no spaces or leading punctuation.
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,62}\Z")
# The destination name prefix goes into set names on the target.
PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]{0,64}\Z")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)\Z")
_TZ_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*\Z")

DAY_NAMES: dict[str, int] = {
    "mon": 0,
    "monday": 0,
    "tue": 1,
    "tuesday": 1,
    "wed": 2,
    "wednesday": 2,
    "thu": 3,
    "thursday": 3,
    "fri": 4,
    "friday": 4,
    "sat": 5,
    "saturday": 5,
    "sun": 6,
    "sunday": 6,
}


def _check_name(v: str) -> str:
    if not domain.NAME_RE.match(v):
        raise ValueError(
            f"invalid name {v!r}: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return v


def _check_tag(v: str) -> str:
    if not TAG_RE.match(v):
        raise ValueError(
            f"invalid tag {v!r}: use 1-63 letters, digits or '_-.:=/', starting with a letter or digit"
        )
    return v


def _check_volume(v: str) -> str:
    if not domain.valid_volume_name(v):
        raise ValueError(
            f"invalid volume name {v!r}: a pool-relative path like 'vms/web01/disk0' "
            "(segments of letters, digits, '._-', no leading '/', no '..' or hidden segments)"
        )
    return v


def _check_non_empty(v: str) -> str:
    if not v:
        raise ValueError("must not be empty")
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


# Beyond this, "now + duration" leaves datetime's range (year 9999) somewhere downstream.
MAX_DURATION = timedelta(days=100 * 365)


def _duration(v: Any) -> Any:
    if isinstance(v, timedelta):
        td = v
    elif isinstance(v, bool) or not isinstance(v, str):
        raise ValueError(f"expected a duration like 90s, 5m, 3h, 7d, 2w or 1y, got {_show(v)}")
    else:
        td = parse_duration(v)
    if td > MAX_DURATION:
        raise ValueError("longer than 100y (for a retention, use 'forever')")
    return td


def _positive_duration(v: timedelta) -> timedelta:
    if v <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return v


def _retention(v: Any) -> Any:
    # `retention:` with nothing after it is YAML null; reading that as "forever" would keep every
    # snapshot by accident, so forever must be spelled out.
    if v is None:
        raise ValueError("give a duration like 3d or the word 'forever'")
    if isinstance(v, str) and v.strip().lower() == "forever":
        return None
    td = _duration(v)
    if isinstance(td, timedelta) and td <= timedelta(0):
        raise ValueError("retention must be longer than 0s (or 'forever')")
    return td


def _timezone(v: Any) -> Any:
    if not isinstance(v, str):
        return v  # the str validator reports the type
    if not _TZ_RE.match(v) or len(v) > 100:
        raise ValueError(f"unknown timezone {v!r}: use an IANA name like 'UTC' or 'Europe/Berlin'")
    try:
        ZoneInfo(v)
    except Exception:  # ZoneInfoNotFoundError, IsADirectoryError, ...: all mean "not a zone"
        raise ValueError(f"unknown timezone {v!r}: use an IANA name like 'UTC' or 'Europe/Berlin'") from None
    return v


def _days(v: Any) -> Any:
    """`any`, one day name, or a list of them -> sorted tuple of ints (0=Mon..6=Sun); () = any."""
    if isinstance(v, tuple) and all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        return v
    items: list[Any]
    if isinstance(v, str):
        if v.strip().lower() == "any":
            return ()
        items = [v]
    elif isinstance(v, list):
        items = v
    else:
        raise ValueError(f"expected 'any', a day name (sun..sat) or a list of them, got {_show(v)}")
    out: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected day names like mon, tue, ... sun, got {_show(item)}")
        key = item.strip().lower()
        if key == "any" and len(items) == 1:
            return ()
        if key not in DAY_NAMES:
            raise ValueError(f"unknown day {item!r}: use mon, tue, wed, thu, fri, sat, sun (or 'any')")
        out.add(DAY_NAMES[key])
    return tuple(sorted(out))


def _datetime(v: Any) -> Any:
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, date):
        raise ValueError("give a date and a time, like '2026-12-24T18:00'")
    elif not isinstance(v, str):
        raise ValueError(f"expected an ISO date and time like '2026-12-24T18:00', got {_show(v)}")
    else:
        try:
            dt = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"invalid date/time {v!r}: use ISO format like '2026-12-24T18:00'") from None
    # keeps every timezone conversion and "at + retention" inside datetime's range
    if not 1970 <= dt.year <= 2999:
        raise ValueError(f"year {dt.year} is out of range (1970-2999)")
    return dt


def _time_of_day(v: Any) -> Any:
    if isinstance(v, time):
        return v
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,2}:\d{2}", v.strip()):
        raise ValueError(f"expected a time of day like '22:00', got {_show(v)}")
    hh, mm = (int(x) for x in v.strip().split(":"))
    if hh == 24 and mm == 0:
        return time(0, 0)  # "24:00" as the end of a window is the same instant as midnight
    if hh > 23 or mm > 59:
        raise ValueError(f"invalid time of day {v!r}: hours 00-23, minutes 00-59")
    return time(hh, mm)


def _address(v: str) -> str:
    if v.startswith("unix:"):
        if not v[5:].startswith("/") or "\x00" in v:
            raise ValueError(f"invalid address {v!r}: a unix socket is 'unix:/absolute/path'")
        return v
    host, sep, port = v.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {v!r}: expected host:port (port 1-65535) or unix:/path")
    return v


def _from_ref(v: str) -> str:
    profile, sep, period = v.partition("/")
    if not sep or not domain.NAME_RE.match(profile) or not domain.NAME_RE.match(period):
        raise ValueError(f"invalid reference {v!r}: expected PROFILE/PERIOD like 'daily/midnight'")
    return v


def _check_prefix(v: str) -> str:
    if not PREFIX_RE.match(v):
        raise ValueError(f"invalid prefix {v!r}: up to 64 letters, digits or '._-'")
    return v


def _resolve_path(v: Any, info: ValidationInfo) -> Any:
    """Relative paths are relative to the config file's directory, not the daemon's cwd."""
    if isinstance(v, Path):
        v = str(v)
    if not isinstance(v, str):
        raise ValueError(f"expected a path, got {_show(v)}")
    if not v.strip():
        raise ValueError("path must not be empty")
    if "\x00" in v or len(v) > 4096:
        raise ValueError("invalid path")
    ctx = info.context if isinstance(info.context, Mapping) else {}
    base = ctx.get("base_dir")
    base_dir = Path(base) if isinstance(base, (str, Path)) else Path.cwd()
    # abspath, not resolve(): no filesystem access while validating, so `validate` on an
    # Ansible controller gives the same answer as on the appliance.
    return Path(os.path.abspath(os.path.join(base_dir, os.path.expanduser(v) if v.startswith("~") else v)))


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (dict, list)):
        return "a mapping" if isinstance(v, dict) else "a list"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


Name = Annotated[str, AfterValidator(_check_name)]
Tag = Annotated[str, AfterValidator(_check_tag)]
VolumeName = Annotated[str, AfterValidator(_check_volume)]
NonEmptyStr = Annotated[str, AfterValidator(_check_non_empty)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive_duration)]
# None = forever
Retention = Annotated[timedelta | None, BeforeValidator(_retention)]
TimeZoneName = Annotated[str, BeforeValidator(_timezone)]
DaysOfWeek = Annotated[tuple[int, ...], BeforeValidator(_days)]
LocalDateTime = Annotated[datetime, BeforeValidator(_datetime)]
TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]
Address = Annotated[str, AfterValidator(_address)]
ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]
FromRef = Annotated[str, AfterValidator(_from_ref)]
Prefix = Annotated[str, AfterValidator(_check_prefix)]

# Every model is strict: YAML already gives typed scalars, so "5" for an int or "yes" for a bool
# is a mistake to report, not something to coerce quietly.

# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ca: ConfigPath
    cert: ConfigPath
    key: ConfigPath
    server_name: NonEmptyStr | None = None


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["chunkstore", "btrfs"]
    path: ConfigPath
    compression: Literal["zstd", "none"] = "zstd"
    compression_level: int = Field(default=3, ge=1, le=19)
    create: bool = False
    seed_demo_data: bool = False


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    embedded: bool = False
    address: Address | None = None
    tls: TLSConfig | None = None
    insecure: bool = False
    pools: dict[Name, PoolConfig] = Field(default_factory=dict)


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = ""
    profile: Name | None = None
    # sha256 (hex) of the tenant's API token: a request bearing the token sees and restores only the
    # tenant's resources and the sets exposed to it. Create one with `reconciler tenant token`.
    api_token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class ImmutabilityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # how long `reconciler snapshot unlock` waits before an immutable set can be deleted; the agents
    # enforce their own floor, so a shorter wait here cannot shorten it there
    unlock_wait: PositiveDuration = timedelta(days=7)


class QuiesceHooksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    freeze: list[NonEmptyStr] = Field(min_length=1)
    thaw: list[NonEmptyStr] = Field(min_length=1)
    timeout: PositiveDuration = timedelta(seconds=30)

    def to_domain(self) -> domain.Hooks:
        return domain.Hooks(freeze=tuple(self.freeze), thaw=tuple(self.thaw), timeout=self.timeout)


class ResourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["vm", "nas_volume"]
    # None: defaulted by the loader (the only node / the only pool of the node)
    node: Name | None = None
    pool: Name | None = None
    volumes: list[VolumeName] = Field(min_length=1)
    tags: list[Tag] = Field(default_factory=list)
    tenant: Name | None = None
    profile: Name | None = None
    quiesce: QuiesceHooksConfig | None = None


class PeriodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    frequency: Literal["hourly", "daily", "weekly", "monthly", "yearly", "custom", "interval"]
    minute: int = Field(default=0, ge=0, le=59)
    hour: int = Field(default=0, ge=0, le=23)
    day_of_week: DaysOfWeek = ()
    day_of_month: int = Field(default=0, ge=0, le=31)
    month: int = Field(default=0, ge=0, le=12)
    at: LocalDateTime | None = None
    every: Duration | None = None
    retention: Retention
    min_snapshots: int = Field(default=1, ge=1, le=100_000)
    skip_missed: bool = False
    quiesce: bool = False
    quiesce_policy: Literal["crash_consistent", "fail"] = "crash_consistent"
    immutable: bool = False
    private: bool = True
    timezone: TimeZoneName | None = None


class ProfileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    timezone: TimeZoneName = "UTC"
    periods: list[PeriodConfig] = Field(min_length=1)


class SystemSnapshotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["full", "partial"]
    profile: Name
    include_tags: list[Tag] = Field(default_factory=list)
    exclude_tags: list[Tag] = Field(default_factory=list)
    quiesce_tags: list[Tag] = Field(default_factory=list)
    # full scopes are crash-consistent unless asked: freezing every guest at once is disruptive
    quiesce: bool = False


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    count: int = Field(default=10, ge=0, le=10_000)
    interval: PositiveDuration = timedelta(minutes=1)
    multiplier: float = Field(default=2.0, ge=1.0, le=100.0, allow_inf_nan=False)


class WindowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: DaysOfWeek = ()
    start: TimeOfDay
    end: TimeOfDay
    throttle_bps: int = Field(default=0, ge=0)


class SyncItemConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    from_: FromRef = Field(alias="from")
    # default (left out): the local period's retention; see effective_retention
    retention: Retention = None
    min_snapshots: int = Field(default=1, ge=1, le=100_000)
    priority: int = Field(default=0, ge=0, le=9)
    prefix: Prefix = ""
    hold_until_synced: bool = False

    @property
    def profile(self) -> str:
        return self.from_.partition("/")[0]

    @property
    def period(self) -> str:
        return self.from_.partition("/")[2]

    def effective_retention(self, local: timedelta | None) -> timedelta | None:
        return self.retention if "retention" in self.model_fields_set else local


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    address: Address
    tls: TLSConfig | None = None
    # replication is encrypted by default; plaintext must be asked for by name
    insecure: bool = False
    # the target agent's pool that receives; default: the source pool's namesake there, else its
    # only pool of the same kind
    pool: Name | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)
    throttle_bps: int = Field(default=0, ge=0)
    compression: bool = True
    streams: int = Field(default=2, ge=1, le=16)
    windows: list[WindowConfig] = Field(default_factory=list)
    items: list[SyncItemConfig] = Field(default_factory=list)


class OffsiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    targets: dict[Name, TargetConfig] = Field(default_factory=dict)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1] = 1
    # this site's name: sent with every offsite copy, so that the receiving site (and this one,
    # looking at its targets) tells our copies from its own sets even when node names repeat
    site: Name | None = None
    nodes: dict[Name, NodeConfig] = Field(default_factory=dict)
    tenants: dict[Name, TenantConfig] = Field(default_factory=dict)
    resources: dict[Name, ResourceConfig] = Field(default_factory=dict)
    profiles: dict[Name, ProfileConfig] = Field(default_factory=dict)
    system_snapshots: dict[Name, SystemSnapshotConfig] = Field(default_factory=dict)
    offsite: OffsiteConfig = Field(default_factory=OffsiteConfig)
    immutability: ImmutabilityConfig = Field(default_factory=ImmutabilityConfig)

    # Set by the loader; a private attribute so the YAML cannot set it.
    _source_path: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def resource_location(self, name: str) -> tuple[str, str]:
        """(node, pool) of a resource, applying the only-node / only-pool defaults."""
        res = self.resources[name]
        node = res.node
        if node is None:
            if len(self.nodes) != 1:
                raise ValueError(f"resource {name!r}: no node given and there is not exactly one node")
            node = next(iter(self.nodes))
        pool = res.pool
        if pool is None:
            pools = self.nodes[node].pools if node in self.nodes else {}
            if len(pools) != 1:
                raise ValueError(f"resource {name!r}: no pool given and node {node!r} has not exactly one")
            pool = next(iter(pools))
        return node, pool


# ---------------------------------------------------------------------------------------------
# Cross-field and cross-section checks
# ---------------------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One config problem. `path` is where it is (dotted in messages); `refs` names the
    (section, name) entries the problem depends on, so the loader can drop follow-up errors about
    entries that already failed validation ("*" = any entry of the section)."""

    path: Loc
    message: str
    refs: tuple[tuple[str, str], ...] = ()


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if options and len(options) <= 10:
        return f" (known: {', '.join(options)})"
    return ""


_MONTH_DAYS = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
_MONTH_NAMES = {2: "February", 4: "April", 6: "June", 9: "September", 11: "November"}


def _check_period(period: PeriodConfig, loc: Loc) -> list[Problem]:
    out: list[Problem] = []
    freq = period.frequency

    def bad(field: str, message: str) -> None:
        out.append(Problem((*loc, field), message))

    if freq == "custom":
        if period.at is None:
            out.append(
                Problem(loc, "a custom period needs `at` (the instant to run, like '2026-12-24T18:00')")
            )
        # a one-shot runs at `at`; any recurring field would be silently ignored
        for field, default in (
            ("minute", 0),
            ("hour", 0),
            ("day_of_week", ()),
            ("day_of_month", 0),
            ("month", 0),
        ):
            if getattr(period, field) != default:
                bad(field, f"not used by custom periods (`at` gives the instant); remove {field}")
    elif period.at is not None:
        bad("at", f"`at` is only for frequency: custom (this period is {freq})")

    if freq == "interval":
        if period.every is None:
            out.append(Problem(loc, "an interval period needs `every` (like every: 15m)"))
        elif period.every < timedelta(seconds=10):
            bad("every", "must be at least 10s")
        for field in ("minute", "hour"):
            if getattr(period, field) != 0:
                bad(
                    field,
                    f"not used by interval periods (they are aligned to local midnight); remove {field}",
                )
    elif period.every is not None:
        bad("every", f"`every` is only for frequency: interval (this period is {freq})")

    if freq == "hourly" and period.hour != 0:
        bad("hour", "hourly periods run every hour, so `hour` is not used; remove it")
    if freq == "weekly" and not period.day_of_week:
        out.append(
            Problem(
                (*loc, "day_of_week") if "day_of_week" in period.model_fields_set else loc,
                "a weekly period needs a day: set day_of_week (like day_of_week: sun)",
            )
        )
    if freq == "monthly" and period.day_of_month == 0:
        out.append(
            Problem(
                (*loc, "day_of_month") if "day_of_month" in period.model_fields_set else loc,
                "a monthly period needs a day: set day_of_month (1-31)",
            )
        )
    if freq == "yearly":
        if period.month == 0:
            out.append(
                Problem(
                    (*loc, "month") if "month" in period.model_fields_set else loc,
                    "a yearly period needs a date: set month (1-12)",
                )
            )
        if period.day_of_month == 0:
            out.append(
                Problem(
                    (*loc, "day_of_month") if "day_of_month" in period.model_fields_set else loc,
                    "a yearly period needs a date: set day_of_month (1-31)",
                )
            )
    if freq != "custom" and period.month in _MONTH_DAYS and period.day_of_month > _MONTH_DAYS[period.month]:
        bad(
            "day_of_month",
            f"{_MONTH_NAMES[period.month]} has no day {period.day_of_month}: this period would never run",
        )
    return out


def is_loopback_address(address: str) -> bool:
    """A unix socket, localhost or a loopback IP: where plain text may be allowed."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_tls(tls: TLSConfig | None, insecure: bool, address: str, loc: Loc, what: str) -> list[Problem]:
    if tls is None and not insecure:
        return [Problem((*loc, "address"), f"{what} needs tls (or insecure: true to allow plaintext)")]
    if tls is not None and insecure:
        return [Problem((*loc, "insecure"), "insecure: true contradicts the tls settings; remove one")]
    if insecure and not is_loopback_address(address):
        # an agent listens in plain text only on loopback (reconciler agent refuses otherwise)
        return [
            Problem(
                (*loc, "insecure"),
                f"plain text is allowed only to a loopback address or a unix socket, not {address}; set tls",
            )
        ]
    return []


def check_config(config: Config) -> list[Problem]:
    """Every rule that spans fields or sections. Empty list = the config is consistent."""
    out: list[Problem] = []
    nodes = config.nodes
    profiles = config.profiles

    # nodes and pools
    if not nodes:
        out.append(Problem(("nodes",), "at least one node is required", refs=(("nodes", "*"),)))
    embedded_seen: str | None = None
    for n, node in nodes.items():
        loc: Loc = ("nodes", n)
        if node.embedded and node.address is not None:
            out.append(Problem((*loc, "address"), "a node is either embedded or has an address, not both"))
        elif not node.embedded and node.address is None:
            out.append(Problem(loc, "set embedded: true (hosted by the daemon) or an address"))
        elif node.embedded:
            if embedded_seen is not None:
                out.append(
                    Problem(
                        (*loc, "embedded"),
                        f"only one node can be embedded; {embedded_seen!r} already is",
                    )
                )
            else:
                embedded_seen = n
            if node.tls is not None:
                out.append(
                    Problem((*loc, "tls"), "an embedded node runs in-process: tls is not used; remove it")
                )
        else:
            out.extend(_check_tls(node.tls, node.insecure, str(node.address), loc, "a remote node"))
        seen_paths: dict[Path, str] = {}
        for p, pool in node.pools.items():
            ploc: Loc = (*loc, "pools", p)
            if pool.type != "chunkstore":
                for field in ("compression", "compression_level"):
                    if field in pool.model_fields_set:
                        out.append(Problem((*ploc, field), f"only chunkstore pools compress; remove {field}"))
            if pool.path in seen_paths:
                out.append(
                    Problem(
                        (*ploc, "path"), f"pool {seen_paths[pool.path]!r} on this node already uses this path"
                    )
                )
            else:
                seen_paths[pool.path] = p

    # tenants
    for t, tenant in config.tenants.items():
        if tenant.profile is not None and tenant.profile not in profiles:
            out.append(
                Problem(
                    ("tenants", t, "profile"),
                    f"unknown profile {tenant.profile!r}{_did_you_mean(tenant.profile, profiles)}",
                    refs=(("profiles", tenant.profile),),
                )
            )

    # resources and the volumes they claim
    claims: dict[tuple[str, str, str], tuple[str, Loc]] = {}
    for r, res in config.resources.items():
        loc = ("resources", r)
        node_refs: tuple[tuple[str, str], ...]
        node_name = res.node
        if node_name is None:
            node_refs = (("nodes", "*"),)
            if len(nodes) == 1:
                node_name = next(iter(nodes))
            elif len(nodes) > 1:
                out.append(
                    Problem(
                        loc,
                        f"there are several nodes: set node (one of {', '.join(sorted(nodes))})",
                        refs=node_refs,
                    )
                )
        else:
            node_refs = (("nodes", node_name),)
            if node_name not in nodes:
                out.append(
                    Problem(
                        (*loc, "node"),
                        f"unknown node {node_name!r}{_did_you_mean(node_name, nodes)}",
                        refs=node_refs,
                    )
                )
                node_name = None
        pool_name = res.pool
        if node_name is not None:
            pools = nodes[node_name].pools
            if pool_name is None:
                if len(pools) == 1:
                    pool_name = next(iter(pools))
                elif not pools:
                    out.append(
                        Problem(
                            loc,
                            f"node {node_name!r} has no pools",
                            refs=(*node_refs, ("pools", f"{node_name}/*")),
                        )
                    )
                else:
                    out.append(
                        Problem(
                            loc,
                            f"node {node_name!r} has several pools: set pool (one of {', '.join(sorted(pools))})",
                            refs=(*node_refs, ("pools", f"{node_name}/*")),
                        )
                    )
            elif pool_name not in pools:
                out.append(
                    Problem(
                        (*loc, "pool"),
                        f"node {node_name!r} has no pool {pool_name!r}{_did_you_mean(pool_name, pools)}",
                        refs=(*node_refs, ("pools", f"{node_name}/{pool_name}")),
                    )
                )
                pool_name = None
        if res.tenant is not None and res.tenant not in config.tenants:
            out.append(
                Problem(
                    (*loc, "tenant"),
                    f"unknown tenant {res.tenant!r}{_did_you_mean(res.tenant, config.tenants)}",
                    refs=(("tenants", res.tenant),),
                )
            )
        if res.profile is not None and res.profile not in profiles:
            out.append(
                Problem(
                    (*loc, "profile"),
                    f"unknown profile {res.profile!r}{_did_you_mean(res.profile, profiles)}",
                    refs=(("profiles", res.profile),),
                )
            )
        if node_name is None or pool_name is None:
            continue
        for i, volume in enumerate(res.volumes):
            key = (node_name, pool_name, volume)
            vloc: Loc = (*loc, "volumes", i)
            if key in claims:
                owner = claims[key][0]
                who = "this resource" if owner == r else f"resource {owner!r}"
                out.append(
                    Problem(vloc, f"volume {volume!r} on {node_name}/{pool_name} is already claimed by {who}")
                )
            else:
                claims[key] = (r, vloc)
    # A volume inside another claimed volume would be snapshotted twice and restored over its parent.
    for (node_name, pool_name, volume), (_owner, vloc) in claims.items():
        parts = volume.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if (node_name, pool_name, parent) in claims:
                owner = claims[(node_name, pool_name, parent)][0]
                out.append(
                    Problem(
                        vloc, f"volume {volume!r} is inside volume {parent!r} claimed by resource {owner!r}"
                    )
                )
                break

    # profiles and periods
    for pname, profile in profiles.items():
        names: set[str] = set()
        for i, period in enumerate(profile.periods):
            ploc = ("profiles", pname, "periods", i)
            if period.name in names:
                out.append(Problem((*ploc, "name"), f"duplicate period name {period.name!r} in this profile"))
            names.add(period.name)
            out.extend(_check_period(period, ploc))

    # system snapshot scopes
    for s, scope in config.system_snapshots.items():
        loc = ("system_snapshots", s)
        if scope.profile not in profiles:
            out.append(
                Problem(
                    (*loc, "profile"),
                    f"unknown profile {scope.profile!r}{_did_you_mean(scope.profile, profiles)}",
                    refs=(("profiles", scope.profile),),
                )
            )
        if scope.type == "full":
            for field in ("include_tags", "exclude_tags"):
                if getattr(scope, field):
                    out.append(
                        Problem(
                            (*loc, field), f"a full scope covers every resource; {field} needs type: partial"
                        )
                    )
            if scope.quiesce_tags:
                out.append(
                    Problem(
                        (*loc, "quiesce_tags"),
                        "quiesce_tags are for partial scopes; a full scope quiesces all or nothing (quiesce: true)",
                    )
                )
        else:
            if scope.include_tags and scope.exclude_tags:
                out.append(
                    Problem(
                        (*loc, "exclude_tags"),
                        "include_tags and exclude_tags are mutually exclusive; keep one",
                    )
                )
            elif not scope.include_tags and not scope.exclude_tags:
                out.append(
                    Problem(loc, "a partial scope needs include_tags or exclude_tags (or use type: full)")
                )
            if scope.quiesce:
                out.append(
                    Problem(
                        (*loc, "quiesce"),
                        "a partial scope quiesces the resources matched by quiesce_tags; remove quiesce",
                    )
                )

    # offsite targets
    for tname, target in config.offsite.targets.items():
        loc = ("offsite", "targets", tname)
        out.extend(_check_tls(target.tls, target.insecure, str(target.address), loc, "an offsite target"))
        seen_from: set[str] = set()
        for i, item in enumerate(target.items):
            iloc: Loc = (*loc, "items", i, "from")
            if item.from_ in seen_from:
                out.append(Problem(iloc, f"{item.from_!r} is already listed for this target"))
            seen_from.add(item.from_)
            prof = profiles.get(item.profile)
            if prof is None:
                out.append(
                    Problem(
                        iloc,
                        f"unknown profile {item.profile!r}{_did_you_mean(item.profile, profiles)}",
                        refs=(("profiles", item.profile),),
                    )
                )
            elif item.period not in {p.name for p in prof.periods}:
                periods = [p.name for p in prof.periods]
                out.append(
                    Problem(
                        iloc,
                        f"profile {item.profile!r} has no period {item.period!r}{_did_you_mean(item.period, periods)}",
                        refs=(("profiles", item.profile), ("periods", item.from_)),
                    )
                )
    return out


def apply_defaults(config: Config) -> None:
    """Fill each resource's node/pool from the only-node / only-pool defaults (after check_config)."""
    for name, res in config.resources.items():
        if res.node is None or res.pool is None:
            res.node, res.pool = config.resource_location(name)


# ---------------------------------------------------------------------------------------------
# Desired state
# ---------------------------------------------------------------------------------------------

_FREQUENCY = {f.value: f for f in domain.Frequency}


def _to_utc(at: datetime, tz: str) -> datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(tz))
    return at.astimezone(UTC)


def period_to_domain(period: PeriodConfig, profile_tz: str) -> domain.Period:
    tz = period.timezone or profile_tz
    return domain.Period(
        name=period.name,
        frequency=_FREQUENCY[period.frequency],
        timezone=tz,
        minute=period.minute,
        hour=period.hour,
        days_of_week=frozenset(period.day_of_week),
        day_of_month=period.day_of_month,
        month=period.month,
        at=_to_utc(period.at, tz) if period.at is not None else None,
        every=period.every,
        retention=period.retention,
        min_snapshots=period.min_snapshots,
        skip_missed=period.skip_missed,
        quiesce=period.quiesce,
        quiesce_policy=period.quiesce_policy,
        immutable=period.immutable,
        private=period.private,
    )


def profile_to_domain(name: str, profile: ProfileConfig) -> domain.Profile:
    return domain.Profile(
        name=name, periods=tuple(period_to_domain(p, profile.timezone) for p in profile.periods)
    )


def _members(
    config: Config, resources: Iterable[str], quiesce: Mapping[str, bool]
) -> tuple[domain.Member, ...]:
    out: list[domain.Member] = []
    for r in resources:
        res = config.resources[r]
        node, pool = config.resource_location(r)
        hooks = res.quiesce.to_domain() if res.quiesce is not None else None
        settings = res.model_dump_json(exclude_none=True, exclude={"quiesce"})
        out.extend(
            domain.Member(
                ref=domain.VolumeRef(node, pool, v),
                resource=r,
                quiesce=quiesce.get(r, False),
                hooks=hooks,
                tenant=res.tenant or "",
                settings=settings,
            )
            for v in res.volumes
        )
    return tuple(sorted(out, key=lambda m: m.ref.key))


def _selection(config: Config, scope: domain.Scope) -> tuple[list[str], dict[str, bool]]:
    """The resources a scope covers, and which of them are quiesced when a period asks for it."""
    if scope.kind is domain.ScopeKind.SYSTEM:
        sys_scope = config.system_snapshots.get(scope.name)
        if sys_scope is None:
            raise KeyError(
                f"no system snapshot scope {scope.name!r}{_did_you_mean(scope.name, config.system_snapshots)}"
            )
        if sys_scope.type == "full":
            selected = list(config.resources)
            return selected, {r: sys_scope.quiesce for r in selected}
        if sys_scope.include_tags:
            wanted = set(sys_scope.include_tags)
            selected = [r for r, res in config.resources.items() if wanted & set(res.tags)]
        else:
            unwanted = set(sys_scope.exclude_tags)
            selected = [r for r, res in config.resources.items() if not unwanted & set(res.tags)]
        qtags = set(sys_scope.quiesce_tags)
        return selected, {r: bool(qtags & set(config.resources[r].tags)) for r in selected}
    if scope.kind is domain.ScopeKind.TENANT:
        if scope.name not in config.tenants:
            raise KeyError(f"no tenant {scope.name!r}{_did_you_mean(scope.name, config.tenants)}")
        selected = [r for r, res in config.resources.items() if res.tenant == scope.name]
    else:
        if scope.name not in config.resources:
            raise KeyError(f"no resource {scope.name!r}{_did_you_mean(scope.name, config.resources)}")
        selected = [scope.name]
    return selected, {r: config.resources[r].quiesce is not None for r in selected}


def scope_members(config: Config, scope: domain.Scope) -> tuple[domain.Member, ...]:
    """Every volume a scope covers (system, tenant or resource), whether or not it has a profile.

    Raises KeyError naming the unknown scope."""
    selected, quiesce = _selection(config, scope)
    return _members(config, selected, quiesce)


def desired_state(config: Config) -> domain.DesiredState:
    """What the planner schedules: one binding per scope that has a profile.

    Expects a config that passed check_config (the loader guarantees it); raises ValueError on an
    unresolved reference rather than guessing.
    """
    profiles: dict[str, domain.Profile] = {}

    def profile(name: str) -> domain.Profile:
        if name not in profiles:
            if name not in config.profiles:
                raise ValueError(f"unknown profile {name!r}")
            profiles[name] = profile_to_domain(name, config.profiles[name])
        return profiles[name]

    bound: list[tuple[domain.Scope, str]] = [
        (domain.Scope(domain.ScopeKind.SYSTEM, s), scope.profile)
        for s, scope in config.system_snapshots.items()
    ]
    bound += [
        (domain.Scope(domain.ScopeKind.TENANT, t), tenant.profile)
        for t, tenant in config.tenants.items()
        if tenant.profile is not None
    ]
    bound += [
        (domain.Scope(domain.ScopeKind.RESOURCE, r), res.profile)
        for r, res in config.resources.items()
        if res.profile is not None
    ]
    bindings = [
        domain.ScopeBinding(
            scope=sc,
            profile=profile(prof),
            members=scope_members(config, sc),
            private=sc.kind is domain.ScopeKind.SYSTEM,
        )
        for sc, prof in bound
    ]
    bindings.sort(key=lambda b: b.scope.key)
    return domain.DesiredState(bindings=tuple(bindings), nodes=tuple(sorted(config.nodes)))


__all__ = [
    "Config",
    "scope_members",
    "NodeConfig",
    "PoolConfig",
    "TLSConfig",
    "TenantConfig",
    "ResourceConfig",
    "QuiesceHooksConfig",
    "ProfileConfig",
    "PeriodConfig",
    "SystemSnapshotConfig",
    "OffsiteConfig",
    "TargetConfig",
    "RetryConfig",
    "WindowConfig",
    "SyncItemConfig",
    "Problem",
    "check_config",
    "apply_defaults",
    "desired_state",
    "period_to_domain",
    "profile_to_domain",
    "DAY_NAMES",
]
