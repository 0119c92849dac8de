"""The config layer: durations, models, the loader's positioned errors, desired state, fuzzing."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from reconciler import domain
from reconciler.config import Config, PoolConfig, check_config, desired_state
from reconciler.config_loader import MAX_BYTES, load_config, load_model, parse_config, validate_file
from reconciler.durations import format_duration, parse_duration
from reconciler.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.yaml"
LINE_RE = re.compile(r"^.+:\d+:\d+: .+: .+")

# A small valid config; tests append to it or replace parts. Line numbers below refer to it.
BASE = """\
version: 1
nodes:
  local:
    embedded: true
    pools:
      main: {type: chunkstore, path: ./pool}
profiles:
  daily:
    periods:
      - name: midnight
        frequency: daily
        retention: 3d
resources:
  web01:
    kind: vm
    volumes: [vms/web01/disk0]
    tags: [web]
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    path = write(tmp_path, text)
    errs = validate_file(path)
    assert errs, "expected the config to be invalid"
    for line in errs:
        assert LINE_RE.match(line), line
    return str(path), errs


def assert_error(errs: list[str], prefix: str, fragment: str) -> None:
    """One error line starts with `prefix` (file:line:col: path: ) and mentions `fragment`."""
    matching = [e for e in errs if e.startswith(prefix)]
    assert matching, f"no error at {prefix!r} in:\n" + "\n".join(errs)
    assert any(fragment in e for e in matching), f"{fragment!r} not in {matching}"


# ---------------------------------------------------------------------------------------------
# durations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("3h", timedelta(hours=3)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("5", "expected"),
        ("5x", "unknown unit 'x'"),
        ("30m1h", "largest first"),
        ("1h1h", "largest first"),
        ("1.5m", "only seconds"),
        ("-5m", "expected"),
        ("99999999999y", "too large"),
    ],
)
def test_parse_duration_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_duration(text)


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=365), "1y"),
        (timedelta(days=8), "1w1d"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=1500), "1.5s"),
    ],
)
def test_format_duration(td: timedelta, text: str) -> None:
    assert format_duration(td) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3_000_000)))
def test_duration_round_trip(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td


# ---------------------------------------------------------------------------------------------
# valid configs
# ---------------------------------------------------------------------------------------------


def test_example_config_is_valid() -> None:
    assert validate_file(EXAMPLE) == []
    config = load_config(EXAMPLE)
    assert config.source_path == EXAMPLE
    pool = config.nodes["local"].pools["main"]
    assert pool.path == REPO / "var" / "pool"
    assert pool.create and pool.seed_demo_data
    assert set(config.resources) == {"demo-vm", "demo-share"}
    periods = {p.name: p for p in config.profiles["demo"].periods}
    assert periods["every-minute"].every == timedelta(minutes=1)
    assert periods["every-minute"].retention == timedelta(minutes=5)
    assert periods["every-minute"].min_snapshots == 2
    state = desired_state(config)
    assert [b.scope.key for b in state.bindings] == ["system:full"]
    assert state.nodes == ("local",)


FULL = """\
version: 1
x-hooks: &hooks {freeze: [fsfreeze, -f, /mnt/x], thaw: [fsfreeze, -u, /mnt/x], timeout: 10s}
nodes:
  local:
    embedded: true
    pools:
      main: {type: chunkstore, path: ./var/pool, compression: none, create: true}
  storage-b:
    address: "10.0.0.2:7443"
    tls: {ca: tls/ca.pem, cert: tls/cert.pem, key: tls/key.pem, server_name: storage-b}
    pools:
      fast: {type: btrfs, path: /srv/btrfs}
      slow: {type: chunkstore, path: /srv/chunks, compression_level: 19}
  lab:
    address: "unix:/run/agent.sock"
    insecure: true
tenants:
  acme: {description: "ACME", profile: tenant-daily}
  other: {}
resources:
  web01:
    kind: vm
    node: local
    volumes: [vms/web01/disk0, vms/web01/disk1]
    tags: [web, prod]
    tenant: acme
    quiesce: *hooks
  db01:
    kind: vm
    node: storage-b
    pool: fast
    volumes: [vms/db01]
    tags: [db, prod]
    tenant: acme
    profile: vm-hourly
  share:
    kind: nas_volume
    node: storage-b
    pool: slow
    volumes: [shares/share]
    tags: [nas]
profiles:
  daily:
    timezone: Europe/Berlin
    periods:
      - {name: midnight, frequency: daily, hour: 0, retention: 3d}
      - {name: noon, frequency: daily, hour: 12, retention: 1d, timezone: America/New_York}
      - {name: weekdays, frequency: hourly, day_of_week: [Monday, tue, WED], retention: 1d}
      - {name: weekly, frequency: weekly, day_of_week: sun, retention: 31d}
      - {name: leap, frequency: yearly, month: 2, day_of_month: 29, retention: forever}
      - {name: monthly, frequency: monthly, day_of_month: 31, retention: 1y, immutable: true}
      - {name: xmas, frequency: custom, at: "2026-12-24T18:00", retention: 30d}
      - {name: xmas-utc, frequency: custom, at: "2026-12-24T18:00:00+00:00", retention: 30d}
  hourly:
    periods:
      - {name: h, frequency: hourly, minute: 15, retention: 3h, immutable: true, private: false}
  tenant-daily:
    periods:
      - {name: d, frequency: daily, retention: 7d, quiesce: true, quiesce_policy: fail}
  vm-hourly:
    periods:
      - {name: i, frequency: interval, every: 15m, retention: 1d, skip_missed: true}
system_snapshots:
  full: {type: full, profile: daily, quiesce: true}
  web: {type: partial, include_tags: [web, db], quiesce_tags: [db], profile: hourly}
  rest: {type: partial, exclude_tags: [web], profile: daily}
offsite:
  targets:
    dr:
      address: "dr.example.net:7443"
      tls: {ca: tls/ca.pem, cert: tls/cert.pem, key: tls/key.pem}
      retry: {count: 5, interval: 30s, multiplier: 1.5}
      throttle_bps: 1000000
      compression: false
      streams: 4
      windows: [{days: [mon, tue], start: "22:00", end: "06:00", throttle_bps: 0}]
      items:
        - {from: daily/midnight, retention: 30d, priority: 1, prefix: "site-a.", hold_until_synced: true}
        - {from: daily/leap}
"""


def test_full_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.nodes["storage-b"].tls is not None
    assert config.nodes["storage-b"].tls.ca == tmp_path / "tls" / "ca.pem"
    assert config.nodes["local"].pools["main"].path == tmp_path / "var" / "pool"
    assert config.resources["web01"].pool == "main"  # defaulted: the only pool of `local`
    periods = {p.name: p for p in config.profiles["daily"].periods}
    assert periods["weekdays"].day_of_week == (0, 1, 2)
    assert periods["weekly"].day_of_week == (6,)
    assert periods["leap"].retention is None  # forever
    items = config.offsite.targets["dr"].items
    assert items[0].effective_retention(timedelta(days=3)) == timedelta(days=30)
    assert items[1].effective_retention(None) is None
    assert items[1].effective_retention(timedelta(days=3)) == timedelta(days=3)
    assert config.offsite.targets["dr"].windows[0].start.hour == 22
    assert check_config(config) == []


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    config = load_config(write(sub, BASE))
    assert config.nodes["local"].pools["main"].path == sub / "pool"
    config = parse_config(textwrap.dedent(BASE), filename="x.yaml", base_dir=Path("/srv/cfg"))
    assert config.nodes["local"].pools["main"].path == Path("/srv/cfg/pool")


# ---------------------------------------------------------------------------------------------
# desired state
# ---------------------------------------------------------------------------------------------


def test_desired_state_scopes(tmp_path: Path) -> None:
    state = desired_state(load_config(write(tmp_path, FULL)))
    by_key = {b.scope.key: b for b in state.bindings}
    assert list(by_key) == sorted(by_key)
    assert list(by_key) == [
        "resource:db01",
        "system:full",
        "system:rest",
        "system:web",
        "tenant:acme",
    ]
    assert state.nodes == ("lab", "local", "storage-b")

    def refs(key: str) -> list[str]:
        return [m.ref.key for m in by_key[key].members]

    every = [
        "local/main/vms/web01/disk0",
        "local/main/vms/web01/disk1",
        "storage-b/fast/vms/db01",
        "storage-b/slow/shares/share",
    ]
    assert refs("system:full") == every
    # include_tags: any of the tags
    assert refs("system:web") == every[:3]
    # exclude_tags: none of the tags
    assert refs("system:rest") == ["storage-b/fast/vms/db01", "storage-b/slow/shares/share"]
    assert refs("tenant:acme") == every[:3]
    assert refs("resource:db01") == ["storage-b/fast/vms/db01"]

    for key in ("system:full", "system:web", "system:rest"):
        assert by_key[key].private is True
        assert by_key[key].scope.kind is domain.ScopeKind.SYSTEM
    assert by_key["tenant:acme"].private is False
    assert by_key["tenant:acme"].scope == domain.Scope(domain.ScopeKind.TENANT, "acme")
    assert by_key["resource:db01"].scope == domain.Scope(domain.ScopeKind.RESOURCE, "db01")

    def quiesced(key: str) -> dict[str, bool]:
        return {m.ref.key: m.quiesce for m in by_key[key].members}

    # full with quiesce: true quiesces everything
    assert all(quiesced("system:full").values())
    # partial: only resources with a quiesce tag
    assert quiesced("system:web") == {every[0]: False, every[1]: False, every[2]: True}
    assert not any(quiesced("system:rest").values())
    # tenant/resource scopes: resources with hooks
    assert quiesced("tenant:acme") == {every[0]: True, every[1]: True, every[2]: False}
    assert quiesced("resource:db01") == {"storage-b/fast/vms/db01": False}

    web_member = by_key["tenant:acme"].members[0]
    assert web_member.resource == "web01"
    assert web_member.hooks == domain.Hooks(
        freeze=("fsfreeze", "-f", "/mnt/x"), thaw=("fsfreeze", "-u", "/mnt/x"), timeout=timedelta(seconds=10)
    )
    assert by_key["tenant:acme"].members[2].hooks is None


def test_desired_state_periods(tmp_path: Path) -> None:
    state = desired_state(load_config(write(tmp_path, FULL)))
    by_key = {b.scope.key: b for b in state.bindings}
    daily = by_key["system:full"].profile
    assert daily.name == "daily"
    periods = {p.name: p for p in daily.periods}
    # timezone: the profile's, or the period's own override
    assert periods["midnight"].timezone == "Europe/Berlin"
    assert periods["noon"].timezone == "America/New_York"
    assert periods["midnight"].frequency is domain.Frequency.DAILY
    assert periods["weekdays"].days_of_week == frozenset({0, 1, 2})
    assert periods["weekly"].days_of_week == frozenset({6})
    assert periods["leap"].retention is None
    assert periods["leap"].month == 2 and periods["leap"].day_of_month == 29
    assert periods["monthly"].immutable is True
    # a naive `at` is in the profile's timezone (Berlin is UTC+1 in December)
    assert periods["xmas"].at == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    assert periods["xmas-utc"].at == datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    assert periods["xmas"].frequency is domain.Frequency.CUSTOM
    hourly = by_key["system:web"].profile.periods[0]
    assert (hourly.minute, hourly.private, hourly.immutable, hourly.timezone) == (15, False, True, "UTC")
    tenant = by_key["tenant:acme"].profile.periods[0]
    assert (tenant.quiesce, tenant.quiesce_policy) == (True, "fail")
    interval = by_key["resource:db01"].profile.periods[0]
    assert interval.frequency is domain.Frequency.INTERVAL
    assert interval.every == timedelta(minutes=15)
    assert interval.skip_missed is True


def test_default_node_and_pool(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert (config.resources["web01"].node, config.resources["web01"].pool) == ("local", "main")
    assert desired_state(config).bindings == ()


# ---------------------------------------------------------------------------------------------
# reading errors: YAML level
# ---------------------------------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "nodes:\n  local: [1\n  other: 2\n")
    assert len(errs) == 1
    assert_error(errs, f"{f}:3:8: <root>: ", "YAML syntax error")


def test_tab_indentation(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "nodes:\n\tlocal: {}\n")
    assert_error(errs, f"{f}:2:1: <root>: ", "'\\t'")


def test_duplicate_keys_all_reported(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        """\
        nodes:
          local:
            embedded: true
            embedded: false
          local: {}
        """,
    )
    assert errs == [
        f"{f}:4:5: nodes.local.embedded: duplicate key (first defined on line 3)",
        f"{f}:5:3: nodes.local: duplicate key (first defined on line 2)",
    ]


def test_empty_file(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "")
    assert errs == [f"{f}:1:1: <root>: the config is empty: expected a mapping"]
    f, errs = errors_of(tmp_path, "# only a comment\n")
    assert len(errs) == 1 and "empty" in errs[0]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("- a\n- b\n", "a list"),
        ("just text\n", "a string"),
        ("42\n", "an integer"),
        # a comment on a top-level block scalar's indicator line trips an assertion in ruamel's
        # comment bookkeeping (found by the fuzz test below): read again without comments
        ("# c\n|  # x\n# y\n", "a string"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, what: str) -> None:
    f, errs = errors_of(tmp_path, text)
    assert errs == [f"{f}:1:1: <root>: the top level must be a mapping, got {what}"]


def test_too_large(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "a: " + "x" * MAX_BYTES + "\n")
    assert errs == [f"{f}:1:1: <root>: the config file is larger than 1 MiB"]
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        parse_config("a: " + "x" * MAX_BYTES, filename="t", base_dir=tmp_path)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    f, errs = errors_of(tmp_path, "\n".join(lines) + "\n")
    assert len(errs) == 1
    assert re.match(rf"^{re.escape(f)}:\d+:\d+: .+: more than 100000 YAML nodes", errs[0]), errs


def test_too_many_nodes(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "a: [" + "1," * 100_001 + "]\n")
    assert len(errs) == 1 and "more than 100000 YAML nodes" in errs[0]
    assert errs[0].startswith(f"{f}:1:")


def test_deep_nesting(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert len(errs) == 1
    assert errs[0].startswith(f"{f}:1:67: a[0]") and errs[0].endswith("nested deeper than 64 levels")
    block = "".join("  " * i + "k:\n" for i in range(400))
    _, errs = errors_of(tmp_path, block)
    assert "nested deeper than 64 levels" in errs[0]


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"nodes:\n  l\xc3\xa9\xff: {}\n")
    errs = validate_file(path)
    assert errs == [f"{path}:2:5: <root>: not valid UTF-8 (byte 0xff)"]


def test_missing_file(tmp_path: Path) -> None:
    errs = validate_file(tmp_path / "nope.yaml")
    assert len(errs) == 1 and errs[0].startswith(f"{tmp_path / 'nope.yaml'}:1:1: <root>: cannot read")


def test_unsupported_yaml_values(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE
        + """\
tenants:
  acme: {description: !custom x}
  beta: {description: !!binary aGVsbG8=}
  ? [a, b]
  : {}
""",
    )
    assert errs == [
        f"{f}:19:23: tenants.acme.description: the YAML tag '!custom' is not supported here",
        f"{f}:20:23: tenants.beta.description: binary values are not supported here",
        f"{f}:21:5: tenants: mapping keys must be strings, got a list",
    ]


def test_a_complex_key_holding_a_mapping_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Found by the fuzz test: ruamel cannot build a mapping key that holds a mapping (unhashable),
    which came out as an 'internal error'; the parser's guard now refuses it where it stands."""
    f, errs = errors_of(tmp_path, BASE.replace("      main: {", "?      main: {"))
    assert errs == [f"{f}:6:14: main: mapping keys must be strings, got a key with a nested mapping or list"]


# ---------------------------------------------------------------------------------------------
# schema errors
# ---------------------------------------------------------------------------------------------


def test_unknown_key_with_hint(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace("        retention: 3d\n", "        retention: 3d\n        hours: 5\n").replace(
            "version: 1\n", "version: 1\nnode: {}\n"
        ),
    )
    assert errs == [
        f"{f}:2:1: node: unknown key 'node'; did you mean 'nodes'?",
        f"{f}:14:9: profiles.daily.periods[0].hours: unknown key 'hours'; did you mean 'hour'?",
    ]


def test_unknown_key_without_close_match_lists_allowed(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, BASE.replace("    kind: vm\n", "    kind: vm\n    zzzzzz: 1\n"))
    assert errs == [
        f"{f}:16:5: resources.web01.zzzzzz: unknown key 'zzzzzz' (allowed: kind, node, pool, volumes, tags, "
        "tenant, profile, quiesce)"
    ]


def test_type_range_and_enum_errors(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace(
            "        frequency: daily\n",
            "        frequency: fortnightly\n        hour: 24\n        minute: x\n",
        )
        .replace("path: ./pool}", "path: ./pool, compression_level: 20, create: yes}")
        .replace("tags: [web]", "tags: web"),
    )
    assert errs == [
        f"{f}:6:65: nodes.local.pools.main.compression_level: Input should be less than or equal to 19 (got 20)",
        f"{f}:6:77: nodes.local.pools.main.create: expected true or false (got 'yes')",
        f"{f}:11:20: profiles.daily.periods[0].frequency: Input should be 'hourly', 'daily', 'weekly', 'monthly', "
        "'yearly', 'custom' or 'interval' (got 'fortnightly')",
        f"{f}:12:15: profiles.daily.periods[0].hour: Input should be less than or equal to 23 (got 24)",
        f"{f}:13:17: profiles.daily.periods[0].minute: expected an integer (got 'x')",
        f"{f}:19:11: resources.web01.tags: expected a list (got 'web')",
    ]


def test_missing_required_key_points_at_parent(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, BASE.replace("        retention: 3d\n", ""))
    assert errs == [f"{f}:10:9: profiles.daily.periods[0].retention: required key is missing"]
    f, errs = errors_of(tmp_path, BASE.replace("    volumes: [vms/web01/disk0]\n", ""))
    assert errs == [f"{f}:14:3: resources.web01.volumes: required key is missing"]


def test_field_format_errors(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace("volumes: [vms/web01/disk0]", "volumes: [vms/../etc, ok]")
        .replace("  local:\n", "  bad.name:\n")
        .replace("        retention: 3d\n", "        retention: 3 days\n        timezone: Mars/Olympus\n"),
    )
    assert errs == [
        f"{f}:3:3: nodes[\"bad.name\"]: invalid name 'bad.name': use 1-63 letters, digits, '-' or '_', "
        "starting with a letter or digit",
        f"{f}:12:20: profiles.daily.periods[0].retention: invalid duration '3 days': expected e.g. 90s, 5m, 3h, 7d, "
        "2w, 1y or 1h30m",
        f"{f}:13:19: profiles.daily.periods[0].timezone: unknown timezone 'Mars/Olympus': use an IANA name "
        "like 'UTC' or 'Europe/Berlin'",
        f"{f}:17:15: resources.web01.volumes[0]: invalid volume name 'vms/../etc': a pool-relative path like "
        "'vms/web01/disk0' (segments of letters, digits, '._-', no leading '/', no '..' or hidden segments)",
    ]


def test_site_name(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, "site: east coast\n" + BASE)
    assert errs == [
        f"{f}:1:7: site: invalid name 'east coast': use 1-63 letters, digits, '-' or '_', starting with a "
        "letter or digit"
    ]
    path = tmp_path / "ok.yaml"
    path.write_text("site: east\n" + BASE)
    assert load_config(path).site == "east"


def test_retention_needs_a_value(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, BASE.replace("retention: 3d", "retention:"))
    assert errs == [
        f"{f}:12:9: profiles.daily.periods[0].retention: give a duration like 3d or the word 'forever'"
    ]


# ---------------------------------------------------------------------------------------------
# cross-reference and semantic errors
# ---------------------------------------------------------------------------------------------


def test_unknown_references(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace("    tags: [web]\n", "    tags: [web]\n    tenant: acmee\n    profile: dayly\n")
        + """\
tenants:
  acme: {profile: nope}
system_snapshots:
  full: {type: full, profile: hourly}
""",
    )
    assert errs == [
        f"{f}:18:13: resources.web01.tenant: unknown tenant 'acmee'; did you mean 'acme'?",
        f"{f}:19:14: resources.web01.profile: unknown profile 'dayly'; did you mean 'daily'?",
        f"{f}:21:19: tenants.acme.profile: unknown profile 'nope' (known: daily)",
        f"{f}:23:31: system_snapshots.full.profile: unknown profile 'hourly' (known: daily)",
    ]


def test_unknown_node_and_pool(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE
        + """\
  web02:
    kind: vm
    node: lokal
    volumes: [a]
  web03:
    kind: vm
    pool: mian
    volumes: [b]
""",
    )
    assert errs == [
        f"{f}:20:11: resources.web02.node: unknown node 'lokal'; did you mean 'local'?",
        f"{f}:24:11: resources.web03.pool: node 'local' has no pool 'mian'; did you mean 'main'?",
    ]


def test_node_required_with_several_nodes_and_pool_with_several_pools(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace(
            "      main: {type: chunkstore, path: ./pool}\n",
            "      main: {type: chunkstore, path: ./pool}\n      other: {type: chunkstore, path: ./other}\n"
            "  b:\n    address: '127.0.0.1:1'\n    insecure: true\n",
        )
        + """\
  web02:
    kind: vm
    node: local
    volumes: [a]
""",
    )
    assert errs == [
        f"{f}:18:3: resources.web01: there are several nodes: set node (one of b, local)",
        f"{f}:22:3: resources.web02: node 'local' has several pools: set pool (one of main, other)",
    ]


def test_volume_claimed_twice(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE
        + """\
  web02:
    kind: vm
    volumes: [vms/web01/disk0, x, x]
  web03:
    kind: vm
    volumes: [vms/web01/disk0/part]
""",
    )
    assert errs == [
        f"{f}:20:15: resources.web02.volumes[0]: volume 'vms/web01/disk0' on local/main is already claimed by "
        "resource 'web01'",
        f"{f}:20:35: resources.web02.volumes[2]: volume 'x' on local/main is already claimed by this resource",
        f"{f}:23:15: resources.web03.volumes[0]: volume 'vms/web01/disk0/part' is inside volume "
        "'vms/web01/disk0' claimed by resource 'web01'",
    ]


def test_node_rules(tmp_path: Path) -> None:
    text = BASE.replace(
        "  local:\n",
        "  second:\n    embedded: true\n  remote:\n    address: 'r.example:7443'\n"
        "  both:\n    embedded: true\n    address: 'b:1'\n  neither: {}\n  local:\n",
    ).replace("    tags: [web]\n", "    tags: [web]\n    node: local\n")
    f, errs = errors_of(tmp_path, text)
    assert errs == [
        f"{f}:6:14: nodes.remote.address: a remote node needs tls (or insecure: true to allow plaintext)",
        f"{f}:9:14: nodes.both.address: a node is either embedded or has an address, not both",
        f"{f}:10:3: nodes.neither: set embedded: true (hosted by the daemon) or an address",
        f"{f}:12:15: nodes.local.embedded: only one node can be embedded; 'second' already is",
    ]


def test_pool_rules(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace(
            "      main: {type: chunkstore, path: ./pool}\n",
            "      main: {type: chunkstore, path: ./pool}\n"
            "      again: {type: chunkstore, path: pool/../pool}\n"
            "      fs: {type: btrfs, path: /srv, compression: zstd}\n",
        ).replace("    tags: [web]\n", "    tags: [web]\n    pool: main\n"),
    )
    assert errs == [
        f"{f}:7:39: nodes.local.pools.again.path: pool 'main' on this node already uses this path",
        f"{f}:8:50: nodes.local.pools.fs.compression: only chunkstore pools compress; remove compression",
    ]


def test_duplicate_period_names(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE.replace(
            "        retention: 3d\n",
            "        retention: 3d\n      - {name: midnight, frequency: daily, hour: 1, retention: 1d}\n",
        ),
    )
    assert errs == [
        f"{f}:13:16: profiles.daily.periods[1].name: duplicate period name 'midnight' in this profile"
    ]


SCOPES = (
    BASE
    + """\
  db01:
    kind: vm
    volumes: [vms/db01]
    tags: [db]
system_snapshots:
  both: {type: partial, include_tags: [web], exclude_tags: [db], profile: daily}
  neither: {type: partial, profile: daily}
  fullinc: {type: full, include_tags: [web], profile: daily}
  fullexc: {type: full, exclude_tags: [web], profile: daily}
  fullq: {type: full, quiesce_tags: [db], profile: daily}
  partq: {type: partial, include_tags: [web], quiesce: true, profile: daily}
"""
)


def test_scope_rules(tmp_path: Path) -> None:
    f, errs = errors_of(tmp_path, SCOPES)
    assert errs == [
        f"{f}:23:46: system_snapshots.both.exclude_tags: include_tags and exclude_tags are mutually exclusive; "
        "keep one",
        f"{f}:24:3: system_snapshots.neither: a partial scope needs include_tags or exclude_tags (or use type: full)",
        f"{f}:25:25: system_snapshots.fullinc.include_tags: a full scope covers every resource; include_tags "
        "needs type: partial",
        f"{f}:26:25: system_snapshots.fullexc.exclude_tags: a full scope covers every resource; exclude_tags "
        "needs type: partial",
        f"{f}:27:23: system_snapshots.fullq.quiesce_tags: quiesce_tags are for partial scopes; a full scope "
        "quiesces all or nothing (quiesce: true)",
        f"{f}:28:56: system_snapshots.partq.quiesce: a partial scope quiesces the resources matched by "
        "quiesce_tags; remove quiesce",
    ]


def periods_config(*periods: str) -> str:
    return BASE.replace(
        "      - name: midnight\n        frequency: daily\n        retention: 3d\n",
        "".join(f"      - {p}\n" for p in periods),
    )


def test_period_rules(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        periods_config(
            "{name: feb30, frequency: yearly, month: 2, day_of_month: 30, retention: 1y}",  # 10
            "{name: feb29, frequency: yearly, month: 2, day_of_month: 29, retention: 1y}",  # 11: valid
            "{name: apr31, frequency: monthly, month: 4, day_of_month: 31, retention: 1y}",  # 12
            "{name: jan31, frequency: monthly, month: 1, day_of_month: 31, retention: 1y}",  # 13: valid
            "{name: noat, frequency: custom, retention: 1d}",  # 14
            "{name: at, frequency: daily, at: '2026-01-01T00:00', retention: 1d}",  # 15
            "{name: every, frequency: daily, every: 5m, retention: 1d}",  # 16
            "{name: noevery, frequency: interval, retention: 1d}",  # 17
            "{name: weekly, frequency: weekly, retention: 1d}",  # 18
            "{name: yearly, frequency: yearly, retention: 1d}",  # 19
            "{name: weeklyany, frequency: weekly, day_of_week: any, retention: 1d}",  # 20
            "{name: fast, frequency: interval, every: 5s, retention: 1d}",  # 21
            "{name: hourlyhour, frequency: hourly, hour: 3, retention: 1d}",  # 22
            "{name: filtered, frequency: daily, day_of_week: [sat, sun], month: 6, retention: 1d}",  # 23: valid
            "{name: customhour, frequency: custom, at: '2026-01-01T00:00', hour: 3, retention: 1d}",  # 24
            "{name: monthly, frequency: monthly, retention: 1d}",  # 25
        ),
    )
    assert errs == [
        f"{f}:10:66: profiles.daily.periods[0].day_of_month: February has no day 30: this period would never run",
        f"{f}:12:67: profiles.daily.periods[2].day_of_month: April has no day 31: this period would never run",
        f"{f}:14:9: profiles.daily.periods[4]: a custom period needs `at` (the instant to run, like "
        "'2026-12-24T18:00')",
        f"{f}:15:42: profiles.daily.periods[5].at: `at` is only for frequency: custom (this period is daily)",
        f"{f}:16:48: profiles.daily.periods[6].every: `every` is only for frequency: interval (this period is daily)",
        f"{f}:17:9: profiles.daily.periods[7]: an interval period needs `every` (like every: 15m)",
        f"{f}:18:9: profiles.daily.periods[8]: a weekly period needs a day: set day_of_week (like day_of_week: sun)",
        f"{f}:19:9: profiles.daily.periods[9]: a yearly period needs a date: set day_of_month (1-31)",
        f"{f}:19:9: profiles.daily.periods[9]: a yearly period needs a date: set month (1-12)",
        f"{f}:20:59: profiles.daily.periods[10].day_of_week: a weekly period needs a day: set day_of_week "
        "(like day_of_week: sun)",
        f"{f}:21:50: profiles.daily.periods[11].every: must be at least 10s",
        f"{f}:22:53: profiles.daily.periods[12].hour: hourly periods run every hour, so `hour` is not used; "
        "remove it",
        f"{f}:24:77: profiles.daily.periods[14].hour: not used by custom periods (`at` gives the instant); "
        "remove hour",
        f"{f}:25:9: profiles.daily.periods[15]: a monthly period needs a day: set day_of_month (1-31)",
    ]


def test_offsite_rules(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        BASE
        + """\
offsite:
  targets:
    dr:
      address: "dr.example.net:7443"
      insecure: true
      streams: 17
      windows: [{days: [mon, funday], start: "22:00", end: "25:00"}]
      items:
        - from: daily/midnight
        - from: weekly/sunday
        - from: daily/noon
        - from: daily/midnight
          priority: 10
        - from: nonsense
""",
    )
    assert errs == [
        f"{f}:23:16: offsite.targets.dr.streams: Input should be less than or equal to 16 (got 17)",
        f"{f}:24:18: offsite.targets.dr.windows[0].days: unknown day 'funday': use mon, tue, wed, thu, fri, sat, sun "
        "(or 'any')",
        f"{f}:24:60: offsite.targets.dr.windows[0].end: invalid time of day '25:00': hours 00-23, minutes 00-59",
        f"{f}:30:21: offsite.targets.dr.items[3].priority: Input should be less than or equal to 9 (got 10)",
        f"{f}:31:17: offsite.targets.dr.items[4].from: invalid reference 'nonsense': expected PROFILE/PERIOD like "
        "'daily/midnight'",
    ]
    # with the field errors fixed, the references are checked
    f, errs = errors_of(
        tmp_path,
        BASE
        + """\
offsite:
  targets:
    dr:
      address: "dr.example.net:7443"
      items:
        - from: daily/midnight
        - from: weekly/sunday
        - from: daily/noon
        - from: daily/midnight
""",
    )
    assert errs == [
        f"{f}:21:16: offsite.targets.dr.address: an offsite target needs tls (or insecure: true to allow plaintext)",
        f"{f}:24:17: offsite.targets.dr.items[1].from: unknown profile 'weekly' (known: daily)",
        f"{f}:25:17: offsite.targets.dr.items[2].from: profile 'daily' has no period 'noon' (known: midnight)",
        f"{f}:26:17: offsite.targets.dr.items[3].from: 'daily/midnight' is already listed for this target",
    ]


def test_all_errors_at_once(tmp_path: Path) -> None:
    """Three unrelated problems (a type error, a cross-reference, an unknown key): three lines."""
    f, errs = errors_of(
        tmp_path,
        BASE.replace("        frequency: daily\n", "        frequency: daily\n        hour: 25\n")
        .replace("    tags: [web]\n", "    tags: [web]\n    tenant: nobody\n")
        .replace("version: 1\n", "version: 1\nresorces: {}\n"),
    )
    assert errs == [
        f"{f}:2:1: resorces: unknown key 'resorces'; did you mean 'resources'?",
        f"{f}:13:15: profiles.daily.periods[0].hour: Input should be less than or equal to 23 (got 25)",
        f"{f}:20:13: resources.web01.tenant: unknown tenant 'nobody'",
    ]


def test_follow_up_errors_of_a_broken_entry_are_not_reported(tmp_path: Path) -> None:
    # the profile's only period is broken; the resource that names the profile is not blamed for it
    f, errs = errors_of(
        tmp_path,
        BASE.replace("retention: 3d", "retention: 3 days").replace(
            "    tags: [web]\n", "    tags: [web]\n    profile: daily\n"
        ),
    )
    assert len(errs) == 1 and errs[0].startswith(f"{f}:12:20: profiles.daily.periods[0].retention: ")
    # a broken node does not make every resource on it "unknown node"
    f, errs = errors_of(tmp_path, BASE.replace("embedded: true", "embedded: maybe"))
    assert errs == [f"{f}:4:15: nodes.local.embedded: expected true or false (got 'maybe')"]


def test_period_indexes_survive_a_dropped_period(tmp_path: Path) -> None:
    f, errs = errors_of(
        tmp_path,
        periods_config(
            "{name: a, frequency: daily, hour: 99, retention: 1d}",
            "{name: b, frequency: weekly, retention: 1d}",
        ),
    )
    assert errs == [
        f"{f}:10:43: profiles.daily.periods[0].hour: Input should be less than or equal to 23 (got 99)",
        f"{f}:11:9: profiles.daily.periods[1]: a weekly period needs a day: set day_of_week (like day_of_week: sun)",
    ]


def test_config_error_carries_every_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("hour", "x").replace("kind: vm", "kind: lxc"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == validate_file(path)
    assert str(info.value) == "\n".join(info.value.errors)


def test_config_module_is_pure() -> None:
    import ast

    for name in ("config.py", "config_loader.py", "settings.py", "durations.py"):
        tree = ast.parse((REPO / "reconciler" / name).read_text())
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for mod in modules:
                assert not mod.startswith("grpc"), (name, mod)
                for forbidden in ("agent", "daemon", "backends", "v1", "cli"):
                    assert not mod.startswith(f"reconciler.{forbidden}"), (name, mod)


class _AgentLike(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str
    pools: dict[str, PoolConfig]


def test_load_model_gives_the_same_positioned_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path, "listen: 1\npools:\n  p: {type: zfs, path: ./p}\n  q: {type: btrfs, path: ./q}\nlistne: x\n"
    )
    with pytest.raises(ConfigError) as info:
        load_model(path, _AgentLike)
    assert info.value.errors == [
        f"{path}:1:9: listen: expected a string (got 1)",
        f"{path}:3:13: pools.p.type: Input should be 'chunkstore' or 'btrfs' (got 'zfs')",
        f"{path}:5:1: listne: unknown key 'listne'; did you mean 'listen'?",
    ]
    path = write(tmp_path, "listen: 'unix:/run/a.sock'\npools:\n  q: {type: btrfs, path: ./q}\n")
    agent = load_model(path, _AgentLike)
    assert agent.pools["q"].path == tmp_path / "q"


def test_model_rejects_unknown_fields_programmatically() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        Config.model_validate({"bogus": 1})


# ---------------------------------------------------------------------------------------------
# fuzzing: nothing but ConfigError, and every line well-formed
# ---------------------------------------------------------------------------------------------


def _check_never_crashes(text: str, tmp_path: Path) -> None:
    try:
        config = parse_config(text, filename="fuzz.yaml", base_dir=tmp_path)
        desired_state(config)  # whatever validates must convert
    except ConfigError as e:
        assert e.errors
        for line in e.errors:
            assert LINE_RE.match(line), repr(line)
            assert "\n" not in line
            assert "internal error" not in line, line


_EXAMPLE_TEXT = EXAMPLE.read_text()
_FULL_TEXT = FULL

yaml_alphabet = st.sampled_from(
    list(":-[]{},#&*!|>'\"%@`?\n\t ") + ["  ", "\n  ", "- ", ": ", "~", "null", "1", "x"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_fuzz_random_text(tmp_path: Path, text: str) -> None:
    _check_never_crashes(text, tmp_path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(yaml_alphabet, max_size=80).map("".join))
def test_fuzz_yaml_punctuation(tmp_path: Path, text: str) -> None:
    _check_never_crashes(text, tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as e:
        for line in e.errors:
            assert LINE_RE.match(line), repr(line)
            assert "internal error" not in line, line


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from([_EXAMPLE_TEXT, _FULL_TEXT, BASE]))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        pos = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["delete", "insert", "replace", "dupline", "swap"]))
        if op == "delete":
            end = pos + draw(st.integers(1, 20))
            text = text[:pos] + text[end:]
        elif op == "insert":
            text = text[:pos] + draw(st.text(max_size=10) | yaml_alphabet) + text[pos:]
        elif op == "replace":
            text = text[:pos] + draw(yaml_alphabet) + text[pos + 1 :]
        elif op == "dupline":
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "".join(lines)
        else:
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_fuzz_mutated_configs(tmp_path: Path, text: str) -> None:
    _check_never_crashes(text, tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_fuzz_structured(tmp_path: Path, value: object) -> None:
    """Arbitrary JSON-like documents (JSON is YAML) placed under real section names."""
    import json

    for key in ("nodes", "profiles", "resources", "offsite", "system_snapshots"):
        _check_never_crashes(json.dumps({key: value}), tmp_path)


def test_a_name_ending_in_a_newline_is_refused_and_quoted_where_it_is_named(tmp_path: Path) -> None:
    """(Found by test_fuzz_structured: a regex ending in $ takes a trailing newline.)"""
    with pytest.raises(ConfigError) as err:
        parse_config('{"nodes": {"0\\n": null}}', filename="fuzz.yaml", base_dir=tmp_path)
    assert sorted(err.value.errors) == [
        'fuzz.yaml:1:12: nodes["0\\n"]: expected a mapping',
        "fuzz.yaml:1:12: nodes[\"0\\n\"]: invalid name '0\\n': use 1-63 letters, digits, '-' or '_', "
        "starting with a letter or digit",
    ]
    assert not domain.NAME_RE.match("vm1\n") and not domain.valid_volume_name("vms/vm1\n")


def test_plain_text_only_to_loopback_nodes_and_targets(tmp_path: Path) -> None:
    """An agent listens in plain text only on loopback (reconciler agent refuses otherwise), so a
    daemon config asking for plain text to another address is refused where it says so."""
    text = BASE.replace(
        "      main: {type: chunkstore, path: ./pool}\n",
        "      main: {type: chunkstore, path: ./pool}\n"
        "  far:\n    address: '10.0.0.9:7443'\n    insecure: true\n    pools: {p: {type: chunkstore, path: /srv/p}}\n"
        "  near:\n    address: '127.0.0.1:7443'\n    insecure: true\n    pools: {p: {type: chunkstore, path: /srv/q}}\n"
        "  sock:\n    address: 'unix:/run/a.sock'\n    insecure: true\n    pools: {p: {type: chunkstore, path: /srv/r}}\n",
    ).replace("    tags: [web]\n", "    tags: [web]\n    node: local\n")
    text += (
        "offsite:\n  targets:\n    dr:\n      address: 'dr.example.net:7443'\n      insecure: true\n"
        "      items: [{from: daily/midnight}]\n"
    )
    f, errs = errors_of(tmp_path, text)
    assert errs == [
        f"{f}:9:15: nodes.far.insecure: plain text is allowed only to a loopback address or a unix socket, "
        "not 10.0.0.9:7443; set tls",
        f"{f}:35:17: offsite.targets.dr.insecure: plain text is allowed only to a loopback address or a unix "
        "socket, not dr.example.net:7443; set tls",
    ]
